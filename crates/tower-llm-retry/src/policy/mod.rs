//! What to retry and how long to wait: the policy's rules and presets
//! (here), the decision after a failed attempt (`decision`), and the
//! builder that checks a policy (`builder`).

mod builder;
mod decision;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_llm_classify::{Classification, ErrorKind};

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use builder::BudgetParams;
pub use builder::{ConfigError, RetryPolicyBuilder};
pub use decision::{Decision, GiveUp};

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
///
/// None of these presets sets a per-attempt timeout: the layer alone does
/// not know what it is called for. `tower_llm`'s stack presets add them
/// (a short wait for a stream's head, the SDKs' ten minutes for a whole
/// answer) and leave a silent target to the next one.
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_hint: Duration,
    pub(crate) hint_spread: f64,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) stream_head_timeout: Option<Duration>,
    pub(crate) first_content_timeout: Option<Duration>,
    pub(crate) retry_on_silence: bool,
    pub(crate) min_attempt_time: Duration,
    pub(crate) first_content_guard: bool,
    pub(crate) max_body: usize,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) refund_successful_retries: bool,
    pub(crate) kind_overrides: [Option<bool>; ErrorKind::ALL.len()],
    pub(crate) predicate: Option<Arc<RetryPredicate>>,
    pub(crate) seed: Option<u64>,
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
            stream_head_timeout: None,
            first_content_timeout: None,
            retry_on_silence: true,
            min_attempt_time: Duration::from_millis(500),
            first_content_guard: true,
            max_body: 32 * 1024 * 1024,
            budget: None,
            refund_successful_retries: true,
            kind_overrides: [None; ErrorKind::ALL.len()],
            predicate: None,
            seed: None,
        }
    }

    /// The official SDKs' behaviour, so users switching from them see the
    /// same pacing: 3 attempts in all, 0.5 s doubling to 8 s (full jitter
    /// instead of their ×(1 − 0.25·U)), hints honoured up to 60 s
    /// (anthropic-python, openai-node), plus what they lack: a 10 % budget
    /// (successful retries given back) and the first-content guard.
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
    /// again): one retry, slower backoff, a 5 % budget.
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

    /// The limit on a streamed request's wait for its response head, if
    /// any.
    pub fn stream_head_timeout(&self) -> Option<Duration> {
        self.stream_head_timeout
    }

    /// The limit on a streamed request's wait for its first content, if
    /// any.
    pub fn first_content_timeout(&self) -> Option<Duration> {
        self.first_content_timeout
    }

    /// Whether a target that stayed silent (no head, or no first content,
    /// in time) is tried again.
    pub fn retry_on_silence(&self) -> bool {
        self.retry_on_silence
    }

    /// The shared retry budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// Whether a retry that succeeds gives its withdrawal back to the
    /// budget (see
    /// [`refund_successful_retries`](RetryPolicyBuilder::refund_successful_retries)).
    pub fn refunds_successful_retries(&self) -> bool {
        self.refund_successful_retries
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
            .field("stream_head_timeout", &self.stream_head_timeout)
            .field("first_content_timeout", &self.first_content_timeout)
            .field("retry_on_silence", &self.retry_on_silence)
            .field("min_attempt_time", &self.min_attempt_time)
            .field("first_content_guard", &self.first_content_guard)
            .field("max_body", &self.max_body)
            .field("budget", &self.budget.as_ref().map(|b| b.remaining()))
            .field("refund_successful_retries", &self.refund_successful_retries)
            .field("predicate", &self.predicate.as_ref().map(|_| "fn"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
