//! The `Retry` service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_llm_classify::{BoxError, LlmError};
use tower_service::Service;

use crate::body::{ContentProgress, ReplayBody, RetryBody};
use crate::future::ResponseFuture;
use crate::policy::RetryPolicy;

/// Retries failed calls to an LLM API as their classification allows.
///
/// The inner service receives `http::Request<ReplayBody>` (the caller's
/// body read once, replayed per attempt) and must return its failures as
/// errors that carry a classification: put [`Classify`] below it (the
/// stack order of DESIGN.md is Retry → Circuit → Classify → client).
///
/// # Clone
///
/// Clones share the policy and the retry budget (both in an `Arc` made when
/// the layer was built); `RetryLayer::layer` called again (axum does) also
/// shares them.
///
/// [`Classify`]: tower_llm_classify::Classify
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What every clone shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: RetryPolicy,
    seed: u64,
    draws: AtomicU64,
}

impl Shared {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        let seed = policy.seed.unwrap_or_else(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x0072_6574_7279_u64)
        });
        Shared {
            policy,
            seed,
            draws: AtomicU64::new(0),
        }
    }

    /// A uniform draw in `[0, 1)`: SplitMix64 over a shared counter, so a
    /// seeded policy gives the same sequence of delays run after run.
    pub(crate) fn draw(&self) -> f64 {
        let mut z = self.seed.wrapping_add(
            self.draws
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<S> Retry<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Retry {
            inner,
            shared: Arc::new(Shared::new(policy)),
        }
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Retry { inner, shared }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
    R: Body<Data = Bytes> + ContentProgress + Unpin,
    R::Error: Into<BoxError>,
{
    type Response = Response<RetryBody<R>>;
    type Error = LlmError;
    type Future = ResponseFuture<S, B, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(LlmError::from_source)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service makes the first attempt; the clone left behind
        // is polled for readiness again before the next call (tower's
        // `Retry` does the same).
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(ready, Arc::clone(&self.shared), request)
    }
}
