//! The response future: read the body once, then try the targets in turn.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_llm_classify::replay::ReadBody;
use tower_llm_classify::stream::CaptureTranscript;
use tower_llm_classify::{BoxError, ErrorKind, LlmError, RequestMeta};
use tower_service::Service;

use crate::body::FallbackBody;
use crate::group::{Cursor, PickRequest, Tracker, note_failure, pick};
use crate::head::CallerHead;
use crate::outcome::{all_failed, finish, moved_on, no_target};
use crate::report::{FallbackReport, TRACING_TARGET};
use crate::route::Route;
use crate::service::Shared;

pin_project! {
    /// The future of [`Fallback`](crate::Fallback).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, S::Future, B>,
        shared: Arc<Shared<S>>,
        parts: Option<CallerHead<S>>,
        body: Bytes,
        // Where the request is among the groups, the route the last failure
        // set, and the context window of the target that was too small.
        cursor: Cursor,
        route: Route,
        too_small: Option<u64>,
        current: usize,
        // The call to a member of a group of two or more: in flight until
        // its body ends, timed to its answer.
        tracker: Option<Tracker>,
        failures: Vec<(Arc<str>, LlmError)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        Collecting { #[pin] read: ReadBody<B> },
        Ready { service: Option<S> },
        Calling { #[pin] future: F },
        // The first target's call with a hedge armed (boxed: only hedging
        // calls pay for it).
        Hedged { hedged: Box<Hedged<S, F>> },
        Done,
    }
}

/// A first call, the timer that may start a hedge, and the hedge.
struct Hedged<S, F> {
    /// Each call: its target, its future, and its count in its group (in
    /// flight, its latency), which the winner's body carries on and the
    /// loser's ends with it.
    primary: Option<(usize, Pin<Box<F>>, Option<Tracker>)>,
    hedge: Option<(usize, Pin<Box<F>>, Option<Tracker>)>,
    /// The hedge target, chosen when the timer fired, until it is ready.
    waiting: Option<(usize, S)>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last failure while the other call may still answer.
    last: Option<(usize, LlmError)>,
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("cursor", &self.cursor)
            .field("failures", &self.failures.len())
            .finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(shared: Arc<Shared<S>>, request: Request<B>) -> Self {
        let (parts, body) = request.into_parts();
        let read = ReadBody::new(body, shared.max_body);
        ResponseFuture {
            state: State::Collecting { read },
            shared,
            parts: Some(CallerHead::Owned(parts)),
            body: Bytes::new(),
            cursor: Cursor::default(),
            route: Route::Next,
            too_small: None,
            current: 0,
            tracker: None,
            failures: Vec::new(),
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<LlmError>,
    B: Body,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<LlmError>,
{
    type Output = Result<Response<FallbackBody<RB>>, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // Whether the failure's group heard of it already (a hedged
            // call's, when it failed).
            let mut noted = false;
            let failed: LlmError = match this.state.as_mut().project() {
                StateProj::Collecting { read } => match ready!(read.poll(cx)) {
                    Ok(bytes) => {
                        // What the request is, read once here unless an
                        // outer layer did: each target gets it made its
                        // own, and no layer below reads the body again.
                        if let Some(parts) = this.parts.as_mut().and_then(CallerHead::get_mut)
                            && parts.extensions.get::<RequestMeta>().is_none()
                        {
                            let meta =
                                RequestMeta::from_request(&parts.uri, &parts.headers, Some(&bytes));
                            parts.extensions.insert(meta);
                        }
                        // A stream that may be continued: Classify keeps
                        // what it delivers.
                        if keeps_request(this.shared, this.parts.as_deref())
                            && let Some(parts) = this.parts.as_mut().and_then(CallerHead::get_mut)
                        {
                            parts.extensions.insert(CaptureTranscript);
                        }
                        *this.body = bytes;
                        this.state.set(State::Ready { service: None });
                        if !pick(
                            this.shared,
                            this.cursor,
                            *this.route,
                            *this.too_small,
                            pick_request(this.parts, this.body),
                            this.current,
                        ) {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(no_target(this.parts.as_deref())));
                        }
                        continue;
                    }
                    Err(error) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                },
                StateProj::Ready { service } => {
                    let target = &this.shared.targets[*this.current];
                    let alone = this.cursor.alone();
                    let service = service.get_or_insert_with(|| target.service_for(alone).clone());
                    match ready!(service.poll_ready(cx)) {
                        Err(error) => error.into(),
                        Ok(()) => {
                            // No target can come after this one (and no
                            // hedge): the caller's request is moved, not
                            // copied.
                            let last = this.cursor.nothing_after(this.shared)
                                && this.shared.hedge.is_none()
                                && !keeps_request(this.shared, this.parts.as_deref());
                            let adapted = match (last, this.parts.take()) {
                                (true, Some(CallerHead::Owned(parts))) => {
                                    target.adapt_owned(parts, std::mem::take(this.body))
                                }
                                (true, Some(CallerHead::Shared(parts))) => {
                                    match parts.try_unwrap() {
                                        Ok(parts) => {
                                            target.adapt_owned(parts, std::mem::take(this.body))
                                        }
                                        // An earlier target's request still
                                        // holds them: a copy.
                                        Err(parts) => target.adapt_request(&parts, this.body),
                                    }
                                }
                                (false, Some(mut parts)) => {
                                    let adapted =
                                        target.adapt_request(&parts, this.body).map(|request| {
                                            remade_by(
                                                this.shared,
                                                *this.current,
                                                &mut parts,
                                                this.body,
                                                request,
                                            )
                                        });
                                    *this.parts = Some(parts);
                                    adapted
                                }
                                (_, None) => {
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(LlmError::local(
                                        ErrorKind::Unknown,
                                        "fallback future polled after completion",
                                    )));
                                }
                            };
                            match adapted {
                                Err(adapt) => {
                                    // Nothing was sent: this target cannot take
                                    // this request; the others may.
                                    let error = LlmError::local(
                                        ErrorKind::InvalidRequest,
                                        &format!("not sent to `{}`: {adapt}", target.name),
                                    );
                                    this.failures.push((Arc::clone(&target.name), error));
                                    if pick(
                                        this.shared,
                                        this.cursor,
                                        *this.route,
                                        *this.too_small,
                                        pick_request(this.parts, this.body),
                                        this.current,
                                    ) {
                                        this.state.set(State::Ready { service: None });
                                        continue;
                                    }
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(all_failed(std::mem::take(
                                        this.failures,
                                    ))));
                                }
                                Ok(request) => {
                                    *this.tracker = Tracker::start(this.shared, *this.current);
                                    let future = service.call(request);
                                    let hedge =
                                        this.shared.hedge.filter(|_| this.failures.is_empty());
                                    match hedge {
                                        Some(policy) => {
                                            this.shared.count_hedge_call();
                                            let hedged = Hedged {
                                                primary: Some((
                                                    *this.current,
                                                    Box::pin(future),
                                                    this.tracker.take(),
                                                )),
                                                hedge: None,
                                                waiting: None,
                                                timer: Some(Box::pin(tokio::time::sleep(
                                                    policy.delay,
                                                ))),
                                                last: None,
                                            };
                                            this.state.set(State::Hedged {
                                                hedged: Box::new(hedged),
                                            });
                                        }
                                        None => this.state.set(State::Calling { future }),
                                    }
                                    continue;
                                }
                            }
                        }
                    }
                }
                StateProj::Calling { future } => match ready!(future.poll(cx)) {
                    Ok(response) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(served(
                            this.shared,
                            *this.current,
                            this.failures,
                            response,
                            (this.parts.take(), std::mem::take(this.body)),
                            this.tracker.take(),
                        )));
                    }
                    Err(error) => error.into(),
                },
                StateProj::Hedged { hedged } => {
                    let h = &mut **hedged;
                    // The timer fired: choose the hedge target (once), if
                    // the budget allows one.
                    if h.timer
                        .as_mut()
                        .is_some_and(|t| t.as_mut().poll(cx).is_ready())
                    {
                        h.timer = None;
                        let policy = this.shared.hedge;
                        let mut probe = *this.cursor;
                        let mut index = *this.current;
                        if policy.is_some_and(|p| this.shared.take_hedge(&p))
                            && pick(
                                this.shared,
                                &mut probe,
                                Route::Next,
                                *this.too_small,
                                pick_request(this.parts, this.body),
                                &mut index,
                            )
                        {
                            *this.cursor = probe;
                            let service = this.shared.targets[index].service_for(probe.alone());
                            h.waiting = Some((index, service.clone()));
                        }
                    }
                    if let Some((index, service)) = h.waiting.as_mut() {
                        let index = *index;
                        if let Poll::Ready(result) = service.poll_ready(cx) {
                            let target = &this.shared.targets[index];
                            let started = result.map_err(Into::into).and_then(|()| {
                                let parts = this.parts.as_ref().ok_or_else(|| {
                                    LlmError::local(ErrorKind::Unknown, "no request")
                                })?;
                                target.adapt_request(parts, this.body).map_err(|adapt| {
                                    LlmError::local(
                                        ErrorKind::InvalidRequest,
                                        &format!("not sent to `{}`: {adapt}", target.name),
                                    )
                                })
                            });
                            match started {
                                Ok(request) => {
                                    tracing::info!(target: TRACING_TARGET, to = &*target.name, "hedging");
                                    let tracker = Tracker::start(this.shared, index);
                                    h.hedge =
                                        Some((index, Box::pin(service.call(request)), tracker));
                                }
                                Err(error) => {
                                    note_failure(this.shared, index, &error, None);
                                    record(h, this.shared, this.failures, index, error)
                                }
                            }
                            h.waiting = None;
                        }
                    }
                    // Whichever answers first is used; the other is dropped
                    // with the box (its request cancelled).
                    for hedge_slot in [false, true] {
                        let slot = if hedge_slot {
                            &mut h.hedge
                        } else {
                            &mut h.primary
                        };
                        let Some((index, future, _)) = slot.as_mut() else {
                            continue;
                        };
                        let index = *index;
                        if let Poll::Ready(result) = future.as_mut().poll(cx) {
                            let tracker = slot.take().and_then(|(_, _, tracker)| tracker);
                            match result {
                                Ok(response) => {
                                    if let Some((failed_index, error)) = h.last.take() {
                                        this.failures.push((
                                            Arc::clone(&this.shared.targets[failed_index].name),
                                            error,
                                        ));
                                    }
                                    *this.current = index;
                                    this.state.set(State::Done);
                                    return Poll::Ready(Ok(served(
                                        this.shared,
                                        index,
                                        this.failures,
                                        response,
                                        (this.parts.take(), std::mem::take(this.body)),
                                        tracker,
                                    )));
                                }
                                Err(error) => {
                                    // Its group learns now (a hint blocks
                                    // the member), whichever call fails
                                    // first; the report keeps it below.
                                    let error: LlmError = error.into();
                                    let started = tracker.as_ref().map(Tracker::started);
                                    note_failure(this.shared, index, &error, started);
                                    record(h, this.shared, this.failures, index, error)
                                }
                            }
                        }
                    }
                    // A call still out (or a hedge about to start): wait.
                    if h.primary.is_some() || h.hedge.is_some() || h.waiting.is_some() {
                        return Poll::Pending;
                    }
                    // Both failed (or the first failed before any hedge):
                    // the last failure moves on as usual.
                    match h.last.take() {
                        Some((index, error)) => {
                            *this.current = index;
                            noted = true;
                            error
                        }
                        None => {
                            return Poll::Ready(Err(LlmError::local(
                                ErrorKind::Unknown,
                                "hedged call ended without an outcome",
                            )));
                        }
                    }
                }
                StateProj::Done => {
                    return Poll::Ready(Err(LlmError::local(
                        ErrorKind::Unknown,
                        "fallback future polled after completion",
                    )));
                }
            };

            // This target failed: what its group learns (its call's count
            // in flight ends here; a hedged call's ended with it), and
            // where to now?
            if !noted {
                let started = match this.tracker.take() {
                    Some(tracker) if tracker.index() == *this.current => Some(tracker.started()),
                    _ => None,
                };
                note_failure(this.shared, *this.current, &failed, started);
            }
            let target = &this.shared.targets[*this.current];
            let name = Arc::clone(&target.name);
            let route = this.shared.routes.route(failed.classification());
            if route == Route::Stop {
                moved_on(&name, None, failed.classification().kind(), route);
                this.state.set(State::Done);
                return Poll::Ready(Err(finish(
                    failed,
                    std::mem::take(this.failures),
                    Some(name),
                )));
            }
            if route == Route::LargerContext {
                // The largest window known to be too small.
                *this.too_small = match (target.context_window, *this.too_small) {
                    (Some(window), Some(small)) => Some(window.max(small)),
                    (window, small) => window.or(small),
                };
            }
            *this.route = route;
            let kind = failed.classification().kind();
            this.failures.push((Arc::clone(&name), failed));
            let moved = pick(
                this.shared,
                this.cursor,
                *this.route,
                *this.too_small,
                pick_request(this.parts, this.body),
                this.current,
            );
            let to = moved.then(|| &*this.shared.targets[*this.current].name);
            moved_on(&name, to, kind, route);
            if moved {
                this.state.set(State::Ready { service: None });
                continue;
            }
            this.state.set(State::Done);
            return Poll::Ready(Err(all_failed(std::mem::take(this.failures))));
        }
    }
}

