//! Simulated LLM providers that fail the way real ones do, on demand,
//! over a real socket.
//!
//! A [`Simulator`] is an HTTP/1.1 server on `127.0.0.1:0`, started inside
//! the test's Tokio runtime. It speaks OpenAI Chat Completions, Anthropic
//! Messages and Ollama chat (whole and streamed, with the providers' ids,
//! usage and rate-limit headers), and a [`FaultPlan`] decides what each
//! request gets: a healthy answer, a provider error with the provider's own
//! body and headers (429 with `retry-after`, quota exhausted, 529 overload,
//! 5xx, context length, content policy, 401, 404), latency, a stall, a
//! reset, or a stream that fails after `n` events (in-band error, dropped
//! connection, stall with keep-alives, no terminal event, slow tokens).
//! A [`Capacity`] model queues or sheds load beyond a concurrency limit, and
//! every request is recorded with its credentials redacted.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};
//!
//! let sim = Simulator::builder()
//!     .plan(FaultPlan::script([Fault::overloaded(), Fault::ok()]))
//!     .start()
//!     .await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//! let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
//! let request = || {
//!     http::Request::post(sim.url(Api::AnthropicMessages))
//!         .header("content-type", "application/json")
//!         .body(Full::from(body))
//! };
//!
//! let first = client.request(request()?).await?;
//! assert_eq!(first.status(), 529); // Anthropic's overload status
//! let second = client.request(request()?).await?;
//! assert_eq!(second.status(), 200);
//! let text = second.into_body().collect().await?.to_bytes();
//! assert!(std::str::from_utf8(&text)?.contains("\"type\":\"message\""));
//! assert_eq!(sim.requests().len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Why a real server
//!
//! Mocks at the `Service` level (tower-test) pin a layer's logic; they do not
//! show what a real client does with a reset socket, a chunked body cut in
//! the middle, a stream that stalls while keep-alives flow, or a 502 page
//! from Cloudflare. The simulator puts those on the wire, deterministically:
//! scripts say exactly which request fails how, and random mixes are pure
//! functions of a seed and the request number.
//!
//! The `llm-sim` binary runs the same simulator standalone; the crate's
//! README documents its fault syntax (also [`FaultPlan`]'s `FromStr`).

#![forbid(unsafe_code)]

mod answer;
mod api;
mod body;
mod capacity;
mod conn;
mod delay;
mod failure;
mod fault;
mod handle;
mod plan;
mod record;
mod respond;
mod server;
mod simulator;
mod spec;
mod wire;

pub use api::Api;
pub use capacity::Capacity;
pub use delay::Delay;
pub use failure::{ErrorReply, Failure, RateLimit, RetryHint};
pub use fault::Fault;
pub use plan::FaultPlan;
pub use record::{CREDENTIAL_HEADERS, REDACTED, RecordedRequest, Stats, gaps};
pub use simulator::{Simulator, SimulatorBuilder};
pub use spec::ParseError;

/// The README's example compiles.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
