//! The stack inside a tonic app: a gRPC service whose handler calls an LLM
//! through an `LlmStack`, and maps the stack's `LlmError` to a
//! `tonic::Status` a gRPC client can act on.
//!
//! No `.proto` and no build script: the messages are hand-written prost
//! structs, the server is a `tower::Service` that dispatches on the path to
//! `tonic::server::Grpc` with `tonic_prost::ProstCodec`, the client is
//! `tonic::client::Grpc` over a `Channel`. It is what `tonic-build` would
//! generate for:
//!
//! ```proto
//! package llm;
//! service Assistant { rpc Ask(AskRequest) returns (AskReply); }
//! message AskRequest { string prompt = 1; string model = 2; }
//! message AskReply { string answer = 1; string served_by = 2; uint32 attempts = 3; }
//! ```
//!
//! The LLM is a `tower_llm_testkit` simulator on 127.0.0.1 (no network, no
//! keys). The example starts the gRPC server on 127.0.0.1:0, asks once
//! while the provider is healthy and prints the answer, then asks again
//! while the provider fails in three ways and prints the status each
//! failure became (a prompt too long, an overload, a rate limit with
//! `grpc-retry-pushback-ms`), and once more during the cooldown the rate
//! limit started, which the stack refuses without calling the provider.
//!
//! Run: `cargo run --example tonic_server`
//! (the mapping's unit test: `cargo test --example tonic_server`)

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{Service, ServiceExt};
use tower_llm::retry::RetryStats;
use tower_llm::stack::{LlmStack, Stack, served_by};
use tower_llm::{ErrorKind, LlmError};
use tower_llm_testkit::{FaultPlan, Simulator};

/// `llm.AskRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct AskRequest {
    /// What to ask.
    #[prost(string, tag = "1")]
    prompt: String,
    /// Which model (the stack routes on it).
    #[prost(string, tag = "2")]
    model: String,
}

/// `llm.AskReply`.
#[derive(Clone, PartialEq, prost::Message)]
struct AskReply {
    /// The model's answer.
    #[prost(string, tag = "1")]
    answer: String,
    /// The stack's target that answered.
    #[prost(string, tag = "2")]
    served_by: String,
    /// Attempts the serving target took.
    #[prost(uint32, tag = "3")]
    attempts: u32,
}

/// The gRPC method's full path.
const ASK: &str = "/llm.Assistant/Ask";

/// The `llm.Assistant` service: what `tonic-build` would generate as
/// `AssistantServer`, with the handler inline.
#[derive(Clone, Debug)]
struct AssistantServer {
    llm: Stack,
}

impl NamedService for AssistantServer {
    const NAME: &'static str = "llm.Assistant";
}

impl Service<http::Request<tonic::body::Body>> for AssistantServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The stack is always ready; each target awaits its own readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let llm = self.llm.clone();
        Box::pin(async move {
            if request.uri().path() != ASK {
                return Ok(Status::unimplemented(request.uri().path().to_owned()).into_http());
            }
            // `UnaryService` is implemented for any `Service<tonic::Request<_>>`
            // whose error is a `Status`.
            let handler = tower::service_fn(move |ask_request| ask(llm.clone(), ask_request));
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<AskReply, AskRequest>::default());
            Ok(grpc.unary(handler, request).await)
        })
    }
}

/// The handler: one chat completion through the stack.
async fn ask(
    llm: Stack,
    request: tonic::Request<AskRequest>,
) -> Result<tonic::Response<AskReply>, Status> {
    let AskRequest { prompt, model } = request.into_inner();
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    let request = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.to_string())
        .map_err(|e| Status::internal(e.to_string()))?;
    let response = llm.oneshot(request).await.map_err(|e| status_of(&e))?;
    let served_by = served_by(&response).unwrap_or_default().to_owned();
    let attempts = RetryStats::of(response.extensions()).attempts;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| status_of(&e))?
        .to_bytes();
    let completion: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Status::internal(format!("the provider's answer is not JSON: {e}")))?;
    let answer = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(tonic::Response::new(AskReply {
        answer,
        served_by,
        attempts,
    }))
}

