//! What to do after a failed attempt: retry after a wait, or give up and
//! why. Pure functions of the classification, the attempt count and the
//! time left.

use std::fmt;
use std::time::Duration;

use tower_llm_classify::{Classification, ErrorKind, Phase};

use super::RetryPolicy;

/// Why the layer stopped retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUp {
    /// The failure is not one a retry can fix (or content already reached the caller).
    NotRetryable,
    /// Every attempt allowed was made.
    AttemptsExhausted,
    /// The server asked for a longer wait than the policy honours.
    HintTooLong,
    /// The wait plus another attempt would not fit in the deadline.
    Deadline,
    /// The retry budget is empty.
    BudgetExhausted,
    /// The target stayed silent (no response head, or no first content, in
    /// time) and the policy leaves a silent target to a fallback
    /// ([`retry_on_silence(false)`](crate::RetryPolicyBuilder::retry_on_silence)).
    Silent,
    /// The stack refused the call itself, for the key's capacity now (its
    /// adaptive concurrency limit could not place it in time, or its
    /// rate-limit cooldown or pacing said to wait: a local refusal, not
    /// the target's answer), and the policy leaves it to a fallback, as it
    /// leaves silence
    /// ([`retry_on_silence(false)`](crate::RetryPolicyBuilder::retry_on_silence)).
    LocallyShed,
}

impl GiveUp {
    /// A stable snake_case name (for logs and metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUp::NotRetryable => "not_retryable",
            GiveUp::AttemptsExhausted => "attempts_exhausted",
            GiveUp::HintTooLong => "hint_too_long",
            GiveUp::Deadline => "deadline",
            GiveUp::BudgetExhausted => "budget_exhausted",
            GiveUp::Silent => "silent",
            GiveUp::LocallyShed => "locally_shed",
        }
    }
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry {
        /// The wait.
        delay: Duration,
        /// Whether it came from the server's hint rather than the backoff.
        hinted: bool,
    },
    /// Return the error.
    GiveUp(GiveUp),
}

impl RetryPolicy {
    /// Whether a failure of this classification may be retried at all.
    pub fn is_retryable(&self, c: &Classification) -> bool {
        // Content reached the caller: a replay would show it twice. No
        // override can change that.
        if c.phase() == Phase::MidStream {
            return false;
        }
        if let Some(predicate) = &self.predicate
            && let Some(decision) = predicate(c)
        {
            return decision;
        }
        if self.leaves_silence_to_fallback(c) {
            return false;
        }
        // The server's own `x-should-retry` outranks a per-kind rule: a 529
        // that says "don't retry" is not retried.
        if c.retry_override().is_none()
            && let Some(index) = ErrorKind::ALL.iter().position(|k| *k == c.kind())
            && let Some(decision) = self.kind_overrides[index]
        {
            return decision;
        }
        c.retryable()
    }

    /// The decision after attempt number `attempts` (1 for the first) failed
    /// with `c`: `previous` is the last wait (for decorrelated jitter),
    /// `remaining` the time left before the deadline, `u` a uniform draw in
    /// `[0, 1)`. The budget is not consulted here.
    pub fn decide(
        &self,
        c: &Classification,
        attempts: u32,
        previous: Duration,
        remaining: Option<Duration>,
        u: f64,
    ) -> Decision {
        if !self.is_retryable(c) {
            return Decision::GiveUp(if !self.leaves_silence_to_fallback(c) {
                GiveUp::NotRetryable
            } else if is_local_shed(c) {
                GiveUp::LocallyShed
            } else {
                GiveUp::Silent
            });
        }
        if attempts >= self.max_attempts {
            return Decision::GiveUp(GiveUp::AttemptsExhausted);
        }
        let u = if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // An attempt may take up to its timeout (or, without one, at least
        // the minimum attempt time): only start one that has that much left
        // after the wait.
        let attempt = self.attempt_timeout.unwrap_or(self.min_attempt_time);
        let room = remaining.map(|r| r.saturating_sub(attempt));
        let (delay, hinted) = match c.retry_after() {
            Some(hint) if hint > self.max_hint => return Decision::GiveUp(GiveUp::HintTooLong),
            Some(hint) if room.is_some_and(|room| round_up_to_millis(hint) >= room) => {
                return Decision::GiveUp(GiveUp::Deadline);
            }
            // Envoy's rule: at least the hint, at most 1.5× it, so a fleet
            // told the same instant does not come back in lockstep; the
            // spread never pushes a hint that fits out of the deadline, nor
            // the wait past `max_hint` (a 60 s hint must not sleep 90 s).
            Some(hint) => {
                let spread =
                    Duration::try_from_secs_f64(hint.as_secs_f64() * (self.hint_spread - 1.0) * u)
                        .unwrap_or(Duration::ZERO);
                let mut delay = hint.saturating_add(spread).min(self.max_hint);
                if let Some(room) = room {
                    delay = delay.min(room.saturating_sub(Duration::from_millis(1)));
                }
                (delay.max(hint), true)
            }
            None => (
                self.backoff.delay(attempts.saturating_sub(1), previous, u),
                false,
            ),
        };
        // Tokio's timer has millisecond resolution: round up, so the time
        // reported as slept is the time that passed, and never below a hint.
        let delay = round_up_to_millis(delay);
        if room.is_some_and(|room| delay >= room) {
            return Decision::GiveUp(GiveUp::Deadline);
        }
        Decision::Retry { delay, hinted }
    }
}

impl RetryPolicy {
    /// Whether `c` is a silence, or a local refusal, this policy does not
    /// retry: both say "this target cannot take the call now", which the
    /// next target of a route may.
    fn leaves_silence_to_fallback(&self, c: &Classification) -> bool {
        !self.retry_on_silence && (is_silence(c) || is_local_shed(c))
    }
}

/// Whether `c` is a call the stack refused itself for the key's capacity
/// now: its adaptive concurrency limit had no room in time (overloaded),
/// or its rate-limit cooldown or pacing said to wait (rate limited), both
/// decided locally. The target's own answers have a status or an in-band
/// phase. The next target may take such a call at once, where waiting here
/// would release every waiter on this key together when the wait ends.
pub(crate) fn is_local_shed(c: &Classification) -> bool {
    matches!(c.kind(), ErrorKind::Overloaded | ErrorKind::RateLimited) && c.phase() == Phase::Local
}

/// Whether `c` says the target stayed silent: a timeout before any content
/// with nothing from the target to say why — no status, no provider error
/// code (a 504 or an in-band `timeout_error` is the target speaking).
pub(crate) fn is_silence(c: &Classification) -> bool {
    c.kind() == ErrorKind::Timeout
        && c.status().is_none()
        && c.code().is_none()
        && matches!(
            c.phase(),
            Phase::Connect | Phase::BeforeHeaders | Phase::AfterHeaders
        )
}

fn round_up_to_millis(d: Duration) -> Duration {
    let sub = d.subsec_nanos() % 1_000_000;
    if sub == 0 {
        d
    } else {
        d.saturating_add(Duration::from_nanos(u64::from(1_000_000 - sub)))
    }
}
