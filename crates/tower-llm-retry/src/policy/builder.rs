//! Building a policy: its builder, the checks `build` makes, and their
//! error.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_llm_classify::{Classification, ErrorKind};

use super::RetryPolicy;
use crate::backoff::Backoff;
use crate::budget::RetryBudget;

/// The budget's settings until the policy is built.
#[derive(Clone, Copy, Debug)]
pub(super) struct BudgetParams {
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
    pub(super) policy: RetryPolicy,
    pub(super) budget: Option<BudgetParams>,
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

    /// A limit on each attempt: to the response head, for a guarded
    /// stream to its first content event, and for a whole JSON answer the
    /// guard holds back, to its end. An attempt it ends before its head (or
    /// a stream before its first content) counts as a timeout for a circuit
    /// breaker below (see [`AttemptEnd`](tower_llm_classify::AttemptEnd)),
    /// so set it above the slowest answer a caller may legitimately ask for.
    /// `Duration::MAX` (or any limit past the clock's range) is no limit.
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
