//! What to retry and how long to wait: pure functions of the
//! classification, the attempt count and the time left.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_llm_classify::{Classification, ErrorKind, Phase};

use crate::backoff::Backoff;
use crate::budget::RetryBudget;

/// A user's say on whether to retry: `Some(decision)` overrides the
/// classification, `None` leaves it to the classification.
pub type RetryPredicate = dyn Fn(&Classification) -> Option<bool> + Send + Sync;

/// Everything the retry layer decides with. Build one with the presets or
/// [`RetryPolicy::builder`]; it is checked when built and shared (in an
/// `Arc`) by every clone of the service.
///
/// | | `sdk_default` | `high_availability` | `cost_sensitive` | `development` |
/// |---|---|---|---|---|
/// | attempts | 3 | 4 | 2 | 2 |
/// | backoff | 0.5 s ×2 ≤ 8 s | 0.25 s ×2 ≤ 4 s | 1 s ×2 ≤ 8 s | constant 100 ms |
/// | longest hint honoured | 60 s | 30 s | 60 s | 5 s |
/// | deadline | none | 120 s | none | 30 s |
/// | budget (ratio, floor) | 10 %, 1/s | 20 %, 2/s | 5 %, 1/s | none |
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_hint: Duration,
    pub(crate) hint_spread: f64,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) min_attempt_time: Duration,
    pub(crate) first_content_guard: bool,
    pub(crate) max_body: usize,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) kind_overrides: [Option<bool>; ErrorKind::ALL.len()],
    pub(crate) predicate: Option<Arc<RetryPredicate>>,
    pub(crate) seed: Option<u64>,
}

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
    /// A builder starting from [`sdk_default`](Self::sdk_default).
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: RetryPolicy::base(),
            budget: Some(BudgetParams::default()),
        }
    }

    /// A builder starting from this policy (sharing its budget, if any).
    pub fn to_builder(&self) -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: self.clone(),
            budget: None,
        }
    }

    fn base() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::default(),
            max_hint: Duration::from_secs(60),
            hint_spread: 1.5,
            deadline: None,
            attempt_timeout: None,
            min_attempt_time: Duration::from_millis(500),
            first_content_guard: true,
            max_body: 32 * 1024 * 1024,
            budget: None,
            kind_overrides: [None; ErrorKind::ALL.len()],
            predicate: None,
            seed: None,
        }
    }

    /// The official SDKs' behaviour, so users switching from them see the
    /// same pacing: 3 attempts in all, 0.5 s doubling to 8 s (full jitter
    /// instead of their ×(1 − 0.25·U)), hints honoured up to 60 s
    /// (anthropic-python, openai-node), plus what they lack: a 10 % budget
    /// and the first-content guard.
    pub fn sdk_default() -> RetryPolicy {
        RetryPolicy::builder()
            .build()
            .unwrap_or_else(|_| RetryPolicy::base())
    }

    /// For a gateway that must answer: one more attempt, faster backoff,
    /// a 2-minute deadline, hints above 30 s left to a fallback, and a
    /// larger budget (20 %, at least 2/s; Finagle's ratio).
    pub fn high_availability() -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(4)
            .backoff(Backoff::exponential(
                Duration::from_millis(250),
                Duration::from_secs(4),
            ))
            .max_hint(Duration::from_secs(30))
            .deadline(Duration::from_secs(120))
            .budget(Duration::from_secs(10), 2, 0.2)
            .build()
            .unwrap_or_else(|_| RetryPolicy::base())
    }

    /// When every attempt costs money (a retried generation is billed
    /// again; no SDK sends an idempotency key, PROVIDERS.md §0 fact 10):
    /// one retry, slower backoff, a 5 % budget.
    pub fn cost_sensitive() -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(2)
            .backoff(Backoff::exponential(
                Duration::from_secs(1),
                Duration::from_secs(8),
            ))
            .budget(Duration::from_secs(10), 1, 0.05)
            .build()
            .unwrap_or_else(|_| RetryPolicy::base())
    }

    /// For local work against a simulator or Ollama: fail fast and
    /// visibly: one quick retry, short hints only, a 30 s deadline, no budget.
    pub fn development() -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(2)
            .backoff(Backoff::constant(Duration::from_millis(100)))
            .max_hint(Duration::from_secs(5))
            .deadline(Duration::from_secs(30))
            .no_budget()
            .build()
            .unwrap_or_else(|_| RetryPolicy::base())
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff used when the server gives no hint.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The longest server hint honoured; longer ones end the retrying.
    pub fn max_hint(&self) -> Duration {
        self.max_hint
    }

    /// The deadline over all attempts and waits, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The limit on one attempt (to the response head, and for streams to
    /// the first content), if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The shared retry budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// This policy with a budget of its own (same parameters, empty), for
    /// a second service that must not share the first one's: in a fallback,
    /// a dead primary spending the budget would otherwise leave the backup
    /// without retries.
    pub fn with_own_budget(&self) -> RetryPolicy {
        let mut policy = self.clone();
        policy.budget = self.budget.as_ref().map(|b| Arc::new(b.fresh()));
        policy
    }

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
            return Decision::GiveUp(GiveUp::NotRetryable);
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

