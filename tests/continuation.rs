//! Streams that finish, out of the box: stacks built from a configuration
//! that names only targets and routes, over real HTTP to the testkit's
//! simulators (which answer a prefilled request with the rest of their
//! reply, byte for byte, as providers that accept one do).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error as _;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::ServiceExt;
use tower_llm::config::StackConfig;
use tower_llm::fallback::continuation::ContinuationReport;
use tower_llm::retry::ReplayBody;
use tower_llm::stack::Stack;
use tower_llm::{ErrorKind, LlmError};
use tower_llm_testkit::{Fault, FaultPlan, PrefillMode, Simulator};

fn client() -> Client<HttpConnector, ReplayBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn simulator(fault: Fault) -> Simulator {
    Simulator::builder()
        .reply_tokens(60)
        .plan(fault)
        .start()
        .await
        .unwrap()
}

/// Targets (name, simulator, continuation setting) and one route.
fn stack(targets: &[(&str, &Simulator, &str)]) -> Stack {
    let mut text = String::new();
    for (name, sim, continuation) in targets {
        text += &format!(
            "[[targets]]\nname = \"{name}\"\nbase_url = \"{}/v1\"\ncontinuation = \"{continuation}\"\n\n",
            sim.base_url()
        );
    }
    let names: Vec<String> = targets.iter().map(|(n, ..)| format!("\"{n}\"")).collect();
    text += &format!(
        "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [{}]\n",
        names.join(", ")
    );
    StackConfig::from_toml(&text)
        .unwrap()
        .build(client())
        .unwrap()
}

fn chat() -> Request<String> {
    Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
                .to_owned(),
        )
        .unwrap()
}

