//! An adaptive concurrency limit per key, off until the key is
//! overloaded: a window of answers with enough shed ones turns it on (or
//! lowers it), successes raise it, and a call over it waits for room
//! before it is refused.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_llm_circuit::{CircuitConfig, CircuitLayer};
//! use tower_llm_classify::{ClassifyLayer, ErrorKind};
//! use tower_llm_testkit::{Api, Fault, Simulator};
//!
//! let sim = Simulator::builder().plan(Fault::overloaded()).start().await?;
//! // The breaker leaves busy targets to the limit.
//! let circuit = CircuitLayer::new(CircuitConfig::builder().count_overload(false).build()?);
//! let handle = circuit.handle();
//! let mut service = ServiceBuilder::new()
//!     .layer(circuit.adaptive_limit())
//!     .layer(circuit)
//!     .layer(ClassifyLayer::new())
//!     .service(Client::builder(TokioExecutor::new()).build_http());
//!
//! let request = || {
//!     http::Request::post(sim.url(Api::OpenAiChat))
//!         .body(Full::<bytes::Bytes>::from(r#"{"model":"gpt-4o","messages":[]}"#))
//! };
//! // The key has no limit until shed answers make 30 % of a window of
//! // answers (twice the calls in flight, at least 20): one shed answer
//! // does not turn it on; the sixth does, at half of what was in flight
//! // (one call here), never below the minimum (1).
//! for (calls, enabled) in [(1, false), (4, false), (1, true)] {
//!     for _ in 0..calls {
//!         let error = service.ready().await?.call(request()?).await.unwrap_err();
//!         assert_eq!(error.kind(), ErrorKind::Overloaded);
//!     }
//!     assert_eq!(handle.snapshot()[0].limit.enabled, enabled);
//! }
//! assert_eq!(handle.snapshot()[0].limit.limit, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Why a limit and not the breaker
//!
//! A provider that sheds load is busy, not down. A breaker that opens on
//! shed answers stops *all* traffic to a target that was still serving
//! most of it; with nowhere else to go every call then fails (the chaos
//! suite's `metastability` scenario: a lone target whose capacity halves).
//! A limit lowers the load on the struggling target instead of cutting it
//! off: calls over it wait for room (so a lone target keeps serving what
//! it can, and no second goes without an answer), and only calls that
//! find none within the queue's bounds are refused locally — with an
//! error of kind overloaded, phase local, so a fallback moves them to
//! another target (a retry policy below it with `retry_on_silence(false)`
//! leaves them to it), and a route's last target retries them after its
//! backoff, when the queue may have room.
//! The design is Netflix concurrency-limits' `AIMDLimit` (additive
//! increase, multiplicative decrease on drops) with TCP's one decrease per
//! window, lowered only when shed answers are a real share of a window
//! (random sheds of a busy fleet are not this key's overload), off until
//! the first such window as the AWS SDKs' adaptive retry mode keeps its
//! client-side limiter off until the first throttle (a healthy key is
//! never throttled by a guess, and streams that stall hold room nobody
//! waits for), and off again after a quiet period, past its maximum, or
//! when the key's breaker closes after an outage; see
//! [`AdaptiveLimitConfig`] for the numbers and why. The
//! breaker keeps its job for targets that are down (connect failures,
//! server errors, timeouts); set
//! [`count_overload(false)`](crate::CircuitConfigBuilder::count_overload)
//! on it when the limit is in the stack.
//!
//! A call holds its room until its response ends: for a stream, until the
//! body ends or is dropped, not when its head arrives. A call whose future
//! or body is dropped (its caller left, or the retry layer above ended the
//! attempt) frees its room, and a call dropped while it waits leaves the
//! queue.
//!
//! Envoy's adaptive concurrency filter and Netflix's `Gradient2Limit`
//! lower the limit when latency rises above a measured minimum. An LLM
//! answer's latency is mostly the request's doing (its `max_tokens`, its
//! reasoning effort), so a latency gradient would read long answers as
//! congestion; the limit here moves on what the provider says (shed
//! answers) and, optionally, stops growing on slow response heads
//! ([`growth_latency`](AdaptiveLimitConfigBuilder::growth_latency)).

mod body;
mod config;
mod future;
mod layer;
mod limiter;
mod permit;
mod service;

pub use body::LimitBody;
pub use config::{AdaptiveLimitConfig, AdaptiveLimitConfigBuilder};
pub use future::LimitFuture;
pub(crate) use future::{Waiting, poll_grant};
pub use layer::AdaptiveLimitLayer;
pub(crate) use limiter::{Limiter, Queued, Sample};
pub(crate) use permit::LimitTicket;
pub use service::AdaptiveLimit;
pub(crate) use service::refusal;
