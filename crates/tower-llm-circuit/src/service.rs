//! The `Circuit` service.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_llm_classify::hint::{Hint, HintSource};
use tower_llm_classify::{
    AttemptEnd, BoxError, Classification, Classified, ErrorKind, LlmError, Phase, RequestMeta,
};
use tower_service::Service;

use crate::body::CircuitBody;
use crate::breaker::Rejection;
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

/// The breaker this thread used last, so that a run of calls on one key
/// skips the hashing and the shard lock.
struct LastUsed {
    registry: u64,
    evictions: u64,
    key: String,
    breaker: Arc<crate::breaker::Breaker>,
}

thread_local! {
    /// The key of the current call, written without allocating.
    static KEY: RefCell<String> = RefCell::new(String::with_capacity(64));
    static LAST: RefCell<Option<LastUsed>> = const { RefCell::new(None) };
}

/// The breaker of `key`: this thread's last one if it is the same key of
/// the same registry and nothing was evicted since, else the registry's.
fn breaker_for(
    registry: &Arc<Registry>,
    key: &str,
    now: std::time::Duration,
) -> Arc<crate::breaker::Breaker> {
    let id = registry.id;
    let evictions = registry
        .evictions
        .load(std::sync::atomic::Ordering::Acquire);
    LAST.with_borrow_mut(|last| {
        if let Some(last) = last
            && last.registry == id
            && last.evictions == evictions
            && last.key == key
        {
            return Arc::clone(&last.breaker);
        }
        let breaker = registry.get(key, now);
        *last = Some(LastUsed {
            registry: id,
            evictions,
            key: key.to_owned(),
            breaker: Arc::clone(&breaker),
        });
        breaker
    })
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
    S::Error: Into<BoxError>,
    B: 'static,
    RB: Body,
    RB::Error: Classified,
{
    type Response = Response<CircuitBody<RB>>;
    type Error = LlmError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx).map_err(LlmError::from_source)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The one clock read of a closed, healthy call.
        let now = self.registry.now();
        let mut stream_kind = None;
        let streaming;
        let breaker = {
            // Computed only when no outer layer put it there: the usual
            // case then costs two lookups, not `get_or_insert`'s two and
            // a third (its borrow holds the request mutably, and the key
            // reads the URI and headers too).
            if request.extensions().get::<RequestMeta>().is_none() {
                RequestMeta::get_or_insert(&mut request);
            }
            let meta = request.extensions().get::<RequestMeta>();
            let fallback;
            let meta = match meta {
                Some(meta) => meta,
                None => {
                    fallback = RequestMeta::from_request(request.uri(), request.headers(), None);
                    &fallback
                }
            };
            streaming = meta.stream;
            if self.registry.config.slow_first_content.is_some() {
                stream_kind = Some((meta.dialect, meta.provider));
            }
            let input = KeyInput {
                meta,
                uri: request.uri(),
                headers: request.headers(),
            };
            KEY.with_borrow_mut(|key| {
                self.key_by.write(&input, key);
                breaker_for(&self.registry, key, now)
            })
        };
        match breaker.acquire(now) {
            Ok(permit) => {
                let guard = PermitGuard {
                    breaker,
                    permit,
                    start: now,
                    done: false,
                    // Put there by a retry layer above that may end the
                    // attempt itself (only when it has a time limit).
                    end: request.extensions_mut().remove::<AttemptEnd>(),
                    streaming,
                    answered: false,
                    slow_start: false,
                };
                ResponseFuture::called(self.inner.call(request), guard, stream_kind)
            }
            Err(rejection) => {
                ResponseFuture::rejected(rejection_error(breaker_key(&breaker), rejection))
            }
        }
    }
}

fn breaker_key(breaker: &crate::breaker::Breaker) -> &str {
    breaker.key_str()
}
