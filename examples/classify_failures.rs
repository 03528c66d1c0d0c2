//! The classify layer at work on real-looking provider failures.
//!
//! Starts a small server on 127.0.0.1 that answers the way OpenAI,
//! Anthropic, Gemini, Azure, Bedrock and Ollama fail (bodies and headers
//! as the providers' error docs give them), sends one request per case
//! through a hyper client wrapped in `ClassifyLayer`, and prints what each
//! failure was classified as — including failures that arrive inside a 200
//! stream and a connection that drops mid-stream.
//!
//! Run: `cargo run --example classify_failures`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm::classify::{Classification, ClassifyLayer};

/// One scripted upstream answer: the path the client calls (it decides the
/// provider) and the raw HTTP/1.1 bytes the server writes before closing.
struct Case {
    name: &'static str,
    path: &'static str,
    response: String,
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// A chunked 200 stream; `complete` writes the terminating chunk.
fn chunked_stream(
    content_type: &str,
    headers: &[(&str, &str)],
    events: &[&str],
    complete: bool,
) -> String {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    for event in events {
        out.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    if complete {
        out.push_str("0\r\n\r\n");
    }
    out
}

fn cases() -> Vec<Case> {
    let json = ("content-type", "application/json");
    vec![
        Case {
            name: "OpenAI 429, a rate limit",
            path: "/openai/v1/chat/completions",
            response: http_response(
                "429 Too Many Requests",
                &[
                    json,
                    ("retry-after-ms", "1200"),
                    ("x-request-id", "req_7b1c"),
                ],
                r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 1.2s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            ),
        },
        Case {
            name: "OpenAI 429, but a quota",
            path: "/openai/v1/chat/completions",
            response: http_response(
                "429 Too Many Requests",
                &[json, ("x-request-id", "req_9d2e")],
                r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            ),
        },
        Case {
            name: "Anthropic 529 overloaded",
            path: "/anthropic/v1/messages",
            response: http_response(
                "529 ",
                &[
                    json,
                    ("x-should-retry", "true"),
                    ("request-id", "req_011CSH"),
                ],
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSH"}"#,
            ),
        },
        Case {
            name: "Anthropic prompt too long",
            path: "/anthropic/v1/messages",
            response: http_response(
                "400 Bad Request",
                &[json],
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}"#,
            ),
        },
        Case {
            name: "Gemini 429 per-minute quota",
            path: "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            response: http_response(
                "429 Too Many Requests",
                &[json],
                r#"{"error":{"code":429,"message":"You exceeded your current quota. Please retry in 47s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"47s"}]}}"#,
            ),
        },
        Case {
            name: "Gemini 429 per-day quota",
            path: "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            response: http_response(
                "429 Too Many Requests",
                &[json],
                r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#,
            ),
        },
        Case {
            name: "Azure content filter",
            path: "/azure/openai/deployments/gpt-4o/chat/completions",
            response: http_response(
                "400 Bad Request",
                &[json],
                r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#,
            ),
        },
        Case {
            name: "Bedrock throttling",
            path: "/bedrock/model/anthropic.claude-sonnet-4/invoke",
            response: http_response(
                "429 Too Many Requests",
                &[
                    json,
                    (
                        "x-amzn-errortype",
                        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                    ),
                ],
                r#"{"message":"Too many requests, please wait before trying again."}"#,
            ),
        },
        Case {
            name: "Anthropic error inside a 200 stream",
            path: "/anthropic/v1/messages",
            response: chunked_stream(
                "text/event-stream",
                &[("request-id", "req_011CSI")],
                &[
                    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n",
                    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
                    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                ],
                true,
            ),
        },
        Case {
            name: "OpenAI stream dropped after content",
            path: "/openai/v1/chat/completions",
            response: chunked_stream(
                "text/event-stream",
                &[("x-request-id", "req_4af0")],
                &[
                    "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"content\":\"The answer is\"}}]}\n\n",
                ],
                false,
            ),
        },
        Case {
            name: "Ollama model not pulled",
            path: "/ollama/api/chat",
            response: http_response(
                "404 Not Found",
                &[json],
                r#"{"error":"model \"llama3.3\" not found, try pulling it first"}"#,
            ),
        },
    ]
}

/// Serves the cases in order, one connection each, then stops.
async fn serve(listener: TcpListener, cases: Vec<Case>) {
    for case in cases {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0_u8; 64 * 1024];
        let mut read = 0;
        // Read the request head and its body (content-length) before answering.
        while let Ok(n) = socket.read(&mut buf[read..]).await {
            if n == 0 {
                break;
            }
            read += n;
            let text = String::from_utf8_lossy(&buf[..read]);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if read >= end + 4 + length {
                    break;
                }
            }
        }
        let _ = socket.write_all(case.response.as_bytes()).await;
        let _ = socket.shutdown().await;
    }
}

fn describe(c: &Classification) -> String {
    let mut out = format!("{:<24} retryable={:<5}", c.kind().as_str(), c.retryable());
    if let Some(delay) = c.retry_after() {
        out.push_str(&format!(" wait={delay:?}"));
    }
    if let Some(code) = c.code() {
        out.push_str(&format!(" code={code}"));
    }
    out.push_str(&format!(" phase={}", c.phase()));
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let cases = cases();
    let names: Vec<(&str, &str)> = cases.iter().map(|c| (c.name, c.path)).collect();
    let server = tokio::spawn(serve(listener, cases));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    println!("simulated provider on http://{addr}\n");
    for (name, path) in names {
        // The provider is detected from the real host; this server is local,
        // so say which provider it imitates.
        let provider = match path.split('/').nth(1) {
            Some("openai") => tower_llm::Provider::OpenAi,
            Some("anthropic") => tower_llm::Provider::Anthropic,
            Some("gemini") => tower_llm::Provider::Gemini,
            Some("azure") => tower_llm::Provider::AzureOpenAi,
            Some("bedrock") => tower_llm::Provider::Bedrock,
            _ => tower_llm::Provider::Ollama,
        };
        let service = ServiceBuilder::new()
            .layer(ClassifyLayer::new().provider(provider))
            .service(client.clone());
        let request = Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","stream":true,"messages":[]}"#,
            )))
            .expect("request");
        let outcome =
            match tokio::time::timeout(Duration::from_secs(5), service.oneshot(request)).await {
                Err(_) => "no answer within 5 s".to_owned(),
                Ok(Err(error)) => describe(error.classification()),
                Ok(Ok(response)) => match response.into_body().collect().await {
                    Ok(_) => "ok".to_owned(),
                    Err(error) => format!("{} (in the body)", describe(error.classification())),
                },
            };
        println!("{name:<38} -> {outcome}");
    }
    server.abort();
}
