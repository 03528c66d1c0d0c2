//! The response future: collect the body, call, decide, sleep, call again.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, header};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_llm_classify::{BoxError, Classification, ErrorKind, LlmError, Phase, RequestMeta};
use tower_service::Service;

use crate::body::{ContentProgress, ReplayBody, RetryBody};
use crate::policy::{Decision, GiveUp};
use crate::report;
use crate::service::Shared;

pin_project! {
    /// The future of [`Retry`](crate::Retry): a named state machine, no
    /// boxing. Dropping it drops the attempt in flight or the sleep; no
    /// task is spawned and no budget token is held across an await.
    pub struct ResponseFuture<S, B, R>
    where
        S: Service<Request<ReplayBody>>,
    {
        #[pin]
        state: State<S::Future, B, R>,
        // Boxed, like the sleep between attempts: only a call with a
        // timeout or a retry pays for a timer; the happy path stays small.
        timer: Option<Pin<Box<Sleep>>>,
        service: S,
        shared: Arc<Shared>,
        template: Option<Request<ReplayBody>>,
        attempts: u32,
        slept: Duration,
        previous_delay: Duration,
        deadline: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, R> {
        Collecting { #[pin] body: B, first: Option<Bytes>, rest: Option<BytesMut> },
        Ready,
        Calling { #[pin] future: F },
        // Boxed: only streams pay for holding a response back.
        Guarding { guard: Box<Guard<R>> },
        Sleeping { sleep: Pin<Box<Sleep>> },
        Done,
    }
}

/// A streamed response held back until its first content.
struct Guard<R> {
    head: Option<http::response::Parts>,
    body: Option<R>,
    read_ahead: VecDeque<Frame<Bytes>>,
    read_ahead_bytes: usize,
}

/// The most a guarded stream may send before its first content (pings,
/// comments, role chunks) before it is handed over unguarded.
const GUARD_READ_AHEAD_LIMIT: usize = 64 * 1024;

impl<S, B, R> ResponseFuture<S, B, R>
where
    S: Service<Request<ReplayBody>>,
{
    pub(crate) fn new(service: S, shared: Arc<Shared>, request: Request<B>) -> Self {
        let (parts, body) = request.into_parts();
        let deadline = shared
            .policy
            .deadline
            .and_then(|d| Instant::now().checked_add(d));
        ResponseFuture {
            state: State::Collecting {
                body,
                first: None,
                rest: None,
            },
            timer: None,
            service,
            shared,
            // The request without its body until the body is read.
            template: Some(Request::from_parts(parts, ReplayBody::default())),
            attempts: 0,
            slept: Duration::ZERO,
            previous_delay: Duration::ZERO,
            deadline,
        }
    }
}

/// Whether a response is a stream the first-content guard holds back.
fn is_stream(head: &http::response::Parts) -> bool {
    head.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.starts_with("text/event-stream")
                || ct.starts_with("application/x-ndjson")
                || ct.starts_with("application/jsonl")
        })
}

fn local_error(kind: ErrorKind, message: &str) -> LlmError {
    LlmError::new(
        Classification::new(kind)
            .with_phase(Phase::Local)
            .with_message(message),
    )
}

impl<S, B, R> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<ReplayBody>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
    R: Body<Data = Bytes> + ContentProgress + Unpin,
    R::Error: Into<BoxError>,
{
    type Output = Result<Response<RetryBody<R>>, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let failed: LlmError = match this.state.as_mut().project() {
                StateProj::Collecting { body, first, rest } => {
                    // Read the caller's body once; a single-frame body (the
                    // usual `Full<Bytes>`) is kept without a copy.
                    match ready!(collect(body, first, rest, this.shared.policy.max_body, cx)) {
                        Ok(bytes) => {
                            if let Some(template) = this.template.as_mut() {
                                *template.body_mut() = ReplayBody::new(bytes);
                            }
                            if let Some(budget) = &this.shared.policy.budget {
                                budget.deposit();
                            }
                            // The service is ready: `Retry::poll_ready` said so.
                            let future = start_attempt(
                                this.service,
                                this.template,
                                this.attempts,
                                this.timer,
                                this.shared,
                                *this.deadline,
                            );
                            this.state.set(State::Calling { future });
                            continue;
                        }
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(report::fail(
                                error,
                                GiveUp::NotRetryable,
                                0,
                                Duration::ZERO,
                            )));
                        }
                    }
                }
                StateProj::Ready => match ready!(this.service.poll_ready(cx)) {
                    Ok(()) => {
                        let future = start_attempt(
                            this.service,
                            this.template,
                            this.attempts,
                            this.timer,
                            this.shared,
                            *this.deadline,
                        );
                        this.state.set(State::Calling { future });
                        continue;
                    }
                    Err(error) => LlmError::from_source(error),
                },
                StateProj::Calling { future } => {
                    match timer_expired(this.timer, cx, Phase::BeforeHeaders) {
                        Some(expired) => expired,
                        None => match ready!(future.poll(cx)) {
                            Ok(response) => {
                                let (head, body) = response.into_parts();
                                if this.shared.policy.first_content_guard
                                    && head.status.is_success()
                                    && is_stream(&head)
                                {
                                    let guard = Guard {
                                        head: Some(head),
                                        body: Some(body),
                                        read_ahead: VecDeque::new(),
                                        read_ahead_bytes: 0,
                                    };
                                    this.state.set(State::Guarding {
                                        guard: Box::new(guard),
                                    });
                                    continue;
                                }
                                this.state.set(State::Done);
                                *this.timer = None;
                                let response = Response::from_parts(head, RetryBody::new(body));
                                return Poll::Ready(Ok(report::finish(
                                    response,
                                    *this.attempts,
                                    *this.slept,
                                )));
                            }
                            Err(error) => LlmError::from_source(error),
                        },
                    }
                }
                StateProj::Guarding { guard } => {
                    match timer_expired(this.timer, cx, Phase::AfterHeaders) {
                        Some(expired) => expired,
                        None => {
                            let Guard {
                                head,
                                body,
                                read_ahead,
                                read_ahead_bytes,
                            } = &mut **guard;
                            let Some(inner) = body.as_mut() else {
                                return Poll::Ready(Err(polled_after_completion()));
                            };
                            let error = match ready!(Pin::new(inner).poll_frame(cx)) {
                                Some(Ok(frame)) => {
                                    *read_ahead_bytes += frame.data_ref().map_or(0, Bytes::len);
                                    read_ahead.push_back(frame);
                                    // Hold back until content, but not without
                                    // bound: a stream that sends only keep-alives
                                    // is handed over past the limit (its idle
                                    // timeout, in Classify, still applies).
                                    if !body.as_ref().is_some_and(ContentProgress::content_seen)
                                        && *read_ahead_bytes < GUARD_READ_AHEAD_LIMIT
                                    {
                                        continue;
                                    }
                                    None
                                }
                                // Ended without content: hand over what there is.
                                None => None,
                                Some(Err(error)) => Some(error),
                            };
                            match error {
                                // Nothing reached the caller yet: whatever the
                                // stream said, this attempt can be replayed.
                                Some(error) => before_content(LlmError::from_source(error)),
                                None => {
                                    let (Some(head), Some(inner)) = (head.take(), body.take())
                                    else {
                                        return Poll::Ready(Err(polled_after_completion()));
                                    };
                                    let read_ahead = std::mem::take(read_ahead);
                                    this.state.set(State::Done);
                                    *this.timer = None;
                                    let response = Response::from_parts(
                                        head,
                                        RetryBody::with_read_ahead(inner, read_ahead),
                                    );
                                    return Poll::Ready(Ok(report::finish(
                                        response,
                                        *this.attempts,
                                        *this.slept,
                                    )));
                                }
                            }
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Ready);
                    continue;
                }
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
            };

            // An attempt failed: retry, or give up with its error.
            let c = failed.classification();
            let remaining = this
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            let policy = &this.shared.policy;
            let decision = policy.decide(
                c,
                *this.attempts,
                *this.previous_delay,
                remaining,
                this.shared.draw(),
            );
            let model = this
                .template
                .as_ref()
                .and_then(|t| t.extensions().get::<RequestMeta>())
                .and_then(|m| m.model.as_deref());
            let outcome = match decision {
                Decision::Retry { delay, hinted } => {
                    if policy
                        .budget
                        .as_ref()
                        .is_none_or(|budget| budget.withdraw())
                    {
                        report::retrying(c, *this.attempts, delay, hinted, model);
                        Ok(delay)
                    } else {
                        Err(GiveUp::BudgetExhausted)
                    }
                }
                Decision::GiveUp(reason) => Err(reason),
            };
            match outcome {
                Ok(delay) => {
                    *this.slept += delay;
                    *this.previous_delay = delay;
                    // The timer is left to `start_attempt`, which resets it.
                    if delay.is_zero() {
                        this.state.set(State::Ready);
                    } else {
                        this.state.set(State::Sleeping {
                            sleep: Box::pin(tokio::time::sleep(delay)),
                        });
                    }
                }
                Err(reason) => {
                    report::giving_up(c, *this.attempts, reason, model);
                    this.state.set(State::Done);
                    *this.timer = None;
                    return Poll::Ready(Err(report::fail(
                        failed,
                        reason,
                        *this.attempts,
                        *this.slept,
                    )));
                }
            }
        }
    }
}

