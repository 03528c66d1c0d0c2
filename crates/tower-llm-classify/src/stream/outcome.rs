//! [`OutcomeHook`]: how the layers outside learn how a response really ended.

use std::fmt;
use std::sync::Arc;

use crate::Classification;

/// How a call ended, reported once per call to the [`OutcomeHook`] of the
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamOutcome<'a> {
    /// The response (and its whole body) arrived and was sound.
    Completed,
    /// The call failed: an error status, a transport error, an in-band error
    /// event, a stream that ended early or stalled.
    Failed(&'a Classification),
    /// The caller dropped the response body before its end. Nothing is known
    /// about the target's health.
    Abandoned {
        /// Whether content had reached the caller.
        content_seen: bool,
    },
}

/// A callback for [`StreamOutcome`]s; closures implement it.
pub trait OnOutcome: Send + Sync + 'static {
    /// Called exactly once per call.
    fn on_outcome(&self, outcome: StreamOutcome<'_>);
}

impl<F> OnOutcome for F
where
    F: Fn(StreamOutcome<'_>) + Send + Sync + 'static,
{
    fn on_outcome(&self, outcome: StreamOutcome<'_>) {
        self(outcome)
    }
}

/// A request extension through which an outer layer (the circuit breaker)
/// learns the final outcome of a call, including the end of a streaming body
/// long after the response head was returned.
///
/// Insert it into the request's extensions before calling the
/// [`Classify`](crate::Classify) service; it is called exactly once: at once
/// for an error, at the end of the body for a success (completed, failed or
/// abandoned). To add a hook to a request that already has one, wrap it with
/// [`OutcomeHook::then`].
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use tower_llm_classify::stream::{OutcomeHook, StreamOutcome};
///
/// let failures = Arc::new(AtomicUsize::new(0));
/// let counter = failures.clone();
/// let hook = OutcomeHook::new(move |outcome: StreamOutcome<'_>| {
///     if let StreamOutcome::Failed(_) = outcome {
///         counter.fetch_add(1, Ordering::Relaxed);
///     }
/// });
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(hook);
/// ```
#[derive(Clone)]
pub struct OutcomeHook(Arc<dyn OnOutcome>);

impl OutcomeHook {
    /// A hook calling `callback`.
    pub fn new(callback: impl OnOutcome) -> Self {
        OutcomeHook(Arc::new(callback))
    }

    /// A hook from a shared callback (no allocation).
    pub fn from_arc(callback: Arc<dyn OnOutcome>) -> Self {
        OutcomeHook(callback)
    }

    /// A hook that calls `self`, then `next`.
    pub fn then(self, next: OutcomeHook) -> Self {
        OutcomeHook::new(move |outcome: StreamOutcome<'_>| {
            self.report(outcome);
            next.report(outcome);
        })
    }

    /// Reports an outcome.
    pub fn report(&self, outcome: StreamOutcome<'_>) {
        self.0.on_outcome(outcome);
    }
}

impl fmt::Debug for OutcomeHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutcomeHook")
    }
}

/// Reports exactly once: whatever is reported first, or `Abandoned` on drop.
#[derive(Debug, Default)]
pub(crate) struct OutcomeGuard {
    hook: Option<OutcomeHook>,
    content_seen: bool,
}

impl OutcomeGuard {
    pub(crate) fn new(hook: Option<OutcomeHook>) -> Self {
        OutcomeGuard {
            hook,
            content_seen: false,
        }
    }

    pub(crate) fn content_seen(&mut self) {
        self.content_seen = true;
    }

    pub(crate) fn report(&mut self, outcome: StreamOutcome<'_>) {
        if let Some(hook) = self.hook.take() {
            hook.report(outcome);
        }
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        let content_seen = self.content_seen;
        self.report(StreamOutcome::Abandoned { content_seen });
    }
}
