//! Control and visibility: force a key open or closed, reset it, disable
//! it, and read every key's state.

use std::sync::Arc;

use crate::breaker::{CircuitState, KeySnapshot};
use crate::registry::Registry;

/// A handle on a layer's breakers, for an admin endpoint or a test.
///
/// ```
/// use tower_llm_circuit::{CircuitConfig, CircuitLayer, CircuitState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitLayer::new(CircuitConfig::standard());
/// let handle = layer.handle();
/// handle.force_open("openai/gpt-4o");
/// assert_eq!(handle.state("openai/gpt-4o"), Some(CircuitState::ForcedOpen));
/// handle.reset("openai/gpt-4o");
/// assert_eq!(handle.snapshot()[0].state, CircuitState::Closed);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CircuitHandle {
    registry: Arc<Registry>,
}

impl CircuitHandle {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        CircuitHandle { registry }
    }

    fn set(&self, key: &str, state: CircuitState) {
        let now = self.registry.now();
        self.registry.get(key, now).set_state(state, now);
    }

    /// Every call to `key` fails at once until it is reset.
    pub fn force_open(&self, key: &str) {
        self.set(key, CircuitState::ForcedOpen);
    }

    /// Closes `key` with a fresh window (its cooldown, if any, stays).
    /// From an open state, its adaptive limit turns off (on from the
    /// start: if lowered, starts again from the initial limit), as when its
    /// probes close it.
    pub fn force_closed(&self, key: &str) {
        self.set(key, CircuitState::Closed);
    }

    /// Closes `key`, clears its window and ends its cooldown. From an open
    /// state, its adaptive limit turns off (on from the start: if lowered,
    /// starts again from the initial limit), as when its probes close it.
    pub fn reset(&self, key: &str) {
        let now = self.registry.now();
        let breaker = self.registry.get(key, now);
        breaker.set_state(CircuitState::Closed, now);
        breaker.end_cooldown();
    }

    /// Lets every call to `key` through without counting.
    pub fn disable(&self, key: &str) {
        self.set(key, CircuitState::Disabled);
    }

    /// Lets every call to `key` through, counting, never opening.
    pub fn metrics_only(&self, key: &str) {
        self.set(key, CircuitState::MetricsOnly);
    }

    /// The state of `key`, if it has been seen.
    pub fn state(&self, key: &str) -> Option<CircuitState> {
        self.registry.find(key).map(|b| b.state())
    }

    /// Every key's state, window totals, rejections and remaining waits,
    /// sorted by key.
    pub fn snapshot(&self) -> Vec<KeySnapshot> {
        self.registry.snapshot()
    }

    /// How many keys are held.
    pub fn keys(&self) -> usize {
        self.registry.len()
    }
}

/// How a health probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeResult {
    /// The key was not open: nothing was probed.
    NotOpen,
    /// The probe succeeded: the key is closed again.
    Closed,
    /// The probe failed: the key stays open.
    StillOpen,
}

impl CircuitHandle {
    /// While `key` is open (or half-open), runs `probe` — a `GET /health`, a
    /// one-token completion — and closes the key if it returns `true`,
    /// instead of waiting for live traffic to probe it. A key that is not
    /// open is left alone and `probe` is not run.
    ///
    /// ```
    /// use tower_llm_circuit::{CircuitConfig, CircuitLayer, ProbeResult, CircuitState};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = CircuitLayer::new(CircuitConfig::standard()).handle();
    /// assert_eq!(handle.probe("openai/gpt-4o", async { true }).await, ProbeResult::NotOpen);
    /// # }
    /// ```
    pub async fn probe(
        &self,
        key: &str,
        probe: impl std::future::Future<Output = bool>,
    ) -> ProbeResult {
        let Some(breaker) = self.registry.find(key) else {
            return ProbeResult::NotOpen;
        };
        if !matches!(breaker.state(), CircuitState::Open | CircuitState::HalfOpen) {
            return ProbeResult::NotOpen;
        }
        if !probe.await {
            return ProbeResult::StillOpen;
        }
        if breaker.close_after_probe() {
            ProbeResult::Closed
        } else {
            ProbeResult::NotOpen
        }
    }

    /// The keys that are open or half-open now (for a probe loop).
    pub fn open_keys(&self) -> Vec<Arc<str>> {
        self.snapshot()
            .into_iter()
            .filter(|k| matches!(k.state, CircuitState::Open | CircuitState::HalfOpen))
            .map(|k| k.key)
            .collect()
    }
}
