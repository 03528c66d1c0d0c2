//! `AdaptiveLimitLayer`.

use std::sync::Arc;

use tower_layer::Layer;

use super::config::AdaptiveLimitConfig;
use super::service::AdaptiveLimit;
use crate::config::CircuitConfig;
use crate::key::KeyBy;
use crate::registry::Registry;

/// Applies [`AdaptiveLimit`] to a service. Made from a
/// [`CircuitLayer`](crate::CircuitLayer) with
/// [`adaptive_limit`](crate::CircuitLayer::adaptive_limit), it shares the
/// breaker's keys (one registry, one entry per key, one
/// [`CircuitHandle`](crate::CircuitHandle) that shows both); made alone
/// with [`new`](Self::new), it keys by provider and model.
///
/// # Clone
///
/// Cheap: an `Arc`. Every service it makes shares the same limits.
#[derive(Clone, Debug)]
pub struct AdaptiveLimitLayer {
    registry: Arc<Registry>,
    key_by: KeyBy,
}

impl AdaptiveLimitLayer {
    /// Limits with `config`, keyed by provider and model, on keys of their
    /// own (no breaker).
    pub fn new(config: AdaptiveLimitConfig) -> Self {
        let circuit = CircuitConfig {
            adaptive_limit: config,
            ..CircuitConfig::standard()
        };
        AdaptiveLimitLayer {
            registry: Arc::new(Registry::new(circuit, None)),
            key_by: KeyBy::default(),
        }
    }

    pub(crate) fn sharing(registry: Arc<Registry>, key_by: KeyBy) -> Self {
        AdaptiveLimitLayer { registry, key_by }
    }

    /// Groups requests by `key_by` instead. Made from a circuit layer, keep
    /// the circuit's keying, or the two count different keys.
    pub fn key_by(mut self, key_by: KeyBy) -> Self {
        self.key_by = key_by;
        self
    }

    /// A handle on the keys: [`snapshot`](crate::CircuitHandle::snapshot)
    /// shows each key's limit, calls in flight and calls waiting.
    pub fn handle(&self) -> crate::CircuitHandle {
        crate::CircuitHandle::new(Arc::clone(&self.registry))
    }
}

impl Default for AdaptiveLimitLayer {
    fn default() -> Self {
        AdaptiveLimitLayer::new(AdaptiveLimitConfig::standard())
    }
}

impl<S> Layer<S> for AdaptiveLimitLayer {
    type Service = AdaptiveLimit<S>;

    fn layer(&self, inner: S) -> AdaptiveLimit<S> {
        AdaptiveLimit::new(inner, Arc::clone(&self.registry), self.key_by.clone())
    }
}