/// The gRPC code a caller should see for an LLM failure.
///
/// The inverse of `tower_llm::classify::classify_grpc` where a kind has a
/// gRPC twin (gRPC A6 and `tower-http`'s `GrpcErrorsAsFailures` read the
/// codes the same way): a gRPC client's own retry policy then retries
/// `UNAVAILABLE` and honours `RESOURCE_EXHAUSTED`'s pushback.
fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::RateLimited | ErrorKind::QuotaExhausted => Code::ResourceExhausted,
        // The upstream is unhealthy, or we stopped asking it: try later.
        ErrorKind::Overloaded
        | ErrorKind::ServerError
        | ErrorKind::Connect
        | ErrorKind::Transport
        | ErrorKind::StreamIncomplete
        | ErrorKind::CircuitOpen
        | ErrorKind::BudgetExhausted => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        // The request can never be served as it is.
        ErrorKind::InvalidRequest
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::ContentFiltered
        | ErrorKind::PayloadTooLarge => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Cancelled => Code::Cancelled,
        // The server's own provider key was refused: not the caller's
        // credentials, so not UNAUTHENTICATED / PERMISSION_DENIED.
        ErrorKind::Authentication | ErrorKind::Permission => Code::Internal,
        _ => Code::Unknown,
    }
}

/// `error` as a `Status`: its code, its message (credentials already
/// redacted by `LlmError`'s `Display`), and the provider's retry hint as
/// `grpc-retry-pushback-ms` (gRPC A6).
fn status_of(error: &LlmError) -> Status {
    let mut status = Status::new(code_of(error.kind()), error.to_string());
    if let Some(wait) = error.classification().retry_after() {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", millis.into());
    }
    status
}

/// One call of `llm.Assistant/Ask` with a tonic client.
async fn call_ask(addr: SocketAddr, prompt: &str) -> Result<AskReply, Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let request = tonic::Request::new(AskRequest {
        prompt: prompt.to_owned(),
        model: "gpt-4o".to_owned(),
    });
    let response = client
        .unary(
            request,
            PathAndQuery::from_static(ASK),
            ProstCodec::<AskRequest, AskReply>::default(),
        )
        .await?;
    Ok(response.into_inner())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The LLM the handler calls, and the stack in front of it (the
    // development preset: one quick retry, short hints only).
    let provider = Simulator::start().await?;
    let provider_url = provider.base_url().parse()?;
    let llm = LlmStack::development()
        .target(
            "openai",
            Client::builder(TokioExecutor::new()).build_http(),
            |t| t.base_url(provider_url),
        )
        .build()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(AssistantServer { llm })
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    println!(
        "gRPC server llm.Assistant on {addr}, LLM at {}\n",
        provider.base_url()
    );

    let reply = call_ask(addr, "Say hello.").await?;
    println!(
        "Ask -> {:?} (served by {}, {} attempt(s))\n",
        reply.answer, reply.served_by, reply.attempts
    );

    // The last one is healthy again, but the rate limit before it started a
    // cooldown on the breaker's key: refused at once, the provider not called.
    for plan in ["context_length", "overloaded", "rate_limited@30s", "ok"] {
        provider.set_plan(plan.parse::<FaultPlan>()?);
        let before = provider.stats().requests;
        let outcome = call_ask(addr, "Say hello.").await;
        let calls = provider.stats().requests - before;
        match outcome {
            Ok(reply) => println!("provider `{plan}`: answered {:?}", reply.answer),
            Err(status) => {
                let pushback = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .and_then(|v| v.to_str().ok())
                    .map(|ms| format!(", grpc-retry-pushback-ms: {ms}"))
                    .unwrap_or_default();
                println!(
                    "provider `{plan}` ({calls} upstream call(s)): {:?}{pushback}\n  {}",
                    status.code(),
                    status.message()
                );
            }
        }
    }

    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_llm::Classification;
    use tower_llm::classify::classify_grpc;

    #[test]
    fn every_kind_maps_to_the_code_a_grpc_client_expects() {
        for (kind, code) in [
            (ErrorKind::RateLimited, Code::ResourceExhausted),
            (ErrorKind::QuotaExhausted, Code::ResourceExhausted),
            (ErrorKind::Overloaded, Code::Unavailable),
            (ErrorKind::CircuitOpen, Code::Unavailable),
            (ErrorKind::Timeout, Code::DeadlineExceeded),
            (ErrorKind::InvalidRequest, Code::InvalidArgument),
            (ErrorKind::ContextLengthExceeded, Code::InvalidArgument),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::Authentication, Code::Internal),
        ] {
            assert_eq!(code_of(kind), code, "{kind:?}");
        }
        for kind in ErrorKind::ALL {
            assert_ne!(code_of(kind), Code::Ok, "{kind:?}");
        }
    }

    #[test]
    fn a_grpc_status_survives_the_round_trip_with_its_pushback() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("8"));
        trailers.insert(
            "grpc-retry-pushback-ms",
            http::HeaderValue::from_static("2000"),
        );
        let classification =
            classify_grpc(&trailers).unwrap_or_else(|| Classification::new(ErrorKind::Unknown));
        let status = status_of(&LlmError::new(classification));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .map(|v| v.to_str().ok()),
            Some(Some("2000"))
        );
    }
}
