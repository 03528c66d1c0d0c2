//! A call's room under its key's limit, held to the end of its body.

use std::sync::Arc;

use tokio::time::Instant;
use tower_llm_classify::{Classification, ErrorKind, Phase};

use super::limiter::Sample;
use crate::breaker::Breaker;

/// Room for one call. Dropped without an outcome (the caller went away,
/// the layer above ended the attempt), the room is freed and the limit
/// learns nothing.
pub(crate) struct LimitPermit {
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) window: u32,
    /// When the call was admitted, if a growth latency is configured.
    pub(crate) start: Option<Instant>,
    /// Whether a success may raise the limit (set at the response head
    /// when a growth latency is configured).
    pub(crate) fast: bool,
    pub(crate) done: bool,
}

impl LimitPermit {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        let window = breaker.limiter().window();
        let start = breaker
            .registry_limit()
            .growth_latency
            .map(|_| Instant::now());
        LimitPermit {
            breaker,
            window,
            start,
            fast: true,
            done: false,
        }
    }

    /// The response head arrived: was it within the growth latency?
    pub(crate) fn head(&mut self) {
        if let (Some(start), Some(limit)) =
            (self.start, self.breaker.registry_limit().growth_latency)
        {
            self.fast = start.elapsed() <= limit;
        }
    }

    pub(crate) fn succeeded(mut self) {
        let sample = if self.fast {
            Sample::Success
        } else {
            Sample::Answered
        };
        self.finish(sample);
    }

    pub(crate) fn failed(mut self, c: &Classification) {
        self.finish(sample_of(c));
    }

    fn finish(&mut self, sample: Sample) {
        self.done = true;
        let config = self.breaker.registry_limit();
        self.breaker.limiter().release(self.window, sample, config);
    }
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Sample::Nothing);
        }
    }
}

/// What a failure says about the key's capacity: an overloaded answer
/// from the target (529, `overloaded_error`, 503 `server_is_overloaded`,
/// a shed queue) counts as shed; another answer of the target (a server
/// error, a timeout, a reset, a refused request) counts as an answer that
/// was not shed; and what this stack made itself (an open breaker's or a
/// limit's refusal, phase local; a cooldown, a rate limit), a cancelled
/// call or a failure of unknown origin says nothing, so it never lowers
/// the limit nor dilutes its shed rate.
pub(crate) fn sample_of(c: &Classification) -> Sample {
    match c.kind() {
        _ if c.phase() == Phase::Local => Sample::Nothing,
        ErrorKind::Overloaded => Sample::Shed,
        // A cooldown refusal is a rate limit, not local (it is retried):
        // rate limits are the provider's quota, not this key's capacity.
        ErrorKind::RateLimited
        | ErrorKind::QuotaExhausted
        | ErrorKind::CircuitOpen
        | ErrorKind::BudgetExhausted
        | ErrorKind::Cancelled
        | ErrorKind::Unknown => Sample::Nothing,
        _ => Sample::Answered,
    }
}
