//! The response futures: the circuit's, with the guard that carries a
//! call's permit to the end of its body, the adaptive limit's, and the
//! two as one layer's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_llm_classify::{
    AttemptEnd, Classification, Classified, EndReason, ErrorKind, LlmError, Phase,
};

pub use crate::adaptive::LimitFuture;
pub use crate::limited::LimitedFuture;

use crate::adaptive::{LimitTicket, Sample};
use crate::body::{CircuitBody, FirstContent};
use crate::breaker::{Breaker, CooldownCause, Outcome, Permit};
use crate::pacing::Pace;

/// A call's permit, until its outcome is known. Dropped without one, it
/// asks the request's [`AttemptEnd`]: set, the layer above ended the
/// attempt (its timeout, its deadline, an error its stream guard read) and
/// the call failed for that reason; unset or absent, the caller went away,
/// and the permit is released without counting.
pub(crate) struct PermitGuard {
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) permit: Permit,
    /// When the call was admitted, in the registry's time, when the
    /// configuration needs times (`CircuitConfig::needs_times`) or the
    /// call was admitted with the time; zero otherwise (no outcome then
    /// reads it).
    pub(crate) start: Duration,
    pub(crate) done: bool,
    /// Set by the layer above when it ends the attempt itself.
    pub(crate) end: Option<AttemptEnd>,
    /// The request asked for a stream (an answer's head then comes at once).
    pub(crate) streaming: bool,
    /// The response head arrived: the guard now rides with the body.
    pub(crate) answered: bool,
    /// The first body data came later than the configured limit.
    pub(crate) slow_start: bool,
    /// A probe's request token: remembered by the breaker if it fails.
    pub(crate) token: Option<u64>,
    /// The call's room under the key's adaptive limit, when the limit is
    /// part of this layer (`LimitedCircuit`): freed with the outcome, the
    /// limit learning from it as the standalone layer's would.
    pub(crate) limit: Option<LimitTicket>,
}

/// With a first-content limit: the request's stream dialect and provider,
/// to find the first content event of a stream nobody below scans.
pub(crate) type StreamKind = (
    tower_llm_classify::stream::Dialect,
    tower_llm_classify::Provider,
);

impl PermitGuard {
    /// The time to record the outcome at: the clock, read only when the
    /// outcome needs it; otherwise the start, which nothing reads.
    fn end_time(&self) -> Duration {
        if self.breaker.config().needs_times() {
            self.breaker.now()
        } else {
            self.start
        }
    }

