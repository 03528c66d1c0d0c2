//! One vocabulary for every way an LLM API call fails.
//!
//! `tower-llm-classify` reads a call's outcome once — the HTTP status, the
//! provider's error body, the rate-limit headers, the transport error chain,
//! an error event inside a 200 stream, a gRPC status — and turns it into one
//! typed [`Classification`]: an [`ErrorKind`], whether it is retryable, the
//! delay the server asked for, the phase it happened in, and the provider's
//! own code and request id. The retry, circuit-breaker and fallback layers of
//! tower-llm decide from that value alone.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_llm_classify::{ClassifyLayer, ErrorKind, LlmError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A client that answers like an overloaded Anthropic.
//! let client = tower::service_fn(|_req: Request<Full<Bytes>>| async {
//!     let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
//!     Ok::<_, std::io::Error>(
//!         Response::builder()
//!             .status(529)
//!             .header("x-should-retry", "true")
//!             .header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
//!             .body(Full::new(Bytes::from(body)))
//!             .unwrap(),
//!     )
//! });
//! let mut service = ServiceBuilder::new().layer(ClassifyLayer::new()).service(client);
//!
//! let request = Request::post("https://api.anthropic.com/v1/messages")
//!     .body(Full::new(Bytes::from(r#"{"model":"claude-sonnet-4-5","max_tokens":64}"#)))
//!     .unwrap();
//! let error: LlmError = service.ready().await.unwrap().call(request).await.unwrap_err();
//! let c = error.classification();
//! assert_eq!(c.kind(), ErrorKind::Overloaded);
//! assert!(c.retryable());
//! assert_eq!(c.code(), Some("overloaded_error"));
//! assert_eq!(c.request_id(), Some("req_011CSHoEeqs5C35K2UUqR7Fy"));
//! // The provider's own response is still there for a gateway to forward.
//! assert_eq!(error.into_upstream_response().unwrap().status(), 529);
//! # }
//! ```
//!
//! # Why classify, and why here
//!
//! HTTP status is not enough: OpenAI's 429 is either a rate limit that
//! passes or a quota that never will (`insufficient_quota`); Anthropic's 529
//! is global overload, not a limit on the account; a context-length error is
//! a 400 that a bigger model can serve; errors arrive inside 200 streams.
//! Every official SDK retries every 429 blindly (`_should_retry` in
//! openai-python's `_base_client.py`), and tower-http's classifiers see only
//! the status and a `Display` string. Reading all of it once, at the
//! innermost layer, lets the outer layers stay small and agree with each
//! other.
//!
//! # What is where
//!
//! - [`ErrorKind`], [`Classification`], [`Phase`]: the vocabulary.
//! - [`LlmError`]: the one error type of the stack; [`Classified`] reads the
//!   classification from any error.
//! - [`classify_response`], [`classify_error`], [`classify_grpc`]: the
//!   classifiers, usable without the layer.
//! - [`hint`]: `retry-after-ms`, `retry-after`, reset headers, `x-should-retry`.
//! - [`stream`]: the body wrapper, the SSE/NDJSON scanner and the outcome hook.
//! - [`RequestMeta`]: provider, model and stream flag, read once per request.
//! - [`json`]: the top-level members of a JSON body, keys compared decoded.
//! - [`ClassifyLayer`] / [`Classify`]: the Tower layer.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod attempt;
mod bytes;
mod classification;
pub mod env;
mod error;
pub mod future;
mod grpc;
pub mod hint;
pub mod json;
mod kind;
mod layer;
mod meta;
mod names;
mod provider;
pub mod redact;
pub mod replay;
mod response;
mod service;
pub mod stream;
mod template;
mod token;
mod transport;

pub use attempt::{AttemptEnd, EndReason};
pub use classification::{Classification, Phase};
pub use error::{BoxError, Classified, LlmError};
pub use grpc::classify_grpc;
pub use kind::{ErrorKind, UnknownErrorKind};
pub use layer::{ClassifyLayer, DEFAULT_ERROR_BODY_LIMIT};
pub use meta::RequestMeta;
pub use provider::{Provider, UnknownProvider};
pub use response::classify_response;
pub use service::Classify;
pub use token::RequestToken;
pub use transport::classify_error;
