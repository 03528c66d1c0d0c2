//! An OpenAI- and Anthropic-compatible LLM gateway on tower-llm: `POST
//! /v1/chat/completions`, `/v1/completions`, `/v1/responses` (whole and
//! streamed), `/v1/embeddings`, `/v1/messages` (Anthropic's, to
//! Anthropic-protocol targets) and `GET /v1/models`, routed by `model` to
//! upstream targets through the facade's
//! [`Stack`](tower_llm::stack::Stack) — each
//! target Retry → Circuit → Classify, Fallback over them — with caller
//! keys, inbound limits, `/health`, `/metrics` and a graceful shutdown.
//!
//! The binary `tower-llm-gateway` (`cargo run --release -p
//! tower-llm-gateway` in the repository, or installed with `cargo install
//! --path crates/tower-llm-gateway`) serves it from a configuration file
//! (`--config`; the crate's `gateway.toml` is an annotated one), or,
//! without one, over three embedded simulated providers ([`demo`]). The library is what the binary is made of, for a program
//! that serves the gateway itself:
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_llm_gateway::{Closing, config, prometheus, router, serve, shutdown_signal};
//!
//! let file = r#"
//!     [gateway]
//!     listen = "127.0.0.1:8080"
//!
//!     [[targets]]
//!     name = "openai"
//!     base_url = "https://api.openai.com/v1"
//!     api_key_env = "OPENAI_API_KEY"
//!
//!     [[routes]]
//!     model = "*"
//!     targets = ["openai"]
//! "#;
//! let (section, stack_config) = config::parse_file(file)?;
//! let stack = stack_config.from_env()?.build(tower_llm_gateway::upstream_client())?;
//! let options = section.options()?;
//!
//! let listener = tokio::net::TcpListener::bind(options.listen).await?;
//! let closing = Closing::new();
//! let app = router(stack, &options, prometheus(), &closing);
//! serve(listener, app, &options, shutdown_signal(), closing).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What a caller cannot do to it:
//!
//! - send a request head slowly: `header_read_timeout` (hyper's), then the
//!   connection is closed;
//! - send a body slowly: the body is read whole, within
//!   `request_body_timeout` (then 408) and `max_body_bytes` (then 413),
//!   before the request takes a concurrency permit, so slow senders hold
//!   connections, never a slot;
//! - stop reading a response: `send_timeout`, then the connection is
//!   closed and the permit freed ([`send_timeout`]);
//! - be served without a key when keys are set ([`auth`]).
//!
//! An upstream that stays silent is left or cut by the stack first: a
//! stream's head within the preset's `stream_head_timeout` (else the next
//! target), no content for the stack's stream idle timeout (pings do not
//! count; a typed error). The gateway's own `stream_idle_timeout` (any byte
//! counts) is never shorter, a backstop for bodies the stack does not watch
//! ([`GatewaySection::fit_idle_timeout`](config::GatewaySection::fit_idle_timeout)).
//!
//! Where each concept lives: `router` (the routes, inbound limits and the
//! key check in front of them: [`router()`]), `endpoints` (the API
//! endpoints and the one handler path they share), `error` (OpenAI-shaped
//! errors), `headers` (what the gateway tells a caller about what
//! happened, and what it keeps from it),
//! `health` (`/health`, `/health/live`, `/health/ready`), `observe` (what
//! every API answer adds to the metrics, the log and the last minute per
//! target), `status_page` (`GET /`), `prometheus` (the recorder and
//! `/metrics`: [`prometheus()`]),
//! `body` (the response body and its timers), `serve` (accepting
//! connections: [`serve()`]), `shutdown` ([`Closing`],
//! [`shutdown_signal`]), [`send_timeout`], [`auth`], [`config`] (the
//! `[gateway]` section), [`telemetry`] (the request span and the
//! `[telemetry]` section's OTLP exporter), `upstream` ([`upstream_client`])
//! and [`demo`].

mod body;
mod endpoints;
mod error;
mod gate;
mod headers;
mod health;
mod heartbeat;
mod observe;
mod prometheus;
mod router;
mod self_wake;
mod serve;
mod shutdown;
mod status_page;
mod upstream;

pub mod auth;
pub mod config;
pub mod demo;
pub mod limits;
pub mod send_timeout;
pub mod shared;
pub mod telemetry;

pub use config::{GatewayOptions, GatewaySection};
pub use headers::{ATTEMPTS_HEADER, CONTINUED_TRAILER, FALLBACKS_HEADER, TARGET_HEADER};
pub use heartbeat::{HEARTBEAT_PERIOD, timer_heartbeat};
pub use prometheus::prometheus;
pub use router::router;
pub use serve::serve;
pub use shutdown::{Closing, shutdown_signal};
pub use upstream::upstream_client;