    /// Called on the first data frame of the body.
    pub(crate) fn first_data(&mut self) {
        if let Some(limit) = self.breaker.config().slow_first_content {
            self.slow_start = self.breaker.now().saturating_sub(self.start) > limit;
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.done = true;
        let now = self.end_time();
        let slow = self.slow_start
            || self
                .breaker
                .config()
                .slow_call_duration
                .is_some_and(|d| now.saturating_sub(self.start) > d);
        if outcome == Outcome::Failure
            && let Some(token) = self.token
        {
            self.breaker.remember_failed_probe(token);
        }
        self.breaker.record(self.permit, outcome, slow, now);
    }

    /// The response head arrived (the adaptive limit times it).
    #[inline]
    pub(crate) fn head(&mut self) {
        self.answered = true;
        if let Some(ticket) = self.limit.as_mut() {
            ticket.head(&self.breaker);
        }
    }

    // The breaker records first, the limit learns after: a probe whose
    // success closes the breaker restarts the limit, and the success then
    // counts in the restarted limit (as with the limit stacked above).
    pub(crate) fn succeeded(mut self) {
        self.finish(Outcome::Success);
        if let Some(ticket) = self.limit.take() {
            ticket.succeeded(&self.breaker);
        }
    }

    /// A failure of the call: counted as the classification says, and a
    /// rate limit or exhausted quota starts a cooldown.
    pub(crate) fn failed(mut self, c: &Classification) {
        self.fail(c);
        if let Some(ticket) = self.limit.take() {
            ticket.failed(&self.breaker, c);
        }
    }

    fn fail(&mut self, c: &Classification) {
        let config = self.breaker.config();
        // A verdict read from a 4xx message alone may be the caller's own
        // text echoed back: it starts no cooldown of its own. What the
        // status alone says still holds: a 429 that says when to come back
        // cools the key down as any hinted 429 does.
        if !c.may_penalise_target() {
            let limited = c.status() == Some(http::StatusCode::TOO_MANY_REQUESTS);
            if limited
                && config.rate_limit_cooldown
                && let Some(wait) = c.retry_after()
            {
                self.breaker.cool_down(
                    wait.min(config.quota_cooldown),
                    self.breaker.now(),
                    CooldownCause::RateLimited,
                );
            }
            let outcome = outcome_of(c, config);
            self.finish(outcome);
            return;
        }
        match c.kind() {
            ErrorKind::RateLimited if config.rate_limit_cooldown => {
                if let Some(wait) = c.retry_after() {
                    self.breaker.cool_down(
                        wait.min(config.quota_cooldown),
                        self.breaker.now(),
                        CooldownCause::RateLimited,
                    );
                }
            }
            ErrorKind::QuotaExhausted => self.breaker.cool_down(
                config.quota_cooldown,
                self.breaker.now(),
                CooldownCause::QuotaExhausted,
            ),
            _ => {}
        }
        let outcome = outcome_of(c, config);
        self.finish(outcome);
    }
}

impl Drop for PermitGuard {
    fn drop(&mut self) {
        if !self.done {
            self.end_without_outcome();
        }
        // Room the call held and no outcome freed: the limit learns
        // nothing from a call ended from outside (as the standalone
        // layer's permit, dropped with its future or body).
        if let Some(ticket) = self.limit.take() {
            ticket.release(&self.breaker, Sample::Nothing);
        }
    }
}

impl PermitGuard {
    /// Dropped before its outcome was known.
    fn end_without_outcome(&mut self) {
        // Ended by the layer above: a failure like any other (a probe
        // concludes with it). Resilience4j counts a call its TimeLimiter
        // cut as a failure; Envoy's outlier detection counts local-origin
        // timeouts.
        match self.end.as_ref().and_then(AttemptEnd::reason) {
            // A whole (non-streamed) answer whose head had come, cut by the
            // caller's own time limit while its body was read: the target
            // answered, and how long the answer takes is up to the request
            // (`max_tokens`, reasoning effort). Counting it would let a
            // caller open the breaker for everyone with long requests.
            Some(EndReason::AttemptTimeout | EndReason::Deadline)
                if self.answered && !self.streaming =>
            {
                let now = self.end_time();
                self.breaker
                    .record(self.permit, Outcome::Ignored, false, now);
            }
            Some(reason) => self.fail(&reason.classification()),
            None => {
                let now = self.end_time();
                self.breaker
                    .record(self.permit, Outcome::Ignored, false, now);
            }
        }
    }
}

/// What a failure says about the target's health: what its kind says
/// (below), except that a failure after content (phase mid-stream) is
/// not counted with `count_after_content` off.
pub(crate) fn outcome_of(c: &Classification, config: &crate::config::CircuitConfig) -> Outcome {
    match outcome_of_kind(c, config) {
        // The target answered and generated: it is up, whatever broke the
        // stream since (a stall its idle timeout ended, a cut connection).
        Outcome::Failure if c.phase() == Phase::MidStream && !config.count_after_content => {
            Outcome::Answered
        }
        outcome => outcome,
    }
}

fn outcome_of_kind(c: &Classification, config: &crate::config::CircuitConfig) -> Outcome {
    let count_authentication = config.count_authentication_failures;
    if c.kind() == ErrorKind::Overloaded && !config.count_overload {
        // Busy, not down: nothing to say about the target's health.
        return Outcome::Ignored;
    }
    // Read from a 4xx message alone: the status said the request was wrong,
    // and the text may be the caller's (`Classification::may_penalise_target`).
    if !c.may_penalise_target() {
        return match c.kind() {
            kind if kind.is_target_failure() => Outcome::Ignored,
            ErrorKind::Authentication | ErrorKind::RateLimited | ErrorKind::QuotaExhausted => {
                Outcome::Ignored
            }
            _ => Outcome::Success,
        };
    }
    match c.kind() {
        // The target is unwell: overload, server errors, timeouts, connect
        // and transport failures, broken streams (classify's list).
        kind if kind.is_target_failure() => Outcome::Failure,
        ErrorKind::Authentication if count_authentication => Outcome::Failure,
        // Limits, local refusals and failures of unknown origin (a layer
        // below may have made them): not a verdict on the target.
        ErrorKind::RateLimited
        | ErrorKind::QuotaExhausted
        | ErrorKind::CircuitOpen
        | ErrorKind::BudgetExhausted
        | ErrorKind::Cancelled
        | ErrorKind::Unknown => Outcome::Ignored,
        // The target worked; the request was wrong.
        _ => Outcome::Success,
    }
}

pin_project! {
    /// The future of [`Circuit`](crate::Circuit).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Rejected { error: Option<LlmError> },
        Called {
            #[pin]
            future: F,
            guard: Option<PermitGuard>,
            stream_kind: Option<StreamKind>,
            pace: Option<Pace>,
        },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn rejected(error: LlmError) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }

