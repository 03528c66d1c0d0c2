//! Continuation end to end: Fallback (continuing streams) over targets that
//! are Classify over an in-process upstream whose stream is cut after some
//! content, and which answers a prefilled request with the rest of its
//! reply, as providers that accept a trailing assistant message do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};
use tower_llm_classify::{ClassifyLayer, ErrorKind, LlmError};
use tower_llm_fallback::continuation::{Continuation, ContinuationReport};
use tower_llm_fallback::{Fallback, Target};

const REPLY: &str = "The quick brown fox jumps over the lazy dog, twice.";

type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, LlmError>;
type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<Boxed>, LlmError>;

/// An SSE body: its events, then a cut (an I/O error) or the end.
struct Sse {
    events: VecDeque<Bytes>,
    cut: bool,
}

impl Body for Sse {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.events.pop_front() {
            Some(event) => Poll::Ready(Some(Ok(Frame::data(event)))),
            None if self.cut => {
                self.cut = false;
                Poll::Ready(Some(Err(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))))
            }
            None => Poll::Ready(None),
        }
    }
}

/// An OpenAI-compatible upstream streaming `REPLY` a word at a time, cut
/// after `cut_after` content events (`None`: never); a request ending with
/// an assistant message gets the rest of the reply after it, or a 400 when
/// it `refuses` prefill. Records each request's body.
#[derive(Clone)]
struct Upstream {
    id: &'static str,
    model: &'static str,
    cut_after: Option<usize>,
    refuses: bool,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Upstream {
    fn new(id: &'static str, model: &'static str, cut_after: Option<usize>) -> Self {
        Upstream {
            id,
            model,
            cut_after,
            refuses: false,
            seen: Arc::default(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": 7, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    }
}

impl Service<Request<Full<Bytes>>> for Upstream {
    type Response = Response<Sse>;
    type Error = LlmError;
    type Future = std::future::Ready<Result<Response<Sse>, LlmError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let body = request.into_body();
        let bytes = futures_now(body);
        let sent: Value = serde_json::from_slice(&bytes).unwrap();
        self.seen.lock().unwrap().push(sent.clone());
        let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
        let prefill =
            (last["role"] == "assistant").then(|| last["content"].as_str().unwrap().to_owned());
        if prefill.is_some() && self.refuses {
            let body = r#"{"error":{"message":"prefill is not supported","type":"invalid_request_error","param":"messages","code":null}}"#;
            let response = Response::builder()
                .status(400)
                .header("content-type", "application/json")
                .body(Sse {
                    events: VecDeque::from([Bytes::from_static(body.as_bytes())]),
                    cut: false,
                })
                .unwrap();
            return std::future::ready(Ok(response));
        }
        let rest = match &prefill {
            Some(prefix) => REPLY.strip_prefix(prefix.as_str()).unwrap_or(REPLY),
            None => REPLY,
        };
        let mut events = VecDeque::new();
        events.push_back(self.chunk(json!({"role": "assistant", "content": ""}), None));
        let words: Vec<&str> = rest.split_inclusive(' ').collect();
        let cut = prefill.is_none() && self.cut_after.is_some_and(|n| n < words.len());
        let sent_words = match (cut, self.cut_after) {
            (true, Some(n)) => n,
            _ => words.len(),
        };
        for word in &words[..sent_words] {
            events.push_back(self.chunk(json!({"content": word}), None));
        }
        if !cut {
            events.push_back(self.chunk(json!({}), Some("stop")));
            events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(Sse { events, cut })
            .unwrap();
        std::future::ready(Ok(response))
    }
}

/// The bytes of a `Full` body, which is ready at once.
fn futures_now(body: Full<Bytes>) -> Bytes {
    let mut body = std::pin::pin!(body);
    let waker = std::task::Waker::noop();
    match body.as_mut().poll_frame(&mut Context::from_waker(waker)) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
        _ => Bytes::new(),
    }
}

fn stack(upstream: Upstream) -> Stack {
    let classified = ClassifyLayer::new().layer(upstream);
    BoxCloneSyncService::new(tower::util::MapResponse::new(
        classified,
        |response: Response<tower_llm_classify::stream::ResponseBody<Sse>>| {
            response.map(|body| body.boxed_unsync())
        },
    ))
}

fn request() -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Say it."}]});
    Request::post("http://gateway.local/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The events of an SSE stream, JSON where they are.
fn events(stream: &[u8]) -> Vec<String> {
    String::from_utf8(stream.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

fn text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_cut_after_content_reaches_the_caller_as_one_complete_answer() {
    let primary = Upstream::new("chatcmpl-first", "gpt-4o", Some(3));
    let seen = Arc::clone(&primary.seen);
    let fallback = Fallback::builder()
        .target(
            Target::new("primary", stack(primary))
                .base_url("http://127.0.0.1:8000/v1".parse().unwrap())
                .continuation(Continuation::TrailingAssistant),
        )
        .continue_streams(2)
        .build()
        .unwrap();
    let response = fallback.oneshot(request()).await.unwrap();
    let report = response
        .extensions()
        .get::<ContinuationReport>()
        .cloned()
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let events = events(&body);
    assert_eq!(text(&events), REPLY, "no text twice, none missing");
    assert_eq!(
        events.iter().filter(|e| e.contains("\"role\"")).count(),
        1,
        "one role chunk"
    );
    assert_eq!(events.iter().filter(|e| *e == "data: [DONE]").count(), 1);
    assert_eq!(report.continued(), 1);
    let requests = seen.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1]["messages"][1]["role"], "assistant");
    assert_eq!(requests[1]["messages"][1]["content"], "The quick brown ");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn another_target_continues_in_the_envelope_the_caller_saw_first() {
    let primary = Upstream::new("chatcmpl-first", "gpt-4o", Some(4));
    let backup = Upstream::new("chatcmpl-backup", "llama3.2", None);
    let backup_seen = Arc::clone(&backup.seen);
    let fallback = Fallback::builder()
        // OpenAI's API has no prefill: the rest comes from the backup.
        .target(
            Target::new("primary", stack(primary))
                .base_url("https://api.openai.com/v1".parse().unwrap()),
        )
        .target(
            Target::new("backup", stack(backup))
                .base_url("http://127.0.0.1:11434/v1".parse().unwrap())
                .model("llama3.2")
                .continuation(Continuation::TrailingAssistant),
        )
        .continue_streams(1)
        .build()
        .unwrap();
    let response = fallback.oneshot(request()).await.unwrap();
    let report = response
        .extensions()
        .get::<ContinuationReport>()
        .cloned()
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let events = events(&body);
    assert_eq!(text(&events), REPLY);
    assert!(
        events
            .iter()
            .all(|e| !e.contains("chatcmpl-backup") && !e.contains("llama3.2")),
        "{events:?}"
    );
    assert_eq!(
        report.targets().iter().map(|t| &**t).collect::<Vec<_>>(),
        ["backup"]
    );
    assert_eq!(backup_seen.lock().unwrap()[0]["model"], "llama3.2");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn when_the_only_other_target_refuses_prefill_the_caller_gets_the_original_failure() {
    let primary = Upstream::new("chatcmpl-first", "gpt-4o", Some(2));
    let mut backup = Upstream::new("chatcmpl-backup", "llama3.2", None);
    backup.refuses = true;
    let fallback = Fallback::builder()
        .target(
            Target::new("primary", stack(primary))
                .base_url("https://api.openai.com/v1".parse().unwrap()),
        )
        .target(
            Target::new("backup", stack(backup))
                .base_url("http://127.0.0.1:11434/v1".parse().unwrap())
                .continuation(Continuation::TrailingAssistant),
        )
        .continue_streams(1)
        .build()
        .unwrap();
    let response = fallback.oneshot(request()).await.unwrap();
    let error = response.into_body().collect().await.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::StreamIncomplete,
        "never a truncated answer as complete"
    );
    let cause = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<LlmError>())
        .unwrap();
    assert_eq!(
        cause.kind(),
        ErrorKind::Transport,
        "what broke the stream, not the refusal"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_continuation_a_cut_stream_ends_with_stream_incomplete() {
    let primary = Upstream::new("chatcmpl-first", "gpt-4o", Some(2));
    let fallback = Fallback::builder()
        .target(
            Target::new("primary", stack(primary))
                .base_url("http://127.0.0.1:8000/v1".parse().unwrap())
                .continuation(Continuation::TrailingAssistant),
        )
        .build()
        .unwrap();
    let response = fallback.oneshot(request()).await.unwrap();
    assert!(response.extensions().get::<ContinuationReport>().is_none());
    let error = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
}
