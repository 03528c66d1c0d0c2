//! The `AdaptiveLimit` service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use tower_llm_classify::{Classification, Classified, ErrorKind, LlmError, Phase};
use tower_service::Service;

use super::future::{LimitFuture, Waiting};
use super::limiter::Queued;
use super::permit::LimitPermit;
use crate::breaker::Breaker;
use crate::cache;
use crate::key::KeyBy;
use crate::registry::Registry;

/// Limits the calls in flight per key (provider/model by default), once
/// the key is overloaded, to a limit that shed answers turn on and lower
/// (when they are a share of a window's answers) and successes raise;
/// while the key is not, a call only counts itself in flight; a call over the limit waits for room,
/// within the configured queue, then is refused locally with an error of
/// kind overloaded, phase local: a fallback moves on from it, a retry
/// policy that leaves silence to the fallback (`retry_on_silence(false)`)
/// gives it up as `GiveUp::LocallyShed`, and a route's last target retries
/// it after the backoff (spending retry budget, as any retry).
///
/// It sits above the circuit (Retry → AdaptiveLimit → Circuit →
/// Classify): every attempt, retries included, needs room; an open
/// circuit's refusals pass through at once and teach the limit nothing;
/// and the breaker never sees the limit's own refusals.
///
/// # Clone
///
/// Clones, and services made by calling the layer again, share the keys'
/// limits (an `Arc` made when the layer was built).
#[derive(Clone, Debug)]
pub struct AdaptiveLimit<S> {
    inner: S,
    registry: Arc<Registry>,
    key_by: KeyBy,
}

impl<S> AdaptiveLimit<S> {
    pub(crate) fn new(inner: S, registry: Arc<Registry>, key_by: KeyBy) -> Self {
        AdaptiveLimit {
            inner,
            registry,
            key_by,
        }
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

/// The error of a call refused for want of room: overloaded, local (no
/// request was sent); retried after a backoff only where the retry policy
/// does not leave it to a fallback.
pub(crate) fn refusal(breaker: &Breaker, waited: Option<Duration>) -> LlmError {
    let limiter = breaker.limiter();
    let message = match waited {
        Some(waited) => format!(
            "{}: no room under its adaptive concurrency limit of {} within {:.1} s",
            breaker.key_str(),
            limiter.limit(),
            waited.as_secs_f64()
        ),
        None => format!(
            "{}: at its adaptive concurrency limit of {} with {} calls waiting",
            breaker.key_str(),
            limiter.limit(),
            limiter.waiting()
        ),
    };
    // Retryable as the target's own overload answer is: after a backoff
    // the queue may have room. A retry policy below a fallback that has
    // another target leaves it to the fallback instead
    // (`retry_on_silence(false)`: `GiveUp::LocallyShed`), and the fallback
    // moves on (overloaded routes to the next target).
    LlmError::new(
        Classification::new(ErrorKind::Overloaded)
            .with_phase(Phase::Local)
            .with_message(&message),
    )
}

impl<S, B, RB> Service<Request<B>> for AdaptiveLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<LlmError>,
    B: 'static,
    RB: Body,
    RB::Error: Classified,
{
    type Response = Response<super::LimitBody<RB>>;
    type Error = LlmError;
    type Future = LimitFuture<S, Request<B>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clock is read on every call, as the circuit reads it: the
        // thread's cache notes the key's use once a second, so that a key
        // in use never looks idle to eviction (and starts its limit over).
        // Reading it one call in 64 let a key called less often than that
        // per idle period be evicted while in use.
        let registry = &self.registry;
        let key_by = &self.key_by;
        let now = tokio::time::Instant::now();
        let breaker = crate::service::with_key_input(&mut request, |input| {
            cache::breaker_for(registry, key_by, input, now)
        });
        let limiter = breaker.limiter();
        if limiter.try_acquire() {
            return LimitFuture::called(self.inner.call(request), LimitPermit::new(breaker));
        }
        let config = &registry.config.adaptive_limit;
        match limiter.enqueue(config) {
            Queued::Admitted => {
                LimitFuture::called(self.inner.call(request), LimitPermit::new(breaker))
            }
            Queued::Full => LimitFuture::rejected(refusal(&breaker, None)),
            Queued::Waiting(waiter) => {
                LimitFuture::waiting(Waiting::new(breaker, waiter, &mut self.inner, request))
            }
        }
    }
}