fn round_up_to_millis(d: Duration) -> Duration {
    let sub = d.subsec_nanos() % 1_000_000;
    if sub == 0 {
        d
    } else {
        d.saturating_add(Duration::from_nanos(u64::from(1_000_000 - sub)))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::sdk_default()
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_hint", &self.max_hint)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("min_attempt_time", &self.min_attempt_time)
            .field("first_content_guard", &self.first_content_guard)
            .field("max_body", &self.max_body)
            .field("budget", &self.budget.as_ref().map(|b| b.remaining()))
            .field("predicate", &self.predicate.as_ref().map(|_| "fn"))
            .finish_non_exhaustive()
    }
}

/// The budget's settings until the policy is built.
#[derive(Clone, Copy, Debug)]
struct BudgetParams {
    ttl: Duration,
    min_per_second: u32,
    ratio: f64,
}

impl Default for BudgetParams {
    fn default() -> Self {
        BudgetParams {
            ttl: Duration::from_secs(10),
            min_per_second: 1,
            ratio: 0.1,
        }
    }
}

/// A retry policy that does not hold together, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry policy: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Builds a [`RetryPolicy`]; [`build`](Self::build) checks it.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_classify::ErrorKind;
/// use tower_llm_retry::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(4)
///     .backoff(Backoff::exponential(Duration::from_millis(200), Duration::from_secs(5)))
///     .deadline(Duration::from_secs(60))
///     .attempt_timeout(Duration::from_secs(20))
///     .retry_kind(ErrorKind::RateLimited, false) // leave 429s to a fallback
///     .build()?;
/// assert_eq!(policy.max_attempts(), 4);
///
/// // A per-attempt timeout longer than the deadline cannot work.
/// let impossible = RetryPolicy::builder()
///     .deadline(Duration::from_secs(10))
///     .attempt_timeout(Duration::from_secs(30))
///     .build();
/// assert!(impossible.is_err());
/// # Ok::<(), tower_llm_retry::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
    budget: Option<BudgetParams>,
}

impl RetryPolicyBuilder {
    pub(crate) fn backoff_ref(&self) -> &Backoff {
        &self.policy.backoff
    }

