//! What the layer tells about its work: the [`RetryStats`] extension,
//! tracing events and (with the `metrics` feature) counters.

use std::time::Duration;

use http::Response;
use tower_llm_classify::{Classification, LlmError};

use crate::policy::GiveUp;

/// The tracing target of every event of this crate.
pub const TRACING_TARGET: &str = "tower_llm::retry";

/// How a call went through the retry layer: in the final error's
/// extensions ([`LlmError::extensions`]) always, and in the response's when
/// it took more than one attempt. A response that succeeded at once carries
/// none (an extension costs an allocation on every call):
/// [`RetryStats::of`] reads either case.
///
/// ```
/// # use tower_llm_retry::RetryStats;
/// # fn show(response: &http::Response<()>) {
/// let stats = RetryStats::of(response.extensions());
/// println!("{} attempts, {:?} slept", stats.attempts, stats.slept);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryStats {
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Time spent waiting between attempts.
    pub slept: Duration,
    /// Why the layer stopped, when the call failed.
    pub gave_up: Option<GiveUp>,
}

impl RetryStats {
    /// The stats in `extensions` of a response or error that went through
    /// the retry layer: one attempt and no wait when none were recorded.
    pub fn of(extensions: &http::Extensions) -> RetryStats {
        extensions
            .get::<RetryStats>()
            .copied()
            .unwrap_or(RetryStats {
                attempts: 1,
                slept: Duration::ZERO,
                gave_up: None,
            })
    }
}

/// Records a success: its [`RetryStats`] when it took more than one
/// attempt, and the counters.
pub(crate) fn finish<B>(
    shared: &crate::service::Shared,
    response: &mut Response<B>,
    attempts: u32,
    slept: Duration,
) {
    if attempts > 1 {
        response.extensions_mut().insert(RetryStats {
            attempts,
            slept,
            gave_up: None,
        });
    }
    #[cfg(feature = "metrics")]
    {
        let (calls, all_attempts) = shared.successes.get_or_init(|| {
            (
                metrics::counter!("tower_llm_retry_calls_total", "outcome" => "success"),
                metrics::counter!("tower_llm_retry_attempts_total"),
            )
        });
        calls.increment(1);
        all_attempts.increment(u64::from(attempts));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = shared;
}

pub(crate) fn fail(
    mut error: LlmError,
    reason: GiveUp,
    attempts: u32,
    slept: Duration,
) -> LlmError {
    if reason == GiveUp::BudgetExhausted {
        // Keep the upstream's head, body and hint; say why it stopped.
        let original = error.kind();
        let c = error
            .classification()
            .clone()
            .with_kind(tower_llm_classify::ErrorKind::BudgetExhausted)
            .with_message(&format!(
                "retry budget exhausted; the last attempt failed with {original}"
            ));
        *error.classification_mut() = c;
    }
    error.extensions_mut().insert(RetryStats {
        attempts,
        slept,
        gave_up: Some(reason),
    });
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("tower_llm_retry_calls_total", "outcome" => "failure").increment(1);
        metrics::counter!("tower_llm_retry_give_ups_total", "reason" => reason.as_str())
            .increment(1);
        metrics::counter!("tower_llm_retry_attempts_total").increment(u64::from(attempts));
    }
    error
}

pub(crate) fn retrying(
    c: &Classification,
    attempt: u32,
    delay: Duration,
    hinted: bool,
    model: Option<&str>,
) {
    tracing::debug!(
        target: TRACING_TARGET,
        attempt,
        kind = c.kind().as_str(),
        status = c.status().map(|s| s.as_u16()),
        provider = c.provider().as_str(),
        model,
        delay_ms = delay.as_millis() as u64,
        hinted,
        "retrying"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_llm_retry_retries_total", "kind" => c.kind().as_str()).increment(1);
}

pub(crate) fn giving_up(c: &Classification, attempts: u32, reason: GiveUp, model: Option<&str>) {
    if reason == GiveUp::BudgetExhausted {
        tracing::warn!(
            target: TRACING_TARGET,
            attempts,
            kind = c.kind().as_str(),
            status = c.status().map(|s| s.as_u16()),
            provider = c.provider().as_str(),
            model,
            reason = reason.as_str(),
            "giving up: retry budget exhausted"
        );
    } else {
        tracing::debug!(
            target: TRACING_TARGET,
            attempts,
            kind = c.kind().as_str(),
            status = c.status().map(|s| s.as_u16()),
            provider = c.provider().as_str(),
            model,
            reason = reason.as_str(),
            "giving up"
        );
    }
}
