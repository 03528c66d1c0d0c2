//! A per-key circuit breaker and rate-limit cooldown for LLM API calls,
//! lock-free when healthy.
//!
//! [`CircuitLayer`] keeps one breaker per key (provider and model by
//! default). A key that keeps failing — overload, server errors, timeouts,
//! dropped connections, streams that break — opens: its calls fail at once
//! with an error of kind circuit open that says when the next probe is
//! allowed, so a retry stops and a fallback moves on. After the open
//! duration a few probes go through; their outcomes close it again or open
//! it for longer (at most 30 s with the `standard` preset). A request that
//! carries a [`RequestToken`] probes a key once: its own retry after a
//! failed probe is refused as open, so the probes come from different
//! requests and it moves on to a fallback. Client errors (invalid request, context length, content
//! policy, unknown model) count as successes of the target: the target
//! worked, the request was wrong. Rate limits do not count at all: a hinted
//! 429 puts the key in a cooldown until the hinted instant instead.
//!
//! A key that sheds load (overloaded answers) is busy, not down: its
//! adaptive concurrency limit ([`AdaptiveLimitLayer`], on the same keys
//! with [`CircuitLayer::adaptive_limit`]) lowers what is sent to it
//! instead. Stacked above the circuit it is two layers; as one,
//! [`CircuitLayer::with_adaptive_limit`] makes a [`LimitedCircuit`] that
//! decides the same with one key lookup, one future and one body wrapper
//! per call (what `LlmStack` uses).
//!
//! Every answer's rate-limit headers also pace their key ahead of the 429:
//! a call what is left cannot cover is not sent but answered at once,
//! rate limited with the wait until the reset as its hint (see
//! [`PacingConfig`], and [`CircuitHandle::paced_for`] for a picker).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_llm_circuit::{CircuitConfig, CircuitLayer, CircuitState};
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
//! assert_eq!((key.state, &*key.key), (CircuitState::Open, "openai_compatible/gpt-4o"));
//! assert_eq!(sim.requests().len(), 5);
//! # Ok(())
//! # }
//! ```
//!
//! # Attempts the layer above ends
//!
//! Below a retry layer, the circuit does not see an attempt time out: the
//! retry layer's attempt timeout or deadline fires and the attempt's future
//! (or its held-back body) is dropped, exactly as when a caller goes away.
//! The two must not be confused. A caller that leaves says nothing about
//! the target; an attempt cut by its timeout says the target is too slow or
//! silent, and a silent upstream that is never counted never opens its
//! breaker: every request would wait out the whole deadline on a dead
//! primary before falling back. So the retry layer puts an
//! [`AttemptEnd`](tower_llm_classify::AttemptEnd) in each attempt's request
//! (only when it has a time limit) and sets it before dropping the
//! attempt; the circuit takes it from the request and, when the call is
//! dropped with it set, records the failure it names — a timeout, or the
//! error the first-content guard read — and a half-open probe ends with
//! it rather than handing its permit back. A drop with the cell unset is
//! still not counted. This is what the peers do: Resilience4j's
//! `TimeLimiter` in front of a `CircuitBreaker` records the
//! `TimeoutException` as a failure, and Envoy's outlier detection counts
//! local-origin timeouts (`consecutive_local_origin_failure`).
//!
//! One exception: a *whole* (non-streamed) answer whose head had arrived,
//! cut by a time limit while its body was read, is not counted. The target
//! answered; how long a whole answer takes is the request's doing
//! (`max_tokens`, reasoning effort), and a caller must not be able to open
//! a breaker for everyone with long requests. A request with no head
//! within the limit, or a stream with no content, is counted: that is
//! where a silent or overloaded upstream shows. Set time limits above the
//! slowest answer a caller may legitimately ask for (with non-streamed
//! requests, a provider sends the head only when the answer is done, so a
//! long generation and a silent upstream look alike until then).
//!
//! An error event the retry layer's first-content guard reads as a
//! stream's first event is counted like the same failure sent as a status:
//! the guard reads one more frame, which Classify's body below answers
//! with the classified error, before it drops the attempt.
//!
//! A stream that fails after its content started (phase mid-stream: cut,
//! or ended by Classify's idle timeout after a stall) counts as a failure
//! of the target by default. Where the key has nowhere else to go,
//! [`count_after_content(false)`](CircuitConfigBuilder::count_after_content)
//! leaves such failures uncounted (the target answered and generated), so
//! that stalls ending together do not open the breaker of a target that
//! serves most of its calls.

#![forbid(unsafe_code)]

mod adaptive;
mod body;
mod breaker;
mod cache;
mod config;
pub mod future;
mod handle;
mod key;
mod layer;
mod limited;
mod pacing;
mod registry;
mod service;
mod settings;
mod window;

pub use adaptive::{
    AdaptiveLimit, AdaptiveLimitConfig, AdaptiveLimitConfigBuilder, AdaptiveLimitLayer, LimitBody,
};
pub use body::CircuitBody;
pub use breaker::{
    CircuitState, CooldownCause, KeyDecision, KeySnapshot, LimitSnapshot, OnDecision, OnTransition,
    Transition,
};
pub use config::{CircuitConfig, CircuitConfigBuilder, ConfigError};
pub use handle::{AlreadySharing, CircuitHandle, ProbeResult};
pub use key::{KeyBy, KeyFn, KeyInput};
pub use layer::CircuitLayer;
pub use limited::{LimitedCircuit, LimitedCircuitLayer, LimitedFuture};
pub use pacing::{PaceBucket, PaceLimits, PacingConfig, PacingSnapshot, SharedPacing};
pub use service::Circuit;
pub use settings::{CircuitSettings, ENV_VARS};
pub use tower_llm_classify::RequestToken;
pub use window::{Totals, WindowKind};

/// The former name of [`CircuitState`], kept so code written against it
/// still builds. `State` said nothing once re-exported beside other
/// crates' states (issue 13: a name is unique in the workspace's API).
#[deprecated(since = "0.1.0", note = "renamed to `CircuitState`")]
pub type State = CircuitState;

/// The tracing target of every event of this crate.
pub const TRACING_TARGET: &str = "tower_llm::circuit";