/// The answer's text, as an OpenAI SDK concatenates it, and the stream.
async fn read(stack: Stack) -> (Result<String, LlmError>, Option<ContinuationReport>) {
    let response = stack.oneshot(chat()).await.unwrap();
    let report = response.extensions().get::<ContinuationReport>().cloned();
    let body = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return (Err(error), report),
    };
    let stream = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(stream.matches("\"role\"").count(), 1, "one role chunk");
    assert_eq!(stream.matches("data: [DONE]").count(), 1, "one end");
    assert!(!stream.contains("\"error\""), "no error event: {stream}");
    let text = stream
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d)
                .unwrap()
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    (Ok(text), report)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_cut_after_40_of_60_tokens_reaches_the_caller_as_one_complete_answer() {
    let primary = simulator(Fault::stream_drop_after(40)).await;
    let backup = Simulator::builder().reply_tokens(60).start().await.unwrap();
    let stack = stack(&[
        ("primary", &primary, "none"),
        ("backup", &backup, "trailing_assistant"),
    ]);
    let (text, report) = read(stack).await;
    assert_eq!(
        text.unwrap(),
        primary.reply(),
        "no text twice, none missing"
    );
    let report = report.unwrap();
    assert_eq!(report.continued(), 1);
    assert_eq!(
        report.targets().iter().map(|t| &**t).collect::<Vec<_>>(),
        ["backup"]
    );
    let asked = &backup.requests()[0];
    assert!(asked.prefill.is_some(), "the backup was asked for the rest");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_stalled_after_content_is_continued_where_it_stopped() {
    let primary = simulator(Fault::stream_stall_silent_after(20)).await;
    let backup = Simulator::builder().reply_tokens(60).start().await.unwrap();
    let stack = stack(&[
        ("primary", &primary, "none"),
        ("backup", &backup, "trailing_assistant"),
    ]);
    let started = tokio::time::Instant::now();
    let (text, report) = read(stack).await;
    assert_eq!(text.unwrap(), primary.reply());
    assert_eq!(report.unwrap().continued(), 1);
    // `sdk_default`'s stream idle timeout: 60 s after the last content.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(60) && took < Duration::from_secs(61),
        "{took:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_error_event_after_content_is_never_seen_by_the_caller_when_the_answer_is_continued() {
    // The tokens 10 ms apart, so that content has reached the caller when
    // the error event comes (in one frame with it, the stack would still
    // hold the content and replay the request whole).
    let primary =
        simulator(Fault::stream_error_after(20).with_token_delay(Duration::from_millis(10))).await;
    let backup = Simulator::builder().reply_tokens(60).start().await.unwrap();
    let stack = stack(&[
        ("primary", &primary, "none"),
        ("backup", &backup, "trailing_assistant"),
    ]);
    // `read` checks that the stream holds no error event.
    let (text, report) = read(stack).await;
    assert_eq!(text.unwrap(), primary.reply());
    assert_eq!(report.unwrap().continued(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn when_the_backup_refuses_prefill_the_caller_gets_the_original_cause_not_a_truncated_answer()
{
    let primary = simulator(Fault::stream_drop_after(40)).await;
    let backup = Simulator::builder()
        .reply_tokens(60)
        .prefill(PrefillMode::Refuse)
        .start()
        .await
        .unwrap();
    let stack = stack(&[
        ("primary", &primary, "none"),
        ("backup", &backup, "trailing_assistant"),
    ]);
    let (text, _) = read(stack).await;
    let error = text.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    let cause = error
        .source()
        .and_then(|s| s.downcast_ref::<LlmError>())
        .unwrap();
    assert_ne!(
        cause.kind(),
        ErrorKind::InvalidRequest,
        "the original failure, never the prefill's refusal"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_cut_in_the_middle_of_a_tool_call_ends_with_the_typed_error_and_is_not_continued()
{
    // A role chunk, then the start of a tool call's arguments, then the
    // connection ends: no finish, no `[DONE]`.
    let chunk = |delta: &str| {
        format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}]}}\n\n"
        )
    };
    let body = chunk(r#"{"role":"assistant","content":null}"#)
        + &chunk(
            r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Par"}}]}"#,
        );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    let primary = simulator(Fault::raw(http::StatusCode::OK, headers, body)).await;
    let backup = Simulator::builder().reply_tokens(60).start().await.unwrap();
    let stack = stack(&[
        ("primary", &primary, "trailing_assistant"),
        ("backup", &backup, "trailing_assistant"),
    ]);
    let response = stack.oneshot(chat()).await.unwrap();
    let error = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    assert_eq!(primary.requests().len(), 1, "no replay after content");
    assert!(
        backup.requests().is_empty(),
        "a tool call in progress is never continued"
    );
}

/// A simulator whose first answer has `fault`, the others none.
async fn once(fault: Fault) -> Simulator {
    Simulator::builder()
        .reply_tokens(60)
        .plan(FaultPlan::script([fault]))
        .start()
        .await
        .unwrap()
}

/// A stack over one target of `sim` (at `base`), cut streams continued.
fn lone(sim: &Simulator, base: &str) -> Stack {
    let text = format!(
        "[[targets]]\nname = \"only\"\nbase_url = \"{}{base}\"\ncontinuation = \"trailing_assistant\"\n",
        sim.base_url()
    );
    StackConfig::from_toml(&text)
        .unwrap()
        .build(client())
        .unwrap()
}

async fn body_of(stack: Stack, path: &str, body: &str) -> String {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap();
    let response = stack.oneshot(request).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_anthropic_stream_cut_after_content_is_continued_in_its_own_events() {
    let sim = once(Fault::stream_drop_after(25)).await;
    let stream = body_of(
        lone(&sim, "/v1"),
        "/messages",
        r#"{"model":"claude-sonnet-4","max_tokens":512,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let text: String = stream
        .split("\n\n")
        .filter_map(|e| e.split_once("data: ").map(|(_, d)| d))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta")
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, sim.reply(), "no text twice, none missing");
    assert_eq!(
        stream.matches("event: message_start").count(),
        1,
        "{stream}"
    );
    assert_eq!(stream.matches("event: message_stop").count(), 1);
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_ollama_stream_cut_after_content_is_continued_line_by_line() {
    let sim = once(Fault::stream_drop_after(25)).await;
    let stream = body_of(
        lone(&sim, ""),
        "/api/chat",
        r#"{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let lines: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(text, sim.reply(), "no text twice, none missing");
    assert_eq!(lines.iter().filter(|l| l["done"] == true).count(), 1);
    assert_eq!(sim.requests().len(), 2);
}

/// How many continuations `sim` was asked for.
fn prefills(sim: &Simulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.prefill.is_some())
        .count()
}

/// A primary whose streams break after 40 tokens, and a backup that can
/// continue them but refuses to for now.
async fn with_a_refusing_backup() -> (Simulator, Simulator, Stack) {
    let primary = simulator(Fault::stream_drop_after(40)).await;
    let backup = Simulator::builder().reply_tokens(60).start().await.unwrap();
    backup.set_plan(Fault::refuse_prefill());
    let stack = stack(&[
        ("primary", &primary, "none"),
        ("backup", &backup, "trailing_assistant"),
    ]);
    (primary, backup, stack)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_refused_continuation_does_not_stop_the_target_continuing_the_next_stream() {
    // A refusal may be one request's (what it asked for forbids a
    // prefill): the next caller's broken stream is still continued there.
    let (primary, backup, stack) = with_a_refusing_backup().await;
    let (text, _) = read(stack.clone()).await;
    assert_eq!(text.unwrap_err().kind(), ErrorKind::StreamIncomplete);
    backup.set_plan(Fault::ok());
    let (text, report) = read(stack).await;
    assert_eq!(text.unwrap(), primary.reply());
    assert_eq!(report.unwrap().continued(), 1);
    assert_eq!(prefills(&backup), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_target_that_refuses_three_continuations_in_a_row_is_left_out_for_ten_minutes() {
    let (primary, backup, stack) = with_a_refusing_backup().await;
    for _ in 0..4 {
        let (text, _) = read(stack.clone()).await;
        assert_eq!(text.unwrap_err().kind(), ErrorKind::StreamIncomplete);
    }
    assert_eq!(prefills(&backup), 3, "the fourth was not asked");
    // Ten minutes on, it is asked again.
    backup.set_plan(Fault::ok());
    tokio::time::advance(Duration::from_secs(600)).await;
    let (text, _) = read(stack).await;
    assert_eq!(text.unwrap(), primary.reply());
    assert_eq!(prefills(&backup), 4);
}
