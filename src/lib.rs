//! tower-llm: Tower middleware that makes calls to LLM APIs survive rate
//! limits, overload, outages and dropped streams.
//!
//! This is the facade crate. It re-exports the classify layer, the
//! vocabulary every other layer speaks, the retry layer, the circuit
//! breaker and the fallback (features `retry`, `circuit`, `fallback`, on by
//! default). The stack order is Fallback over targets, each Retry →
//! Circuit → Classify → client:
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_llm::classify::{ClassifyLayer, ErrorKind};
//! use tower_llm::circuit::{CircuitConfig, CircuitLayer};
//! use tower_llm::retry::{RetryLayer, RetryPolicy};
//!
//! let stack = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::sdk_default()))
//!     .layer(CircuitLayer::new(CircuitConfig::standard()))
//!     .layer(ClassifyLayer::new());
//! # let _ = stack;
//! assert!(ErrorKind::Overloaded.is_transient());
//! ```

#![forbid(unsafe_code)]

/// The vocabulary and the classify layer: [`ErrorKind`], [`Classification`],
/// [`LlmError`], [`ClassifyLayer`].
pub use tower_llm_classify as classify;

/// The retry layer: [`RetryLayer`](tower_llm_retry::RetryLayer),
/// [`RetryPolicy`](tower_llm_retry::RetryPolicy) and its budget.
#[cfg(feature = "retry")]
pub use tower_llm_retry as retry;

/// The circuit breaker: [`CircuitLayer`](tower_llm_circuit::CircuitLayer),
/// [`CircuitConfig`](tower_llm_circuit::CircuitConfig), the control handle.
#[cfg(feature = "circuit")]
pub use tower_llm_circuit as circuit;

/// Fallback across targets: [`Fallback`](tower_llm_fallback::Fallback),
/// [`Target`](tower_llm_fallback::Target), the model rewrite.
#[cfg(feature = "fallback")]
pub use tower_llm_fallback as fallback;

/// `LlmStack`: Fallback over targets, each Retry → Circuit → Classify over
/// its client, assembled (needs the `retry`, `circuit` and `fallback`
/// features).
#[cfg(all(feature = "retry", feature = "circuit", feature = "fallback"))]
pub mod stack;

/// One configuration value for the whole stack, from TOML or any serde
/// format, overridable from the environment (feature `config`).
#[cfg(all(
    feature = "config",
    feature = "retry",
    feature = "circuit",
    feature = "fallback"
))]
pub mod config;

pub use tower_llm_classify::{
    Classification, Classified, ClassifyLayer, ErrorKind, LlmError, Phase, Provider, RequestMeta,
};
