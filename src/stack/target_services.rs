//! A target's two services, built once its layers are known: one for
//! where a route goes on after it (a silent attempt, or one told to come
//! back later than [`MOVE_ON_HINT`], is left to the next target) and one
//! for where it is the route's last; both share its breaker and its retry
//! budget.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower::Layer;
use tower_llm_circuit::{CircuitHandle, CircuitLayer};
use tower_llm_classify::{ClassifyLayer, LlmError};
use tower_llm_fallback::Target;
use tower_llm_retry::{ReplayBody, RetryLayer, RetryPolicy};
use tower_service::Service;

use super::TargetService;
use super::attempt_span;

/// The layers every target is built with.
pub(super) struct Layers {
    pub(super) retry: RetryPolicy,
    pub(super) circuit: CircuitLayer,
    pub(super) adaptive_limit: bool,
    pub(super) classify: ClassifyLayer,
}

/// A target's stack twice over, sharing its breaker and its retry budget:
/// where a route goes on after it, and where it is the route's last.
#[derive(Clone)]
pub(super) struct TargetServices {
    /// Leaves a silent attempt (or one told to come back later than
    /// [`MOVE_ON_HINT`]) to the next target.
    pub(super) moves_on: TargetService,
    /// Retries a silent attempt as the policy says.
    pub(super) last: TargetService,
}

/// A target's settings, and how to make its services once the layers are
/// known.
pub(super) type PendingTarget = (
    Target<()>,
    Box<dyn FnOnce(&Layers, Arc<str>) -> TargetServices + Send>,
);

/// A target's two services over `below` (its Circuit → Classify → client,
/// with or without the adaptive limit): each attempt in a span
/// ([`attempt_span`]), Retry on top, the body erased.
pub(super) fn target_services<S, R>(
    retry: &RetryPolicy,
    target: Arc<str>,
    circuits: CircuitHandle,
    below: S,
) -> TargetServices
where
    S: Service<Request<ReplayBody>, Response = Response<R>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<LlmError>,
    R: Body<Data = Bytes, Error = LlmError> + Send + 'static,
{
    let below = attempt_span::AttemptSpan::new(below, target, circuits);
    let erased = |policy: RetryPolicy| {
        TargetService::new(tower::util::MapResponse::new(
            RetryLayer::new(policy).layer(below.clone()),
            |response: Response<_>| {
                // Classify's body errors are `LlmError`s already: erased as
                // they are, no conversion.
                response.map(|body: tower_llm_retry::RetryBody<R>| body.boxed_unsync())
            },
        ))
    };
    // One budget for the target, shared by both.
    let last = retry.with_own_budget();
    let moves_on = last
        .to_builder()
        .retry_on_silence(false)
        .max_hint(last.max_hint().min(MOVE_ON_HINT))
        .build()
        .unwrap_or_else(|_| last.clone());
    TargetServices {
        moves_on: erased(moves_on),
        last: erased(last),
    }
}

/// The longest server hint a target with somewhere else to go waits out
/// before retrying itself: a longer `retry-after` (a rate limit, an
/// overload, a breaker's time to its probe) sends the request to the
/// route's next target at once, and the breaker keeps the next requests
/// off the target until the hint has passed. A wait this short is within
/// an ordinary backoff. LiteLLM's router does the same: it sleeps before
/// a retry only when no other deployment is healthy
/// (`litellm/router.py`, `_time_to_sleep_before_retry`).
const MOVE_ON_HINT: Duration = Duration::from_secs(1);
