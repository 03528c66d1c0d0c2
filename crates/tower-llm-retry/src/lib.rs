//! A Tower retry layer that knows how LLM providers fail.
//!
//! [`RetryLayer`] retries what a retry can fix — rate limits, overload,
//! server errors, timeouts, dropped connections, an error as the first event
//! of a stream — and nothing else: quota exhausted, bad keys, unknown
//! models, invalid requests, context length, content policy. It decides from
//! the [`Classification`] that `tower-llm-classify` puts on every failure,
//! so it sits above [`ClassifyLayer`]:
//!
//! [`Classification`]: tower_llm_classify::Classification
//! [`ClassifyLayer`]: tower_llm_classify::ClassifyLayer
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_classify::ClassifyLayer;
//! use tower_llm_retry::{RetryLayer, RetryPolicy, RetryStats};
//! use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};
//!
//! // A provider that is overloaded once, then answers.
//! let sim = Simulator::builder()
//!     .plan(FaultPlan::script([Fault::overloaded()]))
//!     .start()
//!     .await?;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http();
//! let service = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::builder().seed(7).build()?))
//!     .layer(ClassifyLayer::new())
//!     .service(client);
//!
//! let request = http::Request::post(sim.url(Api::AnthropicMessages))
//!     .header("content-type", "application/json")
//!     .body(Full::<bytes::Bytes>::from(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[]}"#))?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.extensions().get::<RetryStats>().unwrap().attempts, 2);
//! # Ok(())
//! # }
//! ```
//!
//! # What it does that the peers do not
//!
//! - **Decides from the provider's answer, not the status.** A 429 that
//!   means "out of quota" is not retried; `x-should-retry` overrides the
//!   status, as in every official SDK (`_should_retry` in openai-python's
//!   `_base_client.py`).
//! - **Server hints win.** `retry-after-ms`, `retry-after` (seconds or
//!   HTTP-date), reset headers and body hints replace the backoff: the wait
//!   is between the hint and 1.5× it (Envoy). A hint above the ceiling
//!   (60 s) or past the deadline ends the retrying at once, with the hint
//!   in the error, so a fallback can route elsewhere instead of sleeping.
//! - **A budget.** Retries may add at most 10 % of recent traffic (or 1/s
//!   for a quiet client; Finagle, gRPC, SRE book), shared by every clone: a
//!   dead provider sees 1.1× the load, not 3×. Without it, 100 callers × 3 attempts
//!   would triple the load on an upstream that is already down. A retry
//!   that succeeds is given back, as in the AWS SDKs' retry quota, so
//!   random failures spend only the retries that fail too: 22 % of calls
//!   failing at random are retried in full, where an outage still gets
//!   1.1×.
//! - **Streams.** A streamed 2xx is held back until its first content
//!   event: an `overloaded_error` as the first event is retried and the
//!   caller gets a clean stream. Once content has reached the caller,
//!   nothing is replayed. A whole (non-streamed) JSON answer is held to its
//!   end, so a body cut midway is retried as well. The stream is read once:
//!   the guard follows what Classify's scan below found (the
//!   [`StreamProgress`](tower_llm_classify::stream::StreamProgress) in the
//!   response's extensions) and scans a stream itself only when nothing
//!   below does.
//! - **Deadlines.** One deadline over all attempts and waits, a per-attempt
//!   timeout (to the head, and for streams to the first content), for
//!   streamed requests a shorter limit to the head (providers send it at
//!   once) and one to the first content, and no wait is started that the
//!   deadline could not follow with an attempt. A target that stayed
//!   silent can be left to a fallback after one attempt instead of being
//!   waited out again (`retry_on_silence(false)`).
//!   An attempt the layer ends is a timeout for a circuit breaker below
//!   it, not a caller that went away: each attempt's request carries an
//!   [`AttemptEnd`](tower_llm_classify::AttemptEnd) that says so, set
//!   before the attempt is dropped, so a silent upstream opens its breaker.
//! - **The request is read once.** Its body is read into `Bytes` once and
//!   shared by every attempt; the last attempt the policy allows takes the
//!   request itself, earlier ones a copy of its head. A request whose outer
//!   layer keeps the caller's request anyway (`Fallback`, for a target
//!   another may follow) says how to make its head again
//!   ([`Remake`](tower_llm_classify::replay::Remake)): the first attempt
//!   then takes the request as it is, and a head is remade only for an
//!   attempt after a failure.
//!
//! # Why budgets and not only max attempts?
//!
//! Max attempts bound the work for one request; they do not bound the
//! work for all of them. When a provider goes down, every request fails,
//! every request retries, and the provider receives `max_attempts` times its
//! usual load just as it tries to come back (the retry-sustained overload of
//! Bronson et al., "Metastable Failures in Distributed Systems", HotOS
//! 2021). A budget bounds the sum: retries stay a small fraction of
//! traffic, so transient failures are still retried while a full outage is
//! not amplified. What tells the two apart is whether retries work: under
//! random failures most retries succeed and are given back; in an outage
//! none does, and the ratio holds.

#![forbid(unsafe_code)]

mod backoff;
mod body;
mod budget;
pub mod future;
mod held;
mod layer;
mod policy;
mod read_ahead;
mod report;
mod service;
mod settings;
mod template;

pub use backoff::{Backoff, Jitter};
pub use body::{ReplayBody, RetryBody};
pub use budget::{RetryBudget, RetryWithdrawal};
pub use layer::RetryLayer;
pub use policy::{ConfigError, Decision, GiveUp, RetryPolicy, RetryPolicyBuilder, RetryPredicate};
pub use report::{RetryStats, TRACING_TARGET};
pub use service::Retry;
pub use settings::{BudgetSettings, ENV_VARS, RetrySettings};
