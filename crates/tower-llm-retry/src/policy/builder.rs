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

    /// The budget this builder would make or keep, as (ttl, floor per
    /// second, ratio); the default budget's when it has none.
    pub(crate) fn budget_params(&self) -> (Duration, u32, f64) {
        let params = match (&self.budget, &self.policy.budget) {
            (Some(params), _) => *params,
            (None, Some(budget)) => BudgetParams {
                ttl: budget.ttl(),
                min_per_second: budget.min_per_second(),
                ratio: budget.ratio(),
            },
            (None, None) => BudgetParams::default(),
        };
        (params.ttl, params.min_per_second, params.ratio)
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
    /// A streamed request may have earlier limits within it: the
    /// [stream head](Self::stream_head_timeout) and
    /// [first-content](Self::first_content_timeout) timeouts.
    /// `Duration::MAX` (or any limit past the clock's range) is no limit.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout = Some(timeout);
        self
    }

    /// A limit on a streamed request's wait for its response head (the
    /// request asks for a stream: [`RequestMeta`]'s `stream`), counted from
    /// the start of the attempt; requests that do not stream are not
    /// affected. Providers send a stream's head as soon as they accept the
    /// request, before generating anything, so this can be short where a
    /// whole answer's head (sent only when generation ends, minutes for a
    /// long output) needs the [`attempt_timeout`](Self::attempt_timeout)'s
    /// long limit. An attempt it ends counts as a timeout for a circuit
    /// breaker below. `Duration::MAX` is no limit.
    ///
    /// [`RequestMeta`]: tower_llm_classify::RequestMeta
    pub fn stream_head_timeout(mut self, timeout: Duration) -> Self {
        self.policy.stream_head_timeout = Some(timeout);
        self
    }

    /// A limit on a streamed request's wait for its first content event
    /// (text, a tool call; not pings, comments or a role-only chunk),
    /// counted from the start of the attempt, head included; requests that
    /// do not stream are not affected. It needs the
    /// [first-content guard](Self::first_content_guard), which holds the
    /// stream back until then. Reasoning models may think for minutes
    /// before their first token (OpenAI's background-mode guide: "reasoning
    /// models can take several minutes to solve complex problems"), so set
    /// it only where the models served answer sooner; LiteLLM's
    /// `stream_timeout` is the same limit. An attempt it ends counts as a
    /// timeout for a circuit breaker below. `Duration::MAX` is no limit.
    pub fn first_content_timeout(mut self, timeout: Duration) -> Self {
        self.policy.first_content_timeout = Some(timeout);
        self
    }

    /// Whether a target that stayed silent is tried again (default true):
    /// an attempt that timed out before its response head or, for a
    /// stream, before its first content, with nothing from the target to
    /// say why (no status, no error code; this layer's timers, the client's,
    /// Classify's idle timeout). Turn it off below a fallback that has
    /// another target to go to: a silent target is usually silent again
    /// (a hung connection, a stuck deployment), and each attempt on it
    /// costs the whole timeout. The failure is then returned at once,
    /// given up as [`GiveUp::Silent`](crate::GiveUp::Silent).
    ///
    /// A call the stack refused itself (phase `Local`: its adaptive
    /// concurrency limit had no room in time, or its rate-limit cooldown or
    /// pacing said to wait) is left to the fallback the same way
    /// ([`GiveUp::LocallyShed`](crate::GiveUp::LocallyShed)): the next
    /// target may have room now, where this one's queue or wait would be
    /// sat out again. On a route's last target it is retried after the
    /// backoff or the wait, as the target's own answer would be.
    pub fn retry_on_silence(mut self, retry: bool) -> Self {
        self.policy.retry_on_silence = retry;
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

    /// Whether a retry that succeeds gives its withdrawal back to the
    /// budget (on by default), as the AWS SDKs' retry quota does: a
    /// successful retry refunds its cost, a failed one loses it (botocore
    /// `retries/quota.py` and `standard.py`, `release_retry_quota`;
    /// aws-sdk-go-v2 `aws/retry/standard.go`).
    ///
    /// The budget then counts the retries that failed (and those in
    /// flight), which is what tells random failures from an outage. In an
    /// outage no retry succeeds, nothing is given back, and the budget
    /// bounds the load exactly as without refunds (1 + ratio). Under random
    /// failures at a rate p with 3 attempts, a request retries p + p² times
    /// on average but only p² + p³ of those fail: 6 % at p = 0.22 and 12 %
    /// at p = 0.3, where the budget would otherwise be spent at 27 % and
    /// 39 %. Measured through the layer (`tests/properties.rs`, 100
    /// requests/s): the default 10 % budget retries 22 % of random failures
    /// in full; 30 % needs a 15 % ratio over a 30 s window, so that chance
    /// bunching of failures does not spend a short window.
    ///
    /// A retry is drawn from the budget when it is sent, not when it is
    /// decided, so waiting out a backoff or a `retry-after` holds nothing
    /// (the budget is still asked at the decision, and an empty one ends
    /// the call at once; one that empties while the retry waits ends it
    /// when the wait is over, with `BudgetExhausted` and the previous
    /// failure: under a storm, concurrent retries that all found room at
    /// their decision may wait out their backoff and then find none, since
    /// nothing is reserved). A retry the caller cancels after it was sent
    /// stays spent: the upstream had it, and giving it back would let
    /// callers that time out during an outage retry without bound.
    ///
    /// What it gives up: where retries do succeed, their number is bounded
    /// by the attempts, not by the ratio, until their failures alone spend
    /// the budget (p² + p³ > ratio: p ≈ 27 % at a 10 % ratio). A target
    /// shedding a quarter of its calls under overload therefore gets up to
    /// 1.3× its load instead of 1.1×; an adaptive concurrency limit or a
    /// circuit breaker is the tool for overload. Turn refunds off to cap
    /// every retry at the ratio.
    pub fn refund_successful_retries(mut self, refund: bool) -> Self {
        self.policy.refund_successful_retries = refund;
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
        if policy.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError("deadline must be longer than zero".into()));
        }
        let limits = [
            ("attempt timeout", policy.attempt_timeout),
            ("stream head timeout", policy.stream_head_timeout),
            ("first-content timeout", policy.first_content_timeout),
        ];
        for (name, limit) in limits {
            let Some(limit) = limit else { continue };
            if limit.is_zero() {
                return Err(ConfigError(format!("{name} must be longer than zero")));
            }
            let Some(deadline) = policy.deadline else {
                continue;
            };
            if limit > deadline {
                return Err(ConfigError(format!(
                    "{name} ({limit:?}) is longer than the deadline ({deadline:?}): no attempt could use it"
                )));
            }
            if limit == deadline && policy.max_attempts > 1 {
                return Err(ConfigError(format!(
                    "{name} equals the deadline ({deadline:?}): no retry could ever start; lower the {name} or set max_attempts to 1"
                )));
            }
        }
        if policy.first_content_timeout.is_some() && !policy.first_content_guard {
            return Err(ConfigError(
                "first-content timeout needs the first-content guard: without it a stream is handed over at its head"
                    .into(),
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
