//! tower-llm: Tower middleware that makes calls to LLM APIs survive rate
//! limits, overload, outages and dropped streams.
//!
//! This is the facade crate. For now it re-exports the classify layer, the
//! vocabulary every other layer speaks; retry, circuit and fallback join it
//! as their crates land.
//!
//! ```
//! use tower_llm::classify::{ClassifyLayer, ErrorKind};
//!
//! let layer = ClassifyLayer::new();
//! # let _ = layer;
//! assert!(ErrorKind::Overloaded.is_transient());
//! ```

#![forbid(unsafe_code)]

/// The vocabulary and the classify layer: [`ErrorKind`], [`Classification`],
/// [`LlmError`], [`ClassifyLayer`].
pub use tower_llm_classify as classify;

pub use tower_llm_classify::{
    Classification, Classified, ClassifyLayer, ErrorKind, LlmError, Phase, Provider, RequestMeta,
};