    /// Attempts in all, the first included (at least 1; 1 disables retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts;
        self
    }

    /// The backoff used when the server gives no hint.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// The longest server hint honoured (60 s by default); a longer one
    /// ends the retrying at once, hint kept in the error, so a fallback can
    /// route elsewhere instead of sleeping.
    pub fn max_hint(mut self, max_hint: Duration) -> Self {
        self.policy.max_hint = max_hint;
        self
    }

    /// A deadline over all attempts and waits. An attempt it ends counts
    /// as a timeout for a circuit breaker below. `Duration::MAX` (or any
    /// deadline past the clock's range) is no deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = Some(deadline);
        self
    }

    /// A limit on each attempt: to the response head, and for a guarded
    /// stream to its first content event. An attempt it ends counts as a
    /// timeout for a circuit breaker below (see
    /// [`AttemptEnd`](tower_llm_classify::AttemptEnd)). `Duration::MAX`
    /// (or any limit past the clock's range) is no limit.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout = Some(timeout);
        self
    }

    /// Without an attempt timeout, the least time an attempt must have left
    /// before the deadline for a retry to start (500 ms by default): a
    /// request sent with a millisecond to go only costs money.
    pub fn min_attempt_time(mut self, time: Duration) -> Self {
        self.policy.min_attempt_time = time;
        self
    }

    /// Whether a 2xx is held back until nothing that fails can have reached
    /// the caller (on by default): a stream until its first content event,
    /// so that an error as the first event is retried invisibly; a whole
    /// JSON answer until its end (up to 4 MiB), so that a body cut midway
    /// is retried too. Other bodies (audio, files) pass as they come.
    pub fn first_content_guard(mut self, on: bool) -> Self {
        self.policy.first_content_guard = on;
        self
    }

    /// The largest request body kept for replay (32 MiB by default).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.policy.max_body = bytes;
        self
    }

    /// A budget over `ttl` of `ratio` retries per request, and at least
    /// `min_per_second` (default: 10 s, 1/s, 0.1). See [`RetryBudget`].
    pub fn budget(mut self, ttl: Duration, min_per_second: u32, ratio: f64) -> Self {
        self.budget = Some(BudgetParams {
            ttl,
            min_per_second,
            ratio,
        });
        self
    }

    /// Shares an existing budget (for example across several targets).
    pub fn shared_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.policy.budget = Some(budget);
        self.budget = None;
        self
    }

    /// No budget at all (not recommended: an outage multiplies the load).
    pub fn no_budget(mut self) -> Self {
        self.policy.budget = None;
        self.budget = None;
        self
    }

    /// Retries failures of `kind` (`true`) or never does (`false`),
    /// whatever the classification says. Content already delivered is
    /// never retried.
    pub fn retry_kind(mut self, kind: ErrorKind, retry: bool) -> Self {
        if let Some(index) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.policy.kind_overrides[index] = Some(retry);
        }
        self
    }

    /// A predicate consulted first: `Some(decision)` decides, `None` falls
    /// through to the kind overrides and the classification.
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&Classification) -> Option<bool> + Send + Sync + 'static,
    ) -> Self {
        self.policy.predicate = Some(Arc::new(predicate));
        self
    }

    /// Seeds the jitter, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.policy.seed = Some(seed);
        self
    }

    /// Checks the policy and makes its budget.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        let mut policy = self.policy;
        if policy.max_attempts == 0 {
            return Err(ConfigError("max_attempts must be at least 1".into()));
        }
        policy.backoff.validate().map_err(ConfigError)?;
        if let (Some(deadline), Some(attempt)) = (policy.deadline, policy.attempt_timeout) {
            if attempt > deadline {
                return Err(ConfigError(format!(
                    "attempt timeout ({attempt:?}) is longer than the deadline ({deadline:?}): no attempt could use it"
                )));
            }
            if attempt == deadline && policy.max_attempts > 1 {
                return Err(ConfigError(format!(
                    "attempt timeout equals the deadline ({deadline:?}): no retry could ever start; lower the attempt timeout or set max_attempts to 1"
                )));
            }
        }
        if policy.deadline.is_some_and(|d| d.is_zero())
            || policy.attempt_timeout.is_some_and(|d| d.is_zero())
        {
            return Err(ConfigError(
                "deadline and attempt timeout must be longer than zero".into(),
            ));
        }
        if let Some(settings) = self.budget {
            let budget = RetryBudget::new(settings.ttl, settings.min_per_second, settings.ratio)
                .map_err(ConfigError)?;
            policy.budget = Some(Arc::new(budget));
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use tower_llm_classify::hint::{Hint, HintSource};

    fn failure(kind: ErrorKind) -> Classification {
        Classification::new(kind).with_phase(Phase::BeforeHeaders)
    }

    fn hinted(kind: ErrorKind, secs: u64) -> Classification {
        failure(kind).with_hint(Some(Hint {
            delay: Duration::from_secs(secs),
            source: HintSource::RetryAfter,
        }))
    }

    #[test]
    fn a_policy_with_its_own_budget_does_not_spend_the_original_one() {
        let shared = RetryPolicy::sdk_default();
        let own = shared.with_own_budget();
        let (Some(a), Some(b)) = (shared.budget(), own.budget()) else {
            panic!("sdk_default has a budget");
        };
        assert!(!Arc::ptr_eq(a, b));
        let before = a.remaining();
        while b.withdraw() {}
        assert_eq!(a.remaining(), before, "the original budget is untouched");
        assert_eq!(b.remaining(), 0);
        assert!(
            RetryPolicy::sdk_default()
                .to_builder()
                .no_budget()
                .build()
                .unwrap()
                .with_own_budget()
                .budget()
                .is_none()
        );
    }

    #[test]
    fn transient_kinds_are_retried_and_permanent_ones_never() {
        let policy = RetryPolicy::sdk_default();
        for kind in ErrorKind::ALL {
            let expected = matches!(
                kind,
                ErrorKind::RateLimited
                    | ErrorKind::Overloaded
                    | ErrorKind::ServerError
                    | ErrorKind::Timeout
                    | ErrorKind::Connect
                    | ErrorKind::Transport
                    | ErrorKind::Conflict
                    | ErrorKind::StreamIncomplete
            );
            assert_eq!(policy.is_retryable(&failure(kind)), expected, "{kind}");
        }
    }

    #[test]
    fn content_already_delivered_is_never_retried_whatever_the_overrides() {
        let policy = RetryPolicy::builder()
            .retry_kind(ErrorKind::Transport, true)
            .retry_if(|_| Some(true))
            .build()
            .unwrap();
        let c = Classification::new(ErrorKind::Transport).with_phase(Phase::MidStream);
        assert!(!policy.is_retryable(&c));
    }

    #[test]
    fn x_should_retry_overrides_the_status() {
        let policy = RetryPolicy::sdk_default();
        let c = failure(ErrorKind::ServerError)
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .with_retryable(false);
        assert_eq!(
            policy.decide(&c, 1, Duration::ZERO, None, 0.5),
            Decision::GiveUp(GiveUp::NotRetryable)
        );
        let c = failure(ErrorKind::InvalidRequest).with_retryable(true);
        assert!(matches!(
            policy.decide(&c, 1, Duration::ZERO, None, 0.5),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn user_overrides_come_first() {
        let policy = RetryPolicy::builder()
            .retry_kind(ErrorKind::RateLimited, false)
            .retry_if(|c| (c.kind() == ErrorKind::QuotaExhausted).then_some(true))
            .build()
            .unwrap();
        assert!(!policy.is_retryable(&failure(ErrorKind::RateLimited)));
        assert!(policy.is_retryable(&failure(ErrorKind::QuotaExhausted)));
        assert!(policy.is_retryable(&failure(ErrorKind::Overloaded)));
    }

    #[test]
    fn a_hint_sets_the_wait_between_itself_and_half_again() {
        let policy = RetryPolicy::sdk_default();
        let c = hinted(ErrorKind::RateLimited, 2);
        assert_eq!(
            policy.decide(&c, 1, Duration::ZERO, None, 0.0),
            Decision::Retry {
                delay: Duration::from_secs(2),
                hinted: true
            }
        );
        assert_eq!(
            policy.decide(&c, 1, Duration::ZERO, None, 1.0),
            Decision::Retry {
                delay: Duration::from_secs(3),
                hinted: true
            }
        );
    }

    #[test]
    fn x_should_retry_false_outranks_a_kind_override() {
        let policy = RetryPolicy::builder()
            .retry_kind(ErrorKind::Overloaded, true)
            .build()
            .unwrap();
        let c = failure(ErrorKind::Overloaded).with_retryable(false);
        assert!(!policy.is_retryable(&c));
        let policy = RetryPolicy::builder()
            .retry_kind(ErrorKind::Overloaded, false)
            .build()
            .unwrap();
        assert!(!policy.is_retryable(&failure(ErrorKind::Overloaded)));
    }

    #[test]
    fn the_spread_never_pushes_a_hint_that_fits_past_the_deadline() {
        let policy = RetryPolicy::builder()
            .attempt_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let c = hinted(ErrorKind::RateLimited, 10);
        // 10 s hint, 10 s attempt, 21 s left: the hint fits, 1.5x would not.
        match policy.decide(&c, 1, Duration::ZERO, Some(Duration::from_secs(21)), 0.99) {
            Decision::Retry { delay, .. } => {
                assert!(
                    delay >= Duration::from_secs(10) && delay < Duration::from_secs(11),
                    "{delay:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_an_attempt_timeout_a_retry_needs_the_minimum_attempt_time_left() {
        let policy = RetryPolicy::builder().build().unwrap();
        let c = hinted(ErrorKind::RateLimited, 1);
        let left = |ms| Some(Duration::from_millis(ms));
        assert_eq!(
            policy.decide(&c, 1, Duration::ZERO, left(1400), 0.0),
            Decision::GiveUp(GiveUp::Deadline)
        );
        assert!(matches!(
            policy.decide(&c, 1, Duration::ZERO, left(1600), 0.0),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn odd_inputs_to_decide_do_not_panic() {
        let policy = RetryPolicy::builder()
            .max_hint(Duration::MAX)
            .build()
            .unwrap();
        let huge = failure(ErrorKind::RateLimited).with_hint(Some(Hint {
            delay: Duration::MAX,
            source: HintSource::RetryAfter,
        }));
        for u in [f64::NAN, f64::INFINITY, -1.0, 2.0] {
            let _ = policy.decide(&huge, 1, Duration::ZERO, None, u);
            let _ = policy.decide(
                &failure(ErrorKind::Overloaded),
                0,
                Duration::MAX,
                Some(Duration::ZERO),
                u,
            );
        }
    }

    #[test]
    fn the_spread_never_sleeps_past_max_hint() {
        let policy = RetryPolicy::sdk_default();
        assert_eq!(policy.max_hint(), Duration::from_secs(60));
        let c = hinted(ErrorKind::RateLimited, 60);
        for u in [0.0, 0.5, 0.999, 1.0] {
            match policy.decide(&c, 1, Duration::ZERO, None, u) {
                Decision::Retry { delay, hinted } => {
                    assert!(hinted);
                    assert_eq!(delay, Duration::from_secs(60), "u = {u}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Below the ceiling the spread still applies, up to the ceiling.
        let c = hinted(ErrorKind::RateLimited, 50);
        match policy.decide(&c, 1, Duration::ZERO, None, 1.0) {
            Decision::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_retry_after_beyond_two_days_gives_up_at_once_instead_of_backing_off() {
        let mut headers = http::HeaderMap::new();
        headers.insert("retry-after", http::HeaderValue::from_static("99999999999"));
        let c = tower_llm_classify::classify_response(
            tower_llm_classify::Provider::OpenAi,
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            b"",
            std::time::SystemTime::now(),
        );
        assert_eq!(c.retry_after(), Some(tower_llm_classify::hint::MAX_HINT));
        assert_eq!(
            RetryPolicy::sdk_default().decide(&c, 1, Duration::ZERO, None, 0.5),
            Decision::GiveUp(GiveUp::HintTooLong)
        );
    }

    #[test]
    fn a_hint_over_the_ceiling_gives_up_at_once() {
        let policy = RetryPolicy::sdk_default();
        let c = hinted(ErrorKind::RateLimited, 61);
        assert_eq!(
            policy.decide(&c, 1, Duration::ZERO, None, 0.5),
            Decision::GiveUp(GiveUp::HintTooLong)
        );
    }

    #[test]
    fn a_wait_that_does_not_fit_the_deadline_gives_up() {
        let policy = RetryPolicy::builder()
            .deadline(Duration::from_secs(30))
            .attempt_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let c = hinted(ErrorKind::RateLimited, 5);
        assert_eq!(
            policy.decide(&c, 1, Duration::ZERO, Some(Duration::from_secs(14)), 0.0),
            Decision::GiveUp(GiveUp::Deadline)
        );
        assert!(matches!(
            policy.decide(&c, 1, Duration::ZERO, Some(Duration::from_secs(16)), 0.0),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn attempts_run_out() {
        let policy = RetryPolicy::sdk_default();
        let c = failure(ErrorKind::Overloaded);
        assert!(matches!(
            policy.decide(&c, 2, Duration::ZERO, None, 0.5),
            Decision::Retry { .. }
        ));
        assert_eq!(
            policy.decide(&c, 3, Duration::ZERO, None, 0.5),
            Decision::GiveUp(GiveUp::AttemptsExhausted)
        );
    }

    #[test]
    fn impossible_policies_fail_to_build() {
        assert!(RetryPolicy::builder().max_attempts(0).build().is_err());
        assert!(
            RetryPolicy::builder()
                .deadline(Duration::from_secs(5))
                .attempt_timeout(Duration::from_secs(6))
                .build()
                .is_err()
        );
        assert!(
            RetryPolicy::builder()
                .deadline(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            RetryPolicy::builder()
                .budget(Duration::ZERO, 1, 0.1)
                .build()
                .is_err()
        );
        let err = RetryPolicy::builder()
            .backoff(Backoff::default().with_multiplier(f64::INFINITY))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("multiplier"), "{err}");
    }

    #[test]
    fn every_preset_builds_as_documented() {
        assert_eq!(RetryPolicy::sdk_default().max_attempts(), 3);
        assert_eq!(RetryPolicy::high_availability().max_attempts(), 4);
        assert_eq!(
            RetryPolicy::high_availability().deadline(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(RetryPolicy::cost_sensitive().max_attempts(), 2);
        assert!(RetryPolicy::development().budget().is_none());
        assert!(RetryPolicy::sdk_default().budget().is_some());
    }
}
