//! `CircuitLayer`.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::breaker::{OnTransition, Transition};
use crate::config::CircuitConfig;
use crate::key::KeyBy;
use crate::registry::Registry;
use crate::service::Circuit;

/// Applies [`Circuit`] to a service.
///
/// # Clone
///
/// Cheap: an `Arc`. Every service it makes shares the same breakers.
#[derive(Clone)]
pub struct CircuitLayer {
    registry: Arc<Registry>,
    key_by: KeyBy,
}

impl fmt::Debug for CircuitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitLayer")
            .field("registry", &self.registry)
            .field("key_by", &self.key_by)
            .finish()
    }
}

impl CircuitLayer {
    /// Breakers with `config`, keyed by provider and model.
    pub fn new(config: CircuitConfig) -> Self {
        CircuitLayer {
            registry: Arc::new(Registry::new(config, None)),
            key_by: KeyBy::default(),
        }
    }

    /// Breakers with `config`, calling `on_transition` on every state change
    /// (besides the `tracing` event).
    pub fn with_events(
        config: CircuitConfig,
        on_transition: impl Fn(&Transition) + Send + Sync + 'static,
    ) -> Self {
        let callback: Arc<OnTransition> = Arc::new(on_transition);
        CircuitLayer {
            registry: Arc::new(Registry::new(config, Some(callback))),
            key_by: KeyBy::default(),
        }
    }

    /// Groups requests by `key_by` instead.
    pub fn key_by(mut self, key_by: KeyBy) -> Self {
        self.key_by = key_by;
        self
    }

    /// An adaptive concurrency limit on the same keys, with the settings
    /// of this layer's [`CircuitConfig::adaptive_limit`]: one registry
    /// holds each key's breaker and limit, and this layer's
    /// [`handle`](Self::handle) shows both. Put it above the circuit:
    /// `ServiceBuilder::new().layer(circuit.adaptive_limit()).layer(circuit)`.
    pub fn adaptive_limit(&self) -> crate::AdaptiveLimitLayer {
        crate::AdaptiveLimitLayer::sharing(Arc::clone(&self.registry), self.key_by.clone())
    }

    /// This layer with its [`adaptive_limit`](Self::adaptive_limit) in
    /// front, as one layer: the same decisions as the two stacked, with
    /// one key lookup, one future and one body wrapper per call (what
    /// `LlmStack` puts in each target's stack).
    pub fn with_adaptive_limit(&self) -> crate::LimitedCircuitLayer {
        crate::LimitedCircuitLayer::new(self.clone())
    }

    /// A handle on the breakers.
    pub fn handle(&self) -> crate::CircuitHandle {
        crate::CircuitHandle::new(Arc::clone(&self.registry))
    }
}

impl Default for CircuitLayer {
    fn default() -> Self {
        CircuitLayer::new(CircuitConfig::standard())
    }
}

impl<S> Layer<S> for CircuitLayer {
    type Service = Circuit<S>;

    fn layer(&self, inner: S) -> Circuit<S> {
        Circuit::new(inner, Arc::clone(&self.registry), self.key_by.clone())
    }
}
