//! Control and visibility: force a key open or closed, reset it, disable
//! it, and read every key's state.

use std::sync::Arc;

use crate::breaker::{KeySnapshot, State};
use crate::registry::Registry;

/// A handle on a layer's breakers, for an admin endpoint or a test.
///
/// ```
/// use tower_llm_circuit::{CircuitConfig, CircuitLayer, State};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitLayer::new(CircuitConfig::standard());
/// let handle = layer.handle();
/// handle.force_open("openai/gpt-4o");
/// assert_eq!(handle.state("openai/gpt-4o"), Some(State::ForcedOpen));
/// handle.reset("openai/gpt-4o");
/// assert_eq!(handle.snapshot()[0].state, State::Closed);
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

    fn set(&self, key: &str, state: State) {
        let now = self.registry.now();
        self.registry.get(key, now).set_state(state, now);
    }

    /// Every call to `key` fails at once until it is reset.
    pub fn force_open(&self, key: &str) {
        self.set(key, State::ForcedOpen);
    }

    /// Closes `key` with a fresh window (its cooldown, if any, stays).
    pub fn force_closed(&self, key: &str) {
        self.set(key, State::Closed);
    }

    /// Closes `key`, clears its window and ends its cooldown.
    pub fn reset(&self, key: &str) {
        let now = self.registry.now();
        let breaker = self.registry.get(key, now);
        breaker.set_state(State::Closed, now);
        breaker.end_cooldown();
    }

    /// Lets every call to `key` through without counting.
    pub fn disable(&self, key: &str) {
        self.set(key, State::Disabled);
    }

    /// Lets every call to `key` through, counting, never opening.
    pub fn metrics_only(&self, key: &str) {
        self.set(key, State::MetricsOnly);
    }

    /// The state of `key`, if it has been seen.
    pub fn state(&self, key: &str) -> Option<State> {
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
