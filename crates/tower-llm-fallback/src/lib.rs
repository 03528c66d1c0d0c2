//! Fallback across LLM models and providers, routed by the kind of failure.
//!
//! [`Fallback`] sends a request to its first [`Target`]; when that target
//! fails in a way another could serve — overload, server errors, timeouts,
//! dropped connections, an open circuit, a spent retry budget, quota, a
//! rate limit its retries could not wait out — the same conversation goes
//! to the next target, rewritten for it: its URL (less any key the caller
//! put in the query), its `model` (a byte-level edit of the body that
//! leaves one `model` member and every other byte as it was), its headers,
//! and its own credential (every credential the request came with is
//! removed first).
//!
//! Routes follow LiteLLM's three kinds of fallback: a context-length
//! failure goes only to targets listed as larger-context (and with a larger
//! window), a content-policy failure only to targets listed for it; an
//! invalid request stops at once, since it would fail everywhere.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{Layer, ServiceExt};
//! use tower_llm_classify::ClassifyLayer;
//! use tower_llm_fallback::{Fallback, FallbackReport, Target};
//! use tower_llm_testkit::{Api, Fault, Simulator};
//!
//! let cloud = Simulator::builder().plan(Fault::overloaded()).start().await?;
//! let local = Simulator::start().await?;
//! let client = || ClassifyLayer::new().layer(Client::builder(TokioExecutor::new()).build_http());
//!
//! let fallback = Fallback::builder()
//!     .target(Target::new("cloud", client()))
//!     .target(Target::new("local", client()).base_url(local.base_url().parse()?).model("llama3.2"))
//!     .build()?;
//!
//! let request = http::Request::post(cloud.url(Api::OpenAiChat))
//!     .body(Full::<bytes::Bytes>::from(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#))?;
//! let response = fallback.oneshot(request).await?;
//! let report = response.extensions().get::<FallbackReport>().unwrap().clone();
//! assert_eq!(report.served_by.as_deref(), Some("local"));
//! assert_eq!(local.requests()[0].model.as_deref(), Some("llama3.2"));
//! # Ok(())
//! # }
//! ```
//!
//! Each target's service is typically its own Retry → Circuit → Classify
//! stack: retries happen within a target, an open circuit moves on at once,
//! and a streamed answer that failed before its first content (retry's
//! first-content guard) moves on invisibly. After content has
//! reached the caller, a failure is a stream-incomplete error
//! ([`FallbackBody`]), never a silent switch of provider mid-answer.
//!
//! The caller's body is read once into `Bytes` and each target's request
//! shares it; its head is kept for the targets after the one called, and
//! a target another may follow gets one copy of it
//! (`target/adapt.rs`). With
//! [`remake_attempts`](FallbackBuilder::remake_attempts) (what `LlmStack`
//! sets, where each target's service is its retry layer) that request also
//! says how to make its head again
//! ([`Remake`](tower_llm_classify::replay::Remake)), so the retry sends it
//! as its first attempt instead of copying it once more.

#![forbid(unsafe_code)]

mod body;
pub mod continuation;
pub mod future;
pub mod group;
mod head;
mod outcome;
mod protocol;
mod report;
mod rewrite;
mod route;
mod service;
mod settings;
mod target;

pub use body::FallbackBody;
pub use group::{
    Availability, Candidate, CheckAvailability, DeploymentSnapshot, GroupSnapshot, Strategy,
    UnknownStrategy,
};
pub use protocol::Protocol;
pub use report::{FallbackReport, TRACING_TARGET};
pub use rewrite::{RewriteError, normalise_model, rewrite_model};
pub use route::Route;
pub use service::{Fallback, FallbackBuilder};
pub use settings::{FallbackSettings, TargetSettings};
pub use target::{AdaptFn, Target};

/// A fallback that does not hold together, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid fallback: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}
