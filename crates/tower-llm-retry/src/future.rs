//! The response future: collect the body, call, decide, sleep, call again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_llm_classify::replay::ReadBody;
use tower_llm_classify::{
    AttemptEnd, BoxError, Classification, EndReason, ErrorKind, LlmError, Phase,
};
use tower_service::Service;

use crate::body::{ReplayBody, RetryBody};
use crate::budget::RetryWithdrawal;
use crate::held::{HeldResponse, Watch};
use crate::policy::{Decision, GiveUp};
use crate::report;
use crate::service::Shared;
use crate::template::Template;

pin_project! {
    /// The future of [`Retry`](crate::Retry): a named state machine. On
    /// the happy path it allocates a copy of the request for the attempt
    /// (headers and extensions; none when the policy allows one attempt)
    /// and a box that pins the body of a guarded answer (a stream, a whole
    /// JSON answer) while it is read ahead; a call with a timeout or a
    /// deadline also makes the [`AttemptEnd`] it shares with the layers
    /// below (its timer is inline). Dropping it drops the attempt in flight or
    /// the wait (with its `AttemptEnd` unset: a breaker below does not count
    /// a caller that went away), and gives back the budget's withdrawal of a
    /// retry not yet sent; a retry already sent stays spent (the upstream
    /// had it). Nothing is spawned.
    pub struct ResponseFuture<S, B, R>
    where
        S: Service<Request<ReplayBody>>,
    {
        #[pin]
        state: State<S::Future, B, R>,
        // The attempt's time limit (or the deadline): inline, so a call
        // with a timeout allocates no timer, and a call without one never
        // registers it.
        #[pin]
        timer: Option<Sleep>,
        // When the attempt in flight must have its first content (a
        // stream) or its whole answer: the timer moves here when the head
        // arrives, since a stream's head may have a shorter limit.
        content_limit: Option<Instant>,
        service: S,
        shared: Arc<Shared>,
        template: Template,
        attempts: u32,
        slept: Duration,
        previous_delay: Duration,
        deadline: Option<Instant>,
        // The failure a retry follows, kept through the wait: the answer
        // when the budget has no retry left once the wait is over.
        waited_on: Option<LlmError>,
        // The budget's withdrawal for the retry about to be sent (given
        // back if it never is), then for the retry in flight (given back
        // if it succeeds and the policy refunds successful retries).
        unsent: Option<RetryWithdrawal>,
        in_flight: Option<RetryWithdrawal>,
        // Whether an attempt has left this process (failed anywhere but
        // in a layer below refusing it): until one has, a retry adds no
        // call to the upstream's load and takes nothing from the budget.
        reached: bool,
        // Tells the layers below (the circuit) why an attempt was dropped
        // when this layer ends it; made only for a call with a time limit,
        // and reused from attempt to attempt.
        end: Option<AttemptEnd>,
    }

    impl<S, B, R> PinnedDrop for ResponseFuture<S, B, R>
    where
        S: Service<Request<ReplayBody>>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some(withdrawal), Some(budget)) = (this.unsent.take(), this.shared.policy.budget.as_ref()) {
                budget.give_back(withdrawal);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, R> {
        Collecting { #[pin] read: ReadBody<B> },
        Ready,
        Calling { #[pin] future: F },
        // Inline: every guarded answer (a stream, a whole JSON answer)
        // holds its response here; only its body is boxed (to be pinned).
        Guarding { guard: HeldResponse<R> },
        // The wait before a retry (none for a zero wait); when it is over,
        // the budget is drawn on.
        Sleeping { sleep: Option<Pin<Box<Sleep>>> },
        Done,
    }
}

impl<S, B, R> fmt::Debug for ResponseFuture<S, B, R>
where
    S: Service<Request<ReplayBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field("slept", &self.slept)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

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
                read: ReadBody::new(body, shared.policy.max_body),
            },
            // Reading the body counts against the deadline too.
            timer: deadline.map(tokio::time::sleep_until),
            content_limit: None,
            service,
            shared,
            // The request without its body until the body is read.
            template: Template::new(parts),
            attempts: 0,
            slept: Duration::ZERO,
            previous_delay: Duration::ZERO,
            deadline,
            waited_on: None,
            unsent: None,
            in_flight: None,
            reached: false,
            end: None,
        }
    }
}

/// Why no attempt was started.
enum NotStarted {
    /// The deadline passed.
    Deadline,
    /// The outer layer could not make the request's head again.
    Unmade,
}

/// The outer layer that keeps the caller's request could not make it again
/// (see [`Remake`](tower_llm_classify::replay::Remake)).
fn unmade_error() -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::Unknown)
            .with_phase(Phase::BeforeHeaders)
            .with_message("the request could not be made again for another attempt"),
    )
}

