//! A call's room under its key's limit, held to the end of its body.

use std::sync::Arc;

use tokio::time::Instant;
use tower_llm_classify::{Classification, ErrorKind, Phase};

use super::limiter::Sample;
use crate::breaker::Breaker;

/// Room for one call under its key's limit, without the key: whoever
/// holds a ticket holds the key's breaker too and gives it back with it
/// (the standalone layer's [`LimitPermit`], or the circuit's own permit
/// when the limit and the breaker are one layer, `LimitedCircuit`).
#[derive(Debug)]
pub(crate) struct LimitTicket {
    window: u32,
    /// When the call was admitted, if a growth latency is configured.
    start: Option<Instant>,
    /// Whether a success may raise the limit (set at the response head
    /// when a growth latency is configured).
    fast: bool,
}

impl LimitTicket {
    /// Room just taken under `breaker`'s limit.
    #[inline]
    pub(crate) fn new(breaker: &Breaker) -> Self {
        LimitTicket {
            window: breaker.limiter().window(),
            start: breaker
                .registry_limit()
                .growth_latency
                .map(|_| Instant::now()),
            fast: true,
        }
    }

    /// The response head arrived: was it within the growth latency?
    #[inline]
    pub(crate) fn head(&mut self, breaker: &Breaker) {
        if let (Some(start), Some(limit)) = (self.start, breaker.registry_limit().growth_latency) {
            self.fast = start.elapsed() <= limit;
        }
    }

    /// The call succeeded: the limit may grow if it was fast enough.
    pub(crate) fn succeeded(self, breaker: &Breaker) {
        let sample = if self.fast {
            Sample::Success
        } else {
            Sample::Answered
        };
        self.release(breaker, sample);
    }

    /// The call failed as `c` says.
    pub(crate) fn failed(self, breaker: &Breaker, c: &Classification) {
        self.release(breaker, sample_of(c));
    }

    /// Frees the room; the limit learns from `sample`.
    pub(crate) fn release(self, breaker: &Breaker, sample: Sample) {
        breaker
            .limiter()
            .release(self.window, sample, breaker.registry_limit());
    }
}

/// Room for one call. Dropped without an outcome (the caller went away,
/// the layer above ended the attempt), the room is freed and the limit
/// learns nothing.
pub(crate) struct LimitPermit {
    breaker: Arc<Breaker>,
    ticket: Option<LimitTicket>,
}

impl LimitPermit {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        LimitPermit {
            ticket: Some(LimitTicket::new(&breaker)),
            breaker,
        }
    }

    /// The response head arrived.
    pub(crate) fn head(&mut self) {
        if let Some(ticket) = self.ticket.as_mut() {
            ticket.head(&self.breaker);
        }
    }

    pub(crate) fn succeeded(mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.succeeded(&self.breaker);
        }
    }

    pub(crate) fn failed(mut self, c: &Classification) {
        if let Some(ticket) = self.ticket.take() {
            ticket.failed(&self.breaker, c);
        }
    }
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.release(&self.breaker, Sample::Nothing);
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
        // Rate limits are the provider's quota, not this key's capacity
        // (a cooldown's or pacing's own refusal is local, above).
        ErrorKind::RateLimited
        | ErrorKind::QuotaExhausted
        | ErrorKind::CircuitOpen
        | ErrorKind::BudgetExhausted
        | ErrorKind::Cancelled
        | ErrorKind::Unknown => Sample::Nothing,
        _ => Sample::Answered,
    }
}
