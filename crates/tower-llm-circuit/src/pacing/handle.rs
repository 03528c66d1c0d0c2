//! What pacing shows: for a picker choosing among deployments, and for a
//! status page.

use std::sync::Arc;
use std::time::Duration;

use super::view::ViewReport;
use crate::CircuitHandle;

/// One key's pacing at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacingSnapshot {
    /// The key.
    pub key: Arc<str>,
    /// Requests its last answer said were left, and the time until that
    /// bucket is full again; `None` when no answer said, or its reset has
    /// passed.
    pub requests: Option<(u64, Duration)>,
    /// Tokens left and the time until full again, likewise.
    pub tokens: Option<(u64, Duration)>,
    /// Calls sent and not answered yet (not counted in what is left).
    pub in_flight: u64,
    /// How long a call of one token would be refused from now; `None`
    /// when it would be sent.
    pub paced_for: Option<Duration>,
}

impl PacingSnapshot {
    pub(crate) fn new(key: &str, report: ViewReport, paced_for: Option<Duration>) -> Self {
        PacingSnapshot {
            key: Arc::from(key),
            requests: report.requests,
            tokens: report.tokens,
            in_flight: report.in_flight,
            paced_for,
        }
    }
}

impl CircuitHandle {
    /// How long calls to `key` are paced out from now: `Some(wait)` when
    /// its rate-limit headers (or its configured limits) say a call sent
    /// now would be refused, until the reset that ends it; `None` when a
    /// call would be sent. For a picker that skips a deployment whose key
    /// has nothing left, as it skips an open or cooling-down one.
    ///
    /// ```
    /// use tower_llm_circuit::CircuitLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = CircuitLayer::default().handle();
    /// assert_eq!(handle.paced_for("primary/gpt-4o"), None);
    /// # }
    /// ```
    pub fn paced_for(&self, key: &str) -> Option<Duration> {
        self.paced_for_tokens(key, 1)
    }

    /// As [`paced_for`](Self::paced_for), for a call estimated to cost
    /// `tokens` ([`RequestMeta::estimated_tokens`](tower_llm_classify::RequestMeta::estimated_tokens)).
    pub fn paced_for_tokens(&self, key: &str, tokens: u64) -> Option<Duration> {
        let registry = self.registry();
        registry.pacing.paced_for(key, tokens, registry.now())
    }

    /// `key`'s pacing, if its answers have carried rate-limit headers or
    /// it has configured limits.
    pub fn pacing(&self, key: &str) -> Option<PacingSnapshot> {
        let registry = self.registry();
        registry.pacing.snapshot(key, registry.now())
    }
}