fn deadline_error() -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::Timeout)
            .with_phase(Phase::BeforeHeaders)
            .with_message("the retry deadline passed before another attempt could start"),
    )
}

/// The model of the request, for logs: from the `RequestMeta` read when
/// the body was (the body is never parsed again on a failure).
fn model_of(template: &Template) -> Option<&str> {
    template.meta()?.model.as_deref()
}

impl<S, B, R> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<ReplayBody>, Response = Response<R>>,
    S::Error: Into<LlmError>,
    B: Body,
    B::Error: Into<BoxError>,
    R: Body<Data = Bytes>,
    R::Error: Into<LlmError>,
{
    type Output = Result<Response<RetryBody<R>>, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // Each arm either loops, returns, or yields the failure of an
            // attempt and whether it may be retried at all.
            let (failed, final_reason): (LlmError, Option<GiveUp>) =
                match this.state.as_mut().project() {
                    StateProj::Collecting { read } => {
                        if timer_expired(this.timer.as_mut(), cx) {
                            (deadline_error(), Some(GiveUp::Deadline))
                        } else {
                            // Read the caller's body once; a single-frame body
                            // (the usual `Full<Bytes>`) is kept without a copy.
                            match ready!(read.poll(cx)) {
                                Ok(bytes) => {
                                    this.template.set_body(bytes);
                                    if let Some(budget) = &this.shared.policy.budget {
                                        budget.deposit();
                                    }
                                    // On to the first attempt. (`Retry::poll_ready`
                                    // made the service ready; asking again is free.)
                                    this.state.set(State::Ready);
                                    continue;
                                }
                                Err(error) => (error, Some(GiveUp::NotRetryable)),
                            }
                        }
                    }
                    StateProj::Ready => {
                        if timer_expired(this.timer.as_mut(), cx) {
                            (deadline_error(), Some(GiveUp::Deadline))
                        } else {
                            match ready!(this.service.poll_ready(cx)) {
                                Ok(()) => {
                                    match start_attempt(
                                        this.service,
                                        this.template,
                                        this.attempts,
                                        this.timer.as_mut(),
                                        this.content_limit,
                                        this.end,
                                        this.shared,
                                        *this.deadline,
                                    ) {
                                        Ok(future) => {
                                            // The retry is sent: its withdrawal
                                            // now stands or falls with it.
                                            *this.in_flight = this.unsent.take();
                                            this.state.set(State::Calling { future });
                                            continue;
                                        }
                                        Err(NotStarted::Deadline) => {
                                            (deadline_error(), Some(GiveUp::Deadline))
                                        }
                                        Err(NotStarted::Unmade) => {
                                            (unmade_error(), Some(GiveUp::NotRetryable))
                                        }
                                    }
                                }
                                // A service that failed its readiness is not polled
                                // again (the Tower contract): the call ends here.
                                Err(error) => (error.into(), Some(GiveUp::NotRetryable)),
                            }
                        }
                    }
                    StateProj::Calling { future } => {
                        if timer_expired(this.timer.as_mut(), cx) {
                            time_limit_reached(this.end.as_ref(), *this.deadline);
                            (attempt_timeout(Phase::BeforeHeaders), None)
                        } else {
                            match ready!(future.poll(cx)) {
                                Ok(response) => {
                                    let (head, body) = response.into_parts();
                                    let guarded = this.shared.policy.first_content_guard
                                        && head.status.is_success()
                                        && !body.is_end_stream();
                                    // A stream is held until its first
                                    // content, a whole JSON answer to its end.
                                    let watch = guarded
                                        .then(|| Watch::for_response(&head, this.template))
                                        .flatten();
                                    if let Some(watch) = watch {
                                        // From here the limit is the first
                                        // content's (or the whole answer's).
                                        set_timer(this.timer.as_mut(), *this.content_limit);
                                        let guard = HeldResponse::new(head, body, watch);
                                        this.state.set(State::Guarding { guard });
                                        continue;
                                    }
                                    this.state.set(State::Done);
                                    this.timer.set(None);
                                    refund_if_succeeded(this.shared, this.in_flight);
                                    let mut response =
                                        Response::from_parts(head, RetryBody::new(body));
                                    report::finish(
                                        this.shared,
                                        &mut response,
                                        *this.attempts,
                                        *this.slept,
                                    );
                                    return Poll::Ready(Ok(response));
                                }
                                Err(error) => (error.into(), None),
                            }
                        }
                    }
                    StateProj::Guarding { guard } => {
                        if timer_expired(this.timer.as_mut(), cx) {
                            time_limit_reached(this.end.as_ref(), *this.deadline);
                            (attempt_timeout(Phase::AfterHeaders), None)
                        } else {
                            match ready!(guard.poll_content(cx)) {
                                Ok(()) => {
                                    let Some(mut response) = guard.hand_over() else {
                                        return Poll::Ready(Err(polled_after_completion()));
                                    };
                                    this.state.set(State::Done);
                                    this.timer.set(None);
                                    refund_if_succeeded(this.shared, this.in_flight);
                                    report::finish(
                                        this.shared,
                                        &mut response,
                                        *this.attempts,
                                        *this.slept,
                                    );
                                    return Poll::Ready(Ok(response));
                                }
                                // Nothing reached the caller yet: whatever the
                                // stream said, this attempt can be replayed.
                                Err(error) => {
                                    if let Some(end) = this.end.as_ref() {
                                        end.end(EndReason::Failed(error.kind()));
                                    }
                                    (before_content(error), None)
                                }
                            }
                        }
                    }
                    StateProj::Sleeping { sleep } => {
                        if let Some(sleep) = sleep.as_mut() {
                            ready!(sleep.as_mut().poll(cx));
                        }
                        let waited_on = this.waited_on.take();
                        if *this.reached && !withdraw_for_retry(this.shared, this.unsent) {
                            let failed = waited_on.unwrap_or_else(polled_after_completion);
                            (failed, Some(GiveUp::BudgetExhausted))
                        } else {
                            // The deadline bounds the wait for readiness too.
                            set_timer(this.timer.as_mut(), *this.deadline);
                            this.state.set(State::Ready);
                            continue;
                        }
                    }
                    StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
                };

            // An attempt failed (a retry that fails keeps its withdrawal,
            // unless a layer below refused it before it left the process:
            // the upstream never saw it): retry, or give up with its error.
            let c = failed.classification();
            if c.phase() == Phase::Local {
                if let (Some(withdrawal), Some(budget)) =
                    (this.in_flight.take(), this.shared.policy.budget.as_ref())
                {
                    budget.give_back(withdrawal);
                }
            } else {
                *this.reached = true;
            }
            *this.in_flight = None;
            let outcome = match final_reason {
                Some(reason) => Err(reason),
                None => {
                    let remaining = this
                        .deadline
                        .map(|d| d.saturating_duration_since(Instant::now()));
                    let policy = &this.shared.policy;
                    match policy.decide(
                        c,
                        *this.attempts,
                        *this.previous_delay,
                        remaining,
                        this.shared.draw(),
                    ) {
                        // The budget is asked now, so that an empty one ends
                        // the call at once, and drawn on when the retry is
                        // sent: a wait (seconds, for a hint) holds nothing.
                        Decision::Retry { delay, hinted } => match &policy.budget {
                            Some(budget) if *this.reached && !budget.has_room() => {
                                Err(GiveUp::BudgetExhausted)
                            }
                            _ => Ok((delay, hinted)),
                        },
                        Decision::GiveUp(reason) => Err(reason),
                    }
                }
            };
            match outcome {
                Ok((delay, hinted)) => {
                    report::retrying(c, *this.attempts, delay, hinted, model_of(this.template));
                    // Saturating: a policy may allow waits of any length.
                    *this.slept = this.slept.saturating_add(delay);
                    *this.previous_delay = delay;
                    // Only a budget can refuse the retry after the wait.
                    if this.shared.policy.budget.is_some() {
                        *this.waited_on = Some(failed);
                    }
                    // A zero wait is over at once.
                    let sleep = (!delay.is_zero()).then(|| Box::pin(tokio::time::sleep(delay)));
                    this.state.set(State::Sleeping { sleep });
                }
                Err(reason) => {
                    // A retry taken but never sent (the service failed its
                    // readiness, the deadline passed) is given back.
                    if let (Some(withdrawal), Some(budget)) =
                        (this.unsent.take(), this.shared.policy.budget.as_ref())
                    {
                        budget.give_back(withdrawal);
                    }
                    report::giving_up(c, *this.attempts, reason, model_of(this.template));
                    this.state.set(State::Done);
                    this.timer.set(None);
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

/// Takes the budget's withdrawal for a retry about to be sent (into
/// `unsent`); `false` when the budget has none left. Without a budget,
/// always `true`.
fn withdraw_for_retry(shared: &Shared, unsent: &mut Option<RetryWithdrawal>) -> bool {
    match &shared.policy.budget {
        Some(budget) => {
            *unsent = budget.withdraw_retry();
            unsent.is_some()
        }
        None => true,
    }
}

/// A call succeeded: the retry that did it gives its withdrawal back when
/// the policy refunds successful retries (the AWS SDKs' retry quota).
fn refund_if_succeeded(shared: &Shared, in_flight: &mut Option<RetryWithdrawal>) {
    if let (Some(withdrawal), Some(budget)) = (in_flight.take(), shared.policy.budget.as_ref())
        && shared.policy.refund_successful_retries
    {
        budget.give_back(withdrawal);
    }
}

/// Starts the next attempt on a ready service: a fresh copy of the request
/// (headers cloned, body shared; the request itself for the last attempt
/// the policy allows), the attempt's timer and, with a timer, a cleared
/// [`AttemptEnd`] in its extensions. `None` when the deadline has passed:
/// no request is sent that could not be answered.
///
/// The timer first runs to the head's limit; `content_limit` is when the
/// attempt must have its first content (a stream) or its whole answer (a
/// guarded JSON answer), where the timer moves when the head arrives. A
/// request that asks for a stream has the policy's stream head and
/// first-content limits besides the attempt timeout and the deadline.
#[allow(clippy::too_many_arguments, reason = "the future's fields, lent")]
fn start_attempt<S>(
    service: &mut S,
    template: &mut Template,
    attempts: &mut u32,
    timer: Pin<&mut Option<Sleep>>,
    content_limit: &mut Option<Instant>,
    end: &mut Option<AttemptEnd>,
    shared: &Shared,
    deadline: Option<Instant>,
) -> Result<S::Future, NotStarted>
where
    S: Service<Request<ReplayBody>>,
{
    let policy = &shared.policy;
    let (head_timeout, first_content_timeout) = if template.meta().is_some_and(|m| m.stream) {
        (policy.stream_head_timeout, policy.first_content_timeout)
    } else {
        (None, None)
    };
    // The clock is read only when a deadline or timeout needs it.
    let timed = deadline.is_some()
        || policy.attempt_timeout.is_some()
        || head_timeout.is_some()
        || first_content_timeout.is_some();
    let now = timed.then(Instant::now);
    if let (Some(deadline), Some(now)) = (deadline, now)
        && deadline <= now
    {
        return Err(NotStarted::Deadline);
    }
    // No attempt follows the last one allowed (`RetryPolicy::decide` gives
    // up at `max_attempts`), so it takes the request instead of a copy.
    let Some(mut request) = template.attempt(*attempts + 1 >= policy.max_attempts) else {
        return Err(NotStarted::Unmade);
    };
    *attempts += 1;
    // A limit too far away for the clock is no limit.
    let after =
        |timeout: Option<Duration>| now.zip(timeout).and_then(|(now, t)| now.checked_add(t));
    *content_limit = earliest(
        earliest(after(policy.attempt_timeout), after(first_content_timeout)),
        deadline,
    );
    let head_limit = earliest(*content_limit, after(head_timeout));
    set_timer(timer, head_limit);
    // Only an attempt this layer may end itself needs to say why it ended.
    if head_limit.is_some() {
        let end = end.get_or_insert_with(AttemptEnd::new);
        end.renew();
        request.extensions_mut().insert(end.clone());
    }
    Ok(service.call(request))
}

/// The earlier of two limits, `None` being no limit.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Points the timer at `limit` (reset in place when it is armed), or stops
/// it (`None`).
fn set_timer(mut timer: Pin<&mut Option<Sleep>>, limit: Option<Instant>) {
    match (limit, timer.as_mut().as_pin_mut()) {
        (Some(limit), Some(sleep)) => sleep.reset(limit),
        (Some(limit), None) => timer.set(Some(tokio::time::sleep_until(limit))),
        (None, _) => timer.set(None),
    }
}

/// The attempt's timer ran out: tell the layers below, before the attempt
/// is dropped, whether its timeout or the deadline ended it.
fn time_limit_reached(end: Option<&AttemptEnd>, deadline: Option<Instant>) {
    if let Some(end) = end {
        let reason = match deadline {
            Some(deadline) if Instant::now() >= deadline => EndReason::Deadline,
            _ => EndReason::AttemptTimeout,
        };
        end.end(reason);
    }
}

/// Whether the timer (a time limit of the attempt, or the deadline) has
/// run out.
fn timer_expired(timer: Pin<&mut Option<Sleep>>, cx: &mut Context<'_>) -> bool {
    timer
        .as_pin_mut()
        .is_some_and(|sleep| sleep.poll(cx).is_ready())
}

fn attempt_timeout(phase: Phase) -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::Timeout)
            .with_phase(phase)
            .with_message(match phase {
                Phase::BeforeHeaders => "attempt timed out before the response head",
                _ => "attempt timed out before the stream's first content",
            }),
    )
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
    LlmError::local(ErrorKind::Unknown, "retry future polled after completion")
}