    // Inlined: built in place, the inner future is not copied twice.
    #[inline]
    pub(crate) fn called(
        future: F,
        guard: PermitGuard,
        stream_kind: Option<StreamKind>,
        pace: Pace,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard: Some(guard),
                stream_kind,
                pace: Some(pace),
            },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<LlmError>,
    B: Body,
    B::Error: Classified,
{
    type Output = Result<Response<CircuitBody<B>>, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                LlmError::new(
                    Classification::new(ErrorKind::Unknown)
                        .with_message("circuit future polled after completion"),
                )
            }))),
            KindProj::Called {
                future,
                guard,
                stream_kind,
                pace,
            } => match ready!(future.poll(cx)) {
                Ok(response) => {
                    let (head, body) = response.into_parts();
                    let refused = head.status == http::StatusCode::TOO_MANY_REQUESTS;
                    report_pace(pace, guard, (!refused).then_some(&head.headers));
                    let mut guard = guard.take();
                    if let Some(g) = guard.as_mut() {
                        g.head();
                    }
                    // An error status that reached us as a response (no
                    // Classify below): judge it by its status and headers.
                    if (head.status.is_client_error() || head.status.is_server_error())
                        && let Some(g) = guard.take()
                    {
                        let c = tower_llm_classify::classify_response(
                            tower_llm_classify::Provider::Unknown,
                            head.status,
                            &head.headers,
                            b"",
                            std::time::SystemTime::now(),
                        );
                        g.failed(&c);
                    }
                    if body.is_end_stream()
                        && let Some(g) = guard.take()
                    {
                        g.succeeded();
                    }
                    let first_content = match (&guard, *stream_kind) {
                        (Some(_), Some(kind)) => first_content(&head, kind),
                        _ => FirstContent::NotTimed,
                    };
                    Poll::Ready(Ok(Response::from_parts(
                        head,
                        CircuitBody::new(body, guard, first_content),
                    )))
                }
                Err(error) => {
                    let error: LlmError = error.into();
                    let refused = matches!(
                        error.kind(),
                        ErrorKind::RateLimited | ErrorKind::QuotaExhausted
                    );
                    let head = error.response_head().filter(|_| !refused);
                    report_pace(pace, guard, head.map(|h| &h.headers));
                    if let Some(guard) = guard.take() {
                        guard.failed(error.classification());
                    }
                    Poll::Ready(Err(error))
                }
            },
        }
    }
}

/// A call's answer (its head, or its error's) to its key's pacing: what
/// its rate-limit headers say is left. A rate-limited refusal's headers
/// are left to the breaker (its cooldown follows their wait, capped and
/// switchable by `rate_limit_cooldown`): pacing learns from the answers
/// that were served, and only hands the refused call's reservation back.
fn report_pace(pace: &mut Option<Pace>, guard: &Option<PermitGuard>, headers: Option<&HeaderMap>) {
    if let (Some(pace), Some(guard)) = (pace.take(), guard.as_ref()) {
        let breaker = &guard.breaker;
        pace.answered(breaker.key_str(), headers, || breaker.now());
    }
}

/// How the body of a call timed to its first content learns when the
/// content starts: from the `StreamProgress` Classify publishes when it
/// scans the stream below (the stream is read once), else from a scanner
/// of our own for a stream, else from the first data of a whole answer.
fn first_content(head: &http::response::Parts, (dialect, provider): StreamKind) -> FirstContent {
    use tower_llm_classify::stream::{EventScanner, Framing, StreamProgress};
    if let Some(progress) = head.extensions.get::<StreamProgress>() {
        return FirstContent::Progress(progress.clone());
    }
    match Framing::from_content_type(&head.headers) {
        Some(framing) => {
            FirstContent::Scan(Box::new(EventScanner::new(framing, dialect, provider)))
        }
        None => FirstContent::FirstData,
    }
}
