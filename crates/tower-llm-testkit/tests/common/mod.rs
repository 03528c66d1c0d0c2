//! Clients for the simulator tests: a hyper client for ordinary calls and
//! a raw socket for checking exact bytes and connection behaviour.

#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_llm_testkit::{Api, Simulator};

/// A simulator giving every request `fault`.
pub async fn sim_with(fault: tower_llm_testkit::Fault) -> Simulator {
    sim_builder_with(fault).start().await.unwrap()
}

pub fn sim_builder_with(fault: tower_llm_testkit::Fault) -> tower_llm_testkit::SimulatorBuilder {
    Simulator::builder().plan(tower_llm_testkit::FaultPlan::always(fault))
}

/// One chat request on a fresh connection, read raw until `limit`.
pub async fn raw_chat(
    sim: &Simulator,
    api: Api,
    stream: bool,
    limit: Duration,
) -> (Vec<u8>, RawEnd) {
    raw_exchange(
        sim.addr(),
        &raw_post(api, &chat_body(api, "m", stream)),
        limit,
    )
    .await
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A chat request body for `api` with the given model and stream flag.
pub fn chat_body(api: Api, model: &str, stream: bool) -> String {
    match api {
        Api::AnthropicMessages => format!(
            r#"{{"model":"{model}","max_tokens":256,"stream":{stream},"messages":[{{"role":"user","content":"Say hello"}}]}}"#
        ),
        _ => format!(
            r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"Say hello"}}]}}"#
        ),
    }
}

/// What came back, with the body read to the end (or the error that ended it).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub body_error: Option<String>,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub async fn send(
    client: &HttpClient,
    sim: &Simulator,
    api: Api,
    body: &str,
) -> Result<Answer, hyper_util::client::legacy::Error> {
    post(client, &sim.url(api), body).await
}

pub async fn post(
    client: &HttpClient,
    url: &str,
    body: &str,
) -> Result<Answer, hyper_util::client::legacy::Error> {
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::from(body.to_owned()))
        .unwrap();
    let response = client.request(request).await?;
    let (parts, mut body) = response.into_parts();
    let mut collected = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    collected.extend_from_slice(&data);
                }
            }
            Err(error) => {
                body_error = Some(error.to_string());
                break;
            }
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: collected.into(),
        body_error,
    })
}

pub async fn chat(client: &HttpClient, sim: &Simulator, api: Api, stream: bool) -> Answer {
    send(client, sim, api, &chat_body(api, "test-model", stream))
        .await
        .unwrap()
}

/// Sends raw bytes on a new connection and reads until the server closes it
/// (or `limit` has passed since the start). Returns what was read and how
/// the read ended.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (Vec<u8>, RawEnd) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    let end = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break RawEnd::StillOpen,
            Ok(Ok(0)) => break RawEnd::Closed,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => break RawEnd::Reset,
            Ok(Err(e)) => panic!("unexpected read error {e}"),
        }
    };
    (out, end)
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RawEnd {
    Closed,
    Reset,
    StillOpen,
}

/// A complete HTTP/1.1 request with `connection: close`.
pub fn raw_post(api: Api, body: &str) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        api.path(),
        body.len()
    )
    .into_bytes()
}

/// The SSE `data:` payloads of a body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

/// The SSE `event:` names of a body, in order (events without a name are "message").
pub fn sse_names(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .find_map(|line| line.strip_prefix("event: "))
                .unwrap_or("message")
                .to_owned()
        })
        .collect()
}

/// The streamed text content of a body, whatever its API.
pub fn streamed_text(api: Api, body: &str) -> String {
    let mut text = String::new();
    let payloads: Vec<String> = match api {
        Api::OllamaChat => body.lines().map(str::to_owned).collect(),
        _ => sse_data(body),
    };
    for payload in payloads {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&payload) else {
            continue;
        };
        let piece = match api {
            Api::OpenAiChat => value.pointer("/choices/0/delta/content"),
            Api::AnthropicMessages => value.pointer("/delta/text"),
            Api::OllamaChat => value.pointer("/message/content"),
            _ => None,
        };
        if let Some(piece) = piece.and_then(|v| v.as_str()) {
            text.push_str(piece);
        }
    }
    text
}

/// The body of a raw HTTP/1.1 response with chunked transfer encoding,
/// decoded as far as it came (a stream cut or still open has no last chunk).
pub fn dechunked_body(raw: &[u8]) -> String {
    let text = std::str::from_utf8(raw).unwrap();
    let (_, mut rest) = text.split_once("\r\n\r\n").unwrap();
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or_default();
    }
    body
}

/// The text of an answer, streamed or whole, whatever its API.
pub fn answer_text(api: Api, stream: bool, answer: &Answer) -> String {
    if stream {
        return streamed_text(api, answer.text());
    }
    let pointer = match api {
        Api::OpenAiChat => "/choices/0/message/content",
        Api::AnthropicMessages => "/content/0/text",
        _ => "/message/content",
    };
    answer
        .json()
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no text at {pointer}: {}", answer.text()))
        .to_owned()
}
