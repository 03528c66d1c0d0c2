//! Simulated LLM providers that fail the way real ones do, on demand,
//! over a real socket.
//!
//! A [`Simulator`] is an HTTP/1.1 server on `127.0.0.1:0`, started inside
//! the test's Tokio runtime. It speaks OpenAI Chat Completions, Anthropic
//! Messages and Ollama chat (whole and streamed, with the providers' ids,
//! usage and rate-limit headers), and a [`FaultPlan`] decides what each
//! request gets: a healthy answer, a provider error with the provider's own
//! body and headers (429 with `retry-after`, quota exhausted, 529 overload,
//! 5xx, context length, content policy, 401, 404), latency, no response at
//! all, a reset, a slow first token, or a stream that fails after `n`
//! content events (in-band error, dropped connection, stall with or
//! without keep-alives, no terminal event, slow tokens). A request that
//! ends with the start of the assistant's answer (a prefill) gets the rest
//! of the reply, or the provider's 400 when prefill is refused. A
//! [`Capacity`] model queues or sheds load beyond a concurrency limit, and
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
//!
//! # Prefill
//!
//! A stream that breaks after content can be saved by asking a provider
//! for *the rest*: the same request, with the text delivered so far as the
//! assistant's partial answer. The simulator answers such a request as the
//! providers that support it do, in every API it serves: with the part of
//! its reply after the prefill, byte for byte, in a normal answer (one role
//! chunk, its own usage, its terminal event). Every healthy answer carries
//! the same reply ([`Simulator::reply`]), so a continued answer can be
//! checked exactly: the delivered text plus the rest is the reply.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_llm_testkit::{Api, PrefillMarker, Simulator};
//!
//! let sim = Simulator::start().await?;
//! assert_eq!(sim.reply(), "This is a simulated reply from tower-llm-testkit.");
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//! let body = r#"{"model":"deepseek-chat","messages":[
//!     {"role":"user","content":"hi"},
//!     {"role":"assistant","content":"This is a sim","prefix":true}]}"#;
//! let request = http::Request::post(sim.url(Api::OpenAiChat)).body(Full::from(body))?;
//! let answer = client.request(request).await?.into_body().collect().await?.to_bytes();
//! let answer: serde_json::Value = serde_json::from_slice(&answer)?;
//! assert_eq!(answer["choices"][0]["message"]["content"], "ulated reply from tower-llm-testkit.");
//!
//! let recorded = sim.requests()[0].prefill.clone().unwrap();
//! assert_eq!((recorded.text.as_str(), recorded.marker), ("This is a sim", PrefillMarker::PrefixFlag));
//! # Ok(())
//! # }
//! ```
//!
//! The ways providers mark a prefill are all read ([`PrefillMarker`]): a
//! conversation that ends with an assistant message (Anthropic, "Prefill
//! Claude's response",
//! <https://platform.claude.com/docs/en/build-with-claude/prompt-engineering/prefill-claudes-response>;
//! Ollama; llama.cpp), `"prefix": true` on that message (DeepSeek, "Chat
//! Prefix Completion", <https://api-docs.deepseek.com/guides/chat_prefix_completion>;
//! Mistral, `AssistantMessage.prefix`), and vLLM's
//! `"continue_final_message": true` with `"add_generation_prompt": false`.
//! What is done with it is a [`PrefillMode`]: continue (the default, in
//! every API, so that an OpenAI-compatible target can be continued),
//! ignore (OpenAI's own API has no prefill: the answer is the whole reply
//! again), or refuse with the provider's 400
//! ([`SimulatorBuilder::prefill`], or per request with
//! [`Fault::with_prefill`] / `+prefill=refuse` in a plan). The providers'
//! own refusals are modelled too: Anthropic's 400 for a prefill that ends
//! in white space ("final assistant content cannot end with trailing
//! whitespace"), vLLM's for `continue_final_message` without
//! `add_generation_prompt: false`.
//!
//! A prefill the reply does not start with is continued anyway, as a model
//! continues whatever text it is given: the answer is then the whole reply,
//! as if it followed the prefill. A test that compares bytes should send
//! what it was given.

#![forbid(unsafe_code)]

mod answer;
mod api;
mod body;
mod capacity;
mod conn;
mod delay;
mod embeddings;
mod failure;
mod fault;
mod handle;
mod plan;
mod prefill;
mod ratelimit;
mod ready;
mod record;
mod reply;
mod respond;
mod responses;
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
pub use prefill::{PrefillMarker, PrefillMode, RecordedPrefill};
pub use ratelimit::ProviderLimits;
pub use ready::ReadyUpstream;
pub use record::{CREDENTIAL_HEADERS, REDACTED, RecordedRequest, Stats, gaps};
pub use simulator::{Simulator, SimulatorBuilder};
pub use spec::ParseError;

/// The README's example compiles.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
