//! `RetryLayer`.

use std::sync::Arc;

use tower_layer::Layer;

use crate::policy::RetryPolicy;
use crate::service::{Retry, Shared};

/// Applies [`Retry`] to a service.
///
/// # Clone
///
/// Cheap: an `Arc`. Every service it makes shares the policy and the
/// retry budget.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// A layer retrying with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer {
            shared: Arc::new(Shared::new(policy)),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }
}

impl Default for RetryLayer {
    /// [`RetryPolicy::sdk_default`].
    fn default() -> Self {
        RetryLayer::new(RetryPolicy::sdk_default())
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::from_shared(inner, Arc::clone(&self.shared))
    }
}