/// Whether the caller's request is kept after the call: a stream that may
/// be continued (in a dialect the splice knows) needs it to ask for the
/// rest, and Classify's transcript of what it delivered.
fn keeps_request<S>(shared: &Shared<S>, parts: Option<&http::request::Parts>) -> bool {
    shared.continuations > 0
        && parts
            .and_then(|p| p.extensions.get::<RequestMeta>())
            .is_some_and(|meta| meta.stream && crate::continuation::resume::splices(meta.dialect))
}

/// The response of target `index`, with the report of what failed before;
/// a stream that may be continued keeps the caller's request for it.
fn served<S, RB>(
    shared: &Arc<Shared<S>>,
    index: usize,
    failures: &mut Vec<(Arc<str>, LlmError)>,
    response: Response<RB>,
    request: (Option<CallerHead<S>>, Bytes),
    tracker: Option<Tracker>,
) -> Response<FallbackBody<RB>>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<LlmError>,
    RB: Body<Data = Bytes> + Send + 'static,
{
    let name = Arc::clone(&shared.targets[index].name);
    let failures = std::mem::take(failures);
    if !failures.is_empty() {
        // Passing a target whose breaker is open is routine while it stays
        // open (every request does it): debug. A real failure on the way
        // is worth a line at info.
        if failures
            .iter()
            .all(|(_, e)| e.kind() == ErrorKind::CircuitOpen)
        {
            tracing::debug!(target: TRACING_TARGET, served_by = &*name, skipped = failures.len(), "served by a fallback target: open circuits skipped");
        } else {
            tracing::info!(target: TRACING_TARGET, served_by = &*name, failed = failures.len(), "served by a fallback target");
        }
    }
    let (mut head, body) = response.into_parts();
    let body = match crate::continuation::resume::resumable(shared, index, request, &mut head) {
        Some((resume, first)) => FallbackBody::resumable(body, resume, first),
        None => FallbackBody::new(body),
    };
    // The served member of a group stays in flight until the body ends
    // (a hedge that lost is dropped here, its count with it).
    let body = match tracker {
        Some(mut tracker) if tracker.index() == index => {
            tracker.answered(&head.extensions);
            body.tracked(tracker)
        }
        _ => body,
    };
    head.extensions.insert(FallbackReport {
        served_by: Some(name),
        failures: failures
            .into_iter()
            .map(|(n, e)| (n, e.classification().clone()))
            .collect(),
    });
    Response::from_parts(head, body)
}