/// Starts the next attempt on a ready service: a fresh copy of the
/// request (headers cloned, body shared), and the attempt's timer.
fn start_attempt<S>(
    service: &mut S,
    template: &Option<Request<ReplayBody>>,
    attempts: &mut u32,
    timer: &mut Option<Pin<Box<Sleep>>>,
    shared: &Shared,
    deadline: Option<Instant>,
) -> S::Future
where
    S: Service<Request<ReplayBody>>,
{
    *attempts += 1;
    let request = template
        .clone()
        .unwrap_or_else(|| Request::new(ReplayBody::default()));
    let limit = match (shared.policy.attempt_timeout, deadline) {
        (None, None) => None,
        (Some(timeout), None) => Instant::now().checked_add(timeout),
        (None, Some(deadline)) => Some(deadline),
        (Some(timeout), Some(deadline)) => Some(
            Instant::now()
                .checked_add(timeout)
                .map_or(deadline, |end| end.min(deadline)),
        ),
    };
    match (limit, timer.as_mut()) {
        // Reuse the allocation of the previous attempt's timer.
        (Some(end), Some(sleep)) => sleep.as_mut().reset(end),
        (Some(end), None) => *timer = Some(Box::pin(tokio::time::sleep_until(end))),
        (None, _) => *timer = None,
    }
    service.call(request)
}

