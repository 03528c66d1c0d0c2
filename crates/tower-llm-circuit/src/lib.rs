//! A per-key circuit breaker and rate-limit cooldown for LLM API calls,
//! lock-free when healthy.
//!
//! [`CircuitLayer`] keeps one breaker per key (provider and model by
//! default). A key that keeps failing — overload, server errors, timeouts,
//! dropped connections, streams that break — opens: its calls fail at once
//! with an error of kind circuit open that says when the next probe is
//! allowed, so a retry stops and a fallback moves on. After the open
//! duration a few probes go through; their outcomes close it again or open
//! it for longer. Client errors (invalid request, context length, content
//! policy, unknown model) count as successes of the target: the target
//! worked, the request was wrong. Rate limits do not count at all: a hinted
//! 429 puts the key in a cooldown until the hinted instant instead.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_llm_circuit::{CircuitConfig, CircuitLayer, State};
//! use tower_llm_classify::{ClassifyLayer, ErrorKind};
//! use tower_llm_testkit::{Api, Fault, Simulator};
//!
//! let sim = Simulator::builder().plan(Fault::overloaded()).start().await?;
//! let circuit = CircuitLayer::new(CircuitConfig::fast_trip());
//! let handle = circuit.handle();
//! let mut service = ServiceBuilder::new()
//!     .layer(circuit)
//!     .layer(ClassifyLayer::new())
//!     .service(Client::builder(TokioExecutor::new()).build_http());
//!
//! let request = || {
//!     http::Request::post(sim.url(Api::OpenAiChat))
//!         .body(Full::<bytes::Bytes>::from(r#"{"model":"gpt-4o","messages":[]}"#))
//! };
//! for _ in 0..5 {
//!     let error = service.ready().await?.call(request()?).await.unwrap_err();
//!     assert_eq!(error.kind(), ErrorKind::Overloaded);
//! }
//! // Five overloads in a row: the circuit is open, the provider is spared.
//! let error = service.ready().await?.call(request()?).await.unwrap_err();
//! assert_eq!(error.kind(), ErrorKind::CircuitOpen);
//! let key = &handle.snapshot()[0];
//! assert_eq!((key.state, &*key.key), (State::Open, "openai_compatible/gpt-4o"));
//! assert_eq!(sim.requests().len(), 5);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod body;
mod breaker;
mod config;
pub mod future;
mod handle;
mod key;
mod layer;
mod registry;
mod service;
mod settings;
mod window;

pub use body::CircuitBody;
pub use breaker::{KeySnapshot, OnTransition, State, Transition};
pub use config::{CircuitConfig, CircuitConfigBuilder, ConfigError};
pub use handle::{CircuitHandle, ProbeResult};
pub use key::{KeyBy, KeyFn, KeyInput};
pub use layer::CircuitLayer;
pub use service::Circuit;
pub use settings::{CircuitSettings, ENV_VARS};
pub use window::{Totals, WindowKind};

/// The tracing target of every event of this crate.
pub const TRACING_TARGET: &str = "tower_llm::circuit";
