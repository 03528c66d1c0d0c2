//! [`LimitedCircuit`]: the adaptive concurrency limit and the circuit
//! breaker of one registry as one layer.
//!
//! Stacked as two layers (`circuit.adaptive_limit()` above `circuit`), a
//! call finds its key twice, and its response goes through two futures and
//! its body through two wrappers, each holding the key's breaker. Here the
//! limit's room rides in the circuit's own permit: one lookup, one future,
//! one body, and the same decisions in the same order.

mod future;
mod layer;
mod service;

pub use future::LimitedFuture;
pub use layer::LimitedCircuitLayer;
pub use service::LimitedCircuit;
