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

use crate::adaptive::{LimitTicket, Sample};
use crate::body::CircuitBody;
use crate::breaker::{Breaker, Rejection};
use crate::cache;
use crate::future::{PermitGuard, ResponseFuture, StreamKind};
use crate::key::{KeyBy, KeyInput};
use crate::pacing::Pace;
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
    // not retried here (a fallback moves on). Either is refused before
    // the call leaves the process (`Phase::Local`): a retry of it takes
    // nothing from the retry budget.
    if kind == ErrorKind::RateLimited {
        c = c.with_retryable(true);
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
        let found = self.find(&mut request, None);
        let admission = self.admit(&mut request, found, None);
        self.dispatch(request, admission)
    }
}

/// Whether a call goes, and what its response future then needs.
pub(crate) enum Admission {
    Called {
        guard: PermitGuard,
        stream_kind: Option<StreamKind>,
        pace: Pace,
    },
    Refused(LlmError),
}

/// What a call's request says for the circuit: its key's breaker, and
/// what its outcome will need.
pub(crate) struct Found {
    pub(crate) breaker: Arc<Breaker>,
    /// The call's one clock read, turned into the registry's time only
    /// when something needs it.
    clock: Instant,
    streaming: bool,
    stream_kind: Option<StreamKind>,
    tokens: Option<u64>,
}

impl<S> Circuit<S> {
    /// The request's key's breaker (`known`, when the caller holds it
    /// already) and what the call's outcome will need.
    // Always inlined (here and in `LimitedCircuit`): outlined, the request
    // and the key lookup's closure cost more than the call's own work.
    #[inline(always)]
    pub(crate) fn find<B: 'static>(
        &self,
        request: &mut Request<B>,
        known: Option<Arc<Breaker>>,
    ) -> Found {
        let registry = &self.registry;
        // Read for every call, also for a closed key: the lookup notes the
        // key's use with it (at most once a second), so that a key in use,
        // however rarely, is never evicted as idle. (The untimed lookup the
        // standalone limit uses notes it once in 64 hits; a circuit must not
        // rely on that.)
        let clock = Instant::now();
        with_key_input(request, |input| {
            let stream_kind = registry
                .config
                .slow_first_content
                .map(|_| (input.meta.dialect, input.meta.provider));
            let breaker =
                known.unwrap_or_else(|| cache::breaker_for(registry, &self.key_by, input, clock));
            Found {
                breaker,
                clock,
                streaming: input.meta.stream,
                stream_kind,
                tokens: input.meta.estimated_tokens(),
            }
        })
    }

    /// Admits the call (pacing, then the breaker) or refuses it;
    /// [`dispatch`](Self::dispatch) then calls. `limit` is the room the call holds under the key's adaptive
    /// limit when the limit is part of this layer ([`LimitedCircuit`]): it
    /// rides with the call's permit to the outcome, and a call this layer
    /// refuses frees it at once (its own refusals teach the limit nothing,
    /// as they teach the standalone layer above nothing).
    ///
    /// [`LimitedCircuit`]: crate::LimitedCircuit
    #[inline(always)]
    pub(crate) fn admit<B>(
        &self,
        request: &mut Request<B>,
        found: Found,
        limit: Option<LimitTicket>,
    ) -> Admission {
        let Found {
            breaker,
            clock,
            streaming,
            stream_kind,
            tokens,
        } = found;
        let registry = &self.registry;
        let refused = |breaker: &Breaker, limit: Option<LimitTicket>, error: LlmError| {
            if let Some(ticket) = limit {
                ticket.release(breaker, Sample::Nothing);
            }
            Admission::Refused(error)
        };
        // A call its key's rate limits would refuse is not sent (a call
        // refused by the breaker below hands its reservation back).
        let now = || registry.since_start(clock);
        let pace = match registry.pacing.admit(breaker_key(&breaker), tokens, now) {
            Ok(pace) => pace,
            Err(error) => return refused(&breaker, limit, error),
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
                let now = now();
                breaker
                    .acquire_for(now, probing_token(&breaker, request))
                    .map(|permit| (permit, now))
            }
        };
        match admitted {
            Ok((permit, start)) => {
                let token = if permit.is_probe() {
                    request_token(request)
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
                    limit,
                };
                Admission::Called {
                    guard,
                    stream_kind,
                    pace,
                }
            }
            Err(rejection) => {
                let error = rejection_error(breaker_key(&breaker), rejection);
                refused(&breaker, limit, error)
            }
        }
    }

    /// Calls the inner service with an admitted call, or refuses it.
    #[inline(always)]
    pub(crate) fn dispatch<B, RB>(
        &mut self,
        request: Request<B>,
        admission: Admission,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<B>, Response = Response<RB>>,
    {
        match admission {
            Admission::Called {
                guard,
                stream_kind,
                pace,
            } => ResponseFuture::called(self.inner.call(request), guard, stream_kind, pace),
            Admission::Refused(error) => ResponseFuture::rejected(error),
        }
    }
}

/// Calls `f` with what a key reads of the request. The metadata is the one
/// an outer layer left (one lookup); else it is computed and left in the
/// request, so that the layers below do not compute it again.
#[inline(always)]
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