/// A hedged call failed: the previous failure (if any) goes to the list,
/// this one waits in case the other call fails too.
fn record<S, F>(
    h: &mut Hedged<S, F>,
    shared: &Shared<S>,
    failures: &mut Vec<(Arc<str>, LlmError)>,
    index: usize,
    error: LlmError,
) {
    if let Some((previous, earlier)) = h.last.replace((index, error)) {
        failures.push((Arc::clone(&shared.targets[previous].name), earlier));
    }
}

/// The request a pick is for, while the future holds it.
fn pick_request<'a, S>(parts: &'a Option<CallerHead<S>>, body: &'a Bytes) -> PickRequest<'a> {
    parts.as_deref().map(|parts| (parts, body))
}

/// `request` for target `index`, saying how to make its head again when
/// the fallback is asked to ([`FallbackBuilder::remake_attempts`](crate::FallbackBuilder::remake_attempts)):
/// the target's retries then remake each further attempt from the caller's
/// request kept here, instead of keeping a copy of their own.
fn remade_by<S>(
    shared: &Arc<Shared<S>>,
    index: usize,
    parts: &mut CallerHead<S>,
    body: &Bytes,
    mut request: Request<Full<Bytes>>,
) -> Request<Full<Bytes>>
where
    S: Send + Sync + 'static,
{
    if !shared.remake_attempts || !shared.targets[index].remakes_heads() {
        return request;
    }
    let remake = parts.remake_for(shared, body.is_empty(), index);
    request.extensions_mut().insert(remake);
    request
}
