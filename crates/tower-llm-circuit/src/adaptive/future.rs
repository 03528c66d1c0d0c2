//! The response future: waits for room, then calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_llm_classify::{Classification, Classified, ErrorKind, LlmError};
use tower_service::Service;

use super::body::LimitBody;
use super::limiter::{Sample, Waiter};
use super::permit::LimitPermit;
use crate::breaker::Breaker;

pin_project! {
    /// The future of [`AdaptiveLimit`](crate::AdaptiveLimit): while the
    /// key is at its limit, it waits for room (holding the request and a
    /// ready clone of the inner service), then calls.
    pub struct LimitFuture<S, R, F> {
        #[pin]
        state: State<S, R, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R, F> {
        Waiting { wait: Waiting<S, R> },
        Called {
            #[pin]
            future: F,
            permit: Option<LimitPermit>,
        },
        Rejected { error: Option<LlmError> },
    }
}

/// A call waiting for room. Dropped while it waits, it leaves the queue;
/// dropped after room was handed to it, it frees that room.
pub(crate) struct Waiting<S, R> {
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) waiter: Option<Arc<Waiter>>,
    pub(crate) service: Option<S>,
    pub(crate) request: Option<R>,
    pub(crate) timer: Pin<Box<Sleep>>,
}

impl<S: Clone, R> Waiting<S, R> {
    /// `request` waits for room under `breaker`'s limit in `waiter`'s
    /// place, at most the configured queue wait. The ready `service` goes
    /// with it; the caller's gets a clone, to be made ready before its
    /// next call.
    pub(crate) fn new(
        breaker: Arc<Breaker>,
        waiter: Arc<Waiter>,
        service: &mut S,
        request: R,
    ) -> Self {
        let clone = service.clone();
        let ready = std::mem::replace(service, clone);
        // A wait too long for the clock is a year.
        let clock = tokio::time::Instant::now();
        let wait = breaker
            .registry_limit()
            .max_queue_wait
            .min(Duration::from_secs(86_400 * 365));
        let timer = Box::pin(tokio::time::sleep_until(
            clock.checked_add(wait).unwrap_or(clock),
        ));
        Waiting {
            breaker,
            waiter: Some(waiter),
            service: Some(ready),
            request: Some(request),
            timer,
        }
    }
}

impl<S, R> Drop for Waiting<S, R> {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            let limiter = self.breaker.limiter();
            if !limiter.leave(&waiter) {
                let window = limiter.window();
                limiter.release(window, Sample::Nothing, self.breaker.registry_limit());
            }
        }
    }
}

impl<S, R, F> LimitFuture<S, R, F> {
    #[inline]
    pub(crate) fn called(future: F, permit: LimitPermit) -> Self {
        LimitFuture {
            state: State::Called {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn waiting(wait: Waiting<S, R>) -> Self {
        LimitFuture {
            state: State::Waiting { wait },
        }
    }

    pub(crate) fn rejected(error: LlmError) -> Self {
        LimitFuture {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<S, R, F> std::fmt::Debug for LimitFuture<S, R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitFuture").finish_non_exhaustive()
    }
}

impl<S, R, F, RB> Future for LimitFuture<S, R, F>
where
    S: Service<R, Response = Response<RB>, Future = F>,
    F: Future<Output = Result<Response<RB>, S::Error>>,
    S::Error: Into<LlmError>,
    RB: Body,
    RB::Error: Classified,
{
    type Output = Result<Response<LimitBody<RB>>, LlmError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Waiting { wait } => {
                    let next = ready!(poll_room(wait, cx));
                    this.state.set(next);
                }
                StateProj::Called { future, permit } => {
                    return Poll::Ready(answered(ready!(future.poll(cx)), permit.take()));
                }
                StateProj::Rejected { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(polled_after_completion)));
                }
            }
        }
    }
}

/// Waits for room: the call once it is handed room, a refusal once the
/// wait runs out first.
fn poll_room<S, R, F>(wait: &mut Waiting<S, R>, cx: &mut Context<'_>) -> Poll<State<S, R, F>>
where
    S: Service<R, Future = F>,
{
    Poll::Ready(match ready!(poll_grant(wait, cx)) {
        Ok((mut service, request)) => {
            // Room is ours from here: the permit frees it.
            let permit = LimitPermit::new(Arc::clone(&wait.breaker));
            State::Called {
                future: service.call(request),
                permit: Some(permit),
            }
        }
        Err(error) => State::Rejected { error: Some(error) },
    })
}

/// Waits for room: the ready service and the request once room is handed
/// over (the caller then holds that room and must take a ticket for it at
/// once), or the refusal once the wait runs out first.
pub(crate) fn poll_grant<S, R>(
    wait: &mut Waiting<S, R>,
    cx: &mut Context<'_>,
) -> Poll<Result<(S, R), LlmError>> {
    let Some(waiter) = wait.waiter.as_ref() else {
        return Poll::Ready(Err(polled_after_completion()));
    };
    if !waiter.poll_granted(cx.waker()) {
        ready!(wait.timer.as_mut().poll(cx));
        let limiter = wait.breaker.limiter();
        if let Some(waiter) = wait.waiter.take()
            && limiter.leave(&waiter)
        {
            let waited = wait.breaker.registry_limit().max_queue_wait;
            return Poll::Ready(Err(super::service::refusal(&wait.breaker, Some(waited))));
        }
        // Room was handed over as the wait ran out: take it.
    }
    wait.waiter = None;
    match (wait.service.take(), wait.request.take()) {
        (Some(service), Some(request)) => Poll::Ready(Ok((service, request))),
        // Not reached (taken once); the room goes back.
        _ => {
            drop(LimitPermit::new(Arc::clone(&wait.breaker)));
            Poll::Ready(Err(polled_after_completion()))
        }
    }
}

pub(crate) fn polled_after_completion() -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::Unknown)
            .with_message("adaptive limit future polled after completion"),
    )
}

/// The call's answer: an error or an error status tells the limit at
/// once; a response keeps its room until its body ends.
fn answered<RB, E>(
    result: Result<Response<RB>, E>,
    mut permit: Option<LimitPermit>,
) -> Result<Response<LimitBody<RB>>, LlmError>
where
    RB: Body,
    E: Into<LlmError>,
{
    match result {
        Ok(response) => {
            let (head, body) = response.into_parts();
            if let Some(p) = permit.as_mut() {
                p.head();
            }
            // An error status that reached us as a response (no Classify
            // below): judged by its status and headers.
            if head.status.is_server_error()
                && let Some(p) = permit.take()
            {
                p.failed(&tower_llm_classify::classify_response(
                    tower_llm_classify::Provider::Unknown,
                    head.status,
                    &head.headers,
                    b"",
                    std::time::SystemTime::now(),
                ));
            }
            if body.is_end_stream()
                && let Some(p) = permit.take()
            {
                p.succeeded();
            }
            Ok(Response::from_parts(head, LimitBody::new(body, permit)))
        }
        Err(error) => {
            let error: LlmError = error.into();
            if let Some(p) = permit.take() {
                p.failed(error.classification());
            }
            Err(error)
        }
    }
}