/// The attempt's timer, if it has run out: a timeout in `phase`.
fn timer_expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    phase: Phase,
) -> Option<LlmError> {
    let sleep = timer.as_mut()?;
    sleep.as_mut().poll(cx).is_ready().then(|| {
        LlmError::new(
            Classification::new(ErrorKind::Timeout)
                .with_phase(phase)
                .with_message(match phase {
                    Phase::BeforeHeaders => "attempt timed out before the response head",
                    _ => "attempt timed out before the stream's first content",
                }),
        )
    })
}

/// A stream error the guard caught before any content reached the caller.
fn before_content(mut error: LlmError) -> LlmError {
    if error.classification().phase() == Phase::MidStream {
        let c = error
            .classification()
            .clone()
            .with_phase(Phase::AfterHeaders);
        *error.classification_mut() = c;
    }
    error
}

fn polled_after_completion() -> LlmError {
    local_error(ErrorKind::Unknown, "retry future polled after completion")
}

/// Reads a body to its end, at most `limit` bytes.
fn collect<B>(
    mut body: Pin<&mut B>,
    first: &mut Option<Bytes>,
    rest: &mut Option<BytesMut>,
    limit: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Bytes, LlmError>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    loop {
        match ready!(body.as_mut().poll_frame(cx)) {
            None => {
                return Poll::Ready(Ok(match rest.take() {
                    Some(all) => all.freeze(),
                    None => first.take().unwrap_or_default(),
                }));
            }
            Some(Err(error)) => {
                let error = LlmError::from_source(error);
                let c = error.classification().clone().with_phase(Phase::Local);
                let mut error = error;
                *error.classification_mut() = c;
                return Poll::Ready(Err(error));
            }
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else {
                    continue; // trailers are not replayed
                };
                let len = first.as_ref().map_or(0, Bytes::len)
                    + rest.as_ref().map_or(0, BytesMut::len)
                    + data.remaining();
                if len > limit {
                    return Poll::Ready(Err(local_error(
                        ErrorKind::PayloadTooLarge,
                        "request body is larger than the retry layer keeps for replay (RetryPolicy::max_body)",
                    )));
                }
                let chunk = data.copy_to_bytes(data.remaining());
                match (first.as_ref(), rest.as_mut()) {
                    (None, None) => *first = Some(chunk),
                    (Some(_), None) => {
                        let mut all = BytesMut::with_capacity(len);
                        all.extend_from_slice(&first.take().unwrap_or_default());
                        all.extend_from_slice(&chunk);
                        *rest = Some(all);
                    }
                    (_, Some(all)) => all.extend_from_slice(&chunk),
                }
            }
        }
    }
}
