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
//!
//! # One pass: who reads what
//!
//! A request is read once and its answer is read once; every other layer
//! reads what the reader left in the extensions.
//!
//! - **The request body**: the outermost layer that sees it reads it into
//!   `Bytes` once — [`Stack`](stack::Stack) when there is one, else
//!   [`Fallback`](tower_llm_fallback::Fallback), else
//!   [`Retry`](tower_llm_retry::Retry) — and every layer below reuses those
//!   bytes (one request per target, cloned by reference count per attempt).
//! - **[`RequestMeta`]** (provider, dialect, model, streaming): read in the
//!   same walk of the body and put in the request's extensions; fallback
//!   makes it each target's (`RequestMeta::retarget`: provider from the
//!   target's URL, the model it is sent), retry, circuit and classify read
//!   it there. [`RequestMeta::get_or_insert`] is the one way a layer gets
//!   it, computing it only when no outer layer did.
//! - **The answer**: [`Classify`](classify::Classify) is its only reader. It classifies an
//!   error status from the head and a bounded read of the error body, and
//!   scans a stream's events once. What it found goes up through the
//!   response's extensions — [`StreamProgress`](classify::stream::StreamProgress)
//!   (first content, an in-band error), read by retry's first-content guard
//!   and the circuit's time-to-first-content — and through the request's
//!   [`OutcomeHook`](classify::stream::OutcomeHook) (how the call ended,
//!   once), which the circuit counts.
//! - **An attempt cut from above**: retry sets the attempt's
//!   [`AttemptEnd`](classify::AttemptEnd) before it drops an attempt it
//!   ended (a timeout, an error its guard found), so the circuit below
//!   counts the failure instead of mistaking it for a caller that left.
//!
//! Where each concept lives: `classify` — the vocabulary ([`ErrorKind`],
//! [`Classification`], [`LlmError`]), `meta` and `json` (the request's one
//! walk), `response` and `template` (error bodies), `hint` (wait hints),
//! `stream` (scanner, body, progress, outcome), `redact` (credential and
//! hop-by-hop header lists); `retry` — `policy` (what to retry), `backoff`,
//! `budget`, `held` (the first-content guard), `future`; `circuit` —
//! `breaker` (state vocabulary, the atomic state machine, half-open),
//! `window`, `registry` (breakers by key), `body`; `fallback` — `target`
//! (a target's URL, key and model), `rewrite` (the body's `model`),
//! `route` (where a failure sends the request next), `future`; this crate
//! — `stack` (builder, routes, service, the erased [`TargetService`](stack::TargetService))
//! and `config`.

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

/// Circuit decisions shared by several replicas through Redis:
/// [`SharedState`](tower_llm_redis::SharedState) (feature `redis`; see
/// [`LlmStack::shared_state`](stack::LlmStack::shared_state)).
#[cfg(feature = "redis")]
pub use tower_llm_redis as redis;

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
