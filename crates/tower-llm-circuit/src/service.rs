//! The `Circuit` service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_llm_classify::hint::{Hint, HintSource};
use tower_llm_classify::{
    AttemptEnd, Classification, Classified, ErrorKind, LlmError, Phase, RequestMeta,
};
use tower_service::Service;

use crate::body::CircuitBody;
use crate::breaker::Rejection;
use crate::cache;
use crate::future::{PermitGuard, ResponseFuture};
use crate::key::{KeyBy, KeyInput};
use crate::registry::Registry;

/// Stops sending requests to a key (provider/model by default) that keeps
/// failing, probes it, and lets traffic back when it recovers; fails fast
/// while a key cools down after a rate limit.
///
/// It sits between Retry and Classify, as the facade's stack puts it:
/// retry then stops at once on an open circuit, and the outcome of every call —
/// streams included, at the end of their body, and attempts the retry
/// layer ends itself (see the crate docs) — reaches the breaker.
///
/// # Clone
///
/// Clones, and services made by calling the layer again, share the
/// breakers (an `Arc` made when the layer was built).
#[derive(Clone, Debug)]
pub struct Circuit<S> {
    inner: S,
    registry: Arc<Registry>,
    key_by: KeyBy,
}

impl<S> Circuit<S> {
    pub(crate) fn new(inner: S, registry: Arc<Registry>, key_by: KeyBy) -> Self {
        Circuit {
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

    /// A handle on the breakers (force open, reset, snapshot).
    pub fn handle(&self) -> crate::CircuitHandle {
        crate::CircuitHandle::new(Arc::clone(&self.registry))
    }
}

/// The error of a call refused by its breaker.
fn rejection_error(key: &str, rejection: Rejection) -> LlmError {
    let (kind, wait, message) = match rejection {
        Rejection::Open(wait) => (
            ErrorKind::CircuitOpen,
            wait,
            match wait {
                Some(wait) => format!(
                    "circuit open for {key}; next probe in {:.1} s",
                    wait.as_secs_f64()
                ),
                None => format!("circuit forced open for {key}"),
            },
        ),
        Rejection::CoolingDown(wait) => (
            ErrorKind::RateLimited,
            Some(wait),
            format!(
                "{key} is cooling down after a rate limit; {:.1} s left",
                wait.as_secs_f64()
            ),
        ),
    };
    let hint = wait.map(|delay| Hint {
        delay: delay.min(tower_llm_classify::hint::MAX_HINT),
        source: HintSource::Body,
    });
    let mut c = Classification::new(kind)
        .with_phase(Phase::Local)
        .with_message(&message)
        .with_hint(hint);
    // A cooldown is a rate limit that waiting fixes; an open circuit is
    // not retried here (a fallback moves on).
    if kind == ErrorKind::RateLimited {
        c = c.with_retryable(true).with_phase(Phase::BeforeHeaders);
    }
    LlmError::new(c)
}

impl<S, B, RB> Service<Request<B>> for Circuit<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<LlmError>,
    B: 'static,
    RB: Body,
    RB::Error: Classified,
{
    type Response = Response<CircuitBody<RB>>;
    type Error = LlmError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The one clock read of a call, turned into the registry's time
        // only when something needs it.
        let clock = Instant::now();
        let registry = &self.registry;
        let (breaker, streaming, stream_kind, tokens) = with_key_input(&mut request, |input| {
            let stream_kind = registry
                .config
                .slow_first_content
                .map(|_| (input.meta.dialect, input.meta.provider));
            let breaker = cache::breaker_for(registry, &self.key_by, input, clock);
            let tokens = input.meta.estimated_tokens();
            (breaker, input.meta.stream, stream_kind, tokens)
        });
        // A call its key's rate limits would refuse is not sent (a call
        // refused by the breaker below hands its reservation back).
        let pace = match registry.pacing.admit(breaker_key(&breaker), tokens, || {
            registry.since_start(clock)
        }) {
            Ok(pace) => pace,
            Err(error) => return ResponseFuture::rejected(error),
        };
        // A closed key needs no time, unless its outcomes do.
        let untimed = if registry.timed {
            None
        } else {
            breaker.admit_untimed()
        };
        let admitted = match untimed {
            Some(permit) => Ok((permit, Duration::ZERO)),
            None => {
                let now = registry.since_start(clock);
                breaker
                    .acquire_for(now, probing_token(&breaker, &request))
                    .map(|permit| (permit, now))
            }
        };
        match admitted {
            Ok((permit, start)) => {
                let token = if permit.is_probe() {
                    request_token(&request)
                } else {
                    None
                };
                let guard = PermitGuard {
                    breaker,
                    permit,
                    start,
                    done: false,
                    // Put there by a retry layer above that may end the
                    // attempt itself (only when it has a time limit).
                    end: request.extensions_mut().remove::<AttemptEnd>(),
                    streaming,
                    answered: false,
                    slow_start: false,
                    token,
                };
                ResponseFuture::called(self.inner.call(request), guard, stream_kind, pace)
            }
            Err(rejection) => {
                ResponseFuture::rejected(rejection_error(breaker_key(&breaker), rejection))
            }
        }
    }
}

/// Calls `f` with what a key reads of the request. The metadata is the one
/// an outer layer left (one lookup); else it is computed and left in the
/// request, so that the layers below do not compute it again.
pub(crate) fn with_key_input<B: 'static, R>(
    request: &mut Request<B>,
    f: impl FnOnce(&KeyInput<'_>) -> R,
) -> R {
    if let Some(meta) = request.extensions().get::<RequestMeta>() {
        return f(&KeyInput {
            meta,
            uri: request.uri(),
            headers: request.headers(),
        });
    }
    RequestMeta::get_or_insert(request);
    let computed;
    let meta = match request.extensions().get::<RequestMeta>() {
        Some(meta) => meta,
        None => {
            computed = RequestMeta::from_request(request.uri(), request.headers(), None);
            &computed
        }
    };
    f(&KeyInput {
        meta,
        uri: request.uri(),
        headers: request.headers(),
    })
}

/// The request's [`RequestToken`](crate::RequestToken), read only when the
/// key may be probed (open or half-open): a closed key never asks.
fn probing_token<B>(breaker: &crate::breaker::Breaker, request: &Request<B>) -> Option<u64> {
    match breaker.state() {
        crate::CircuitState::Open | crate::CircuitState::HalfOpen => request_token(request),
        _ => None,
    }
}

fn request_token<B>(request: &Request<B>) -> Option<u64> {
    crate::RequestToken::of(request).map(crate::RequestToken::get)
}

fn breaker_key(breaker: &crate::breaker::Breaker) -> &str {
    breaker.key_str()
}
