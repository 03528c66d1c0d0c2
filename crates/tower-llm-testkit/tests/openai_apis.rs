//! Legacy completions, embeddings and the Responses API: each answered as
//! OpenAI answers it, whole and streamed, and failed as the fault plan says;
//! and Anthropic's token counting beside its Messages API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower_llm_classify::stream::{Dialect, EventScanner, Framing};
use tower_llm_classify::{ErrorKind, Provider};
use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};

use common::client;

async fn post(sim: &Simulator, api: Api, body: &str) -> (StatusCode, String) {
    let request = http::Request::post(sim.url(api))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The `data:` payloads of an SSE stream, with their event names.
fn events(stream: &str) -> Vec<(String, Value)> {
    stream
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, serde_json::from_str(data).unwrap_or(Value::Null)))
        })
        .collect()
}

/// What the classify crate's scanner makes of a stream in `dialect`:
/// content events, whether it ended with its terminal event, its failure.
fn scan(dialect: Dialect, stream: &str) -> (u64, bool, Option<ErrorKind>) {
    let mut scanner = EventScanner::new(Framing::Sse, dialect, Provider::OpenAi);
    scanner.feed(stream.as_bytes());
    let error = scanner.error().map(|c| c.kind());
    (scanner.content_events(), scanner.is_terminated(), error)
}

#[tokio::test]
async fn legacy_completions_answer_whole_and_streamed_with_the_reply_as_text() {
    let sim = Simulator::start().await.unwrap();
    let (status, whole) = post(
        &sim,
        Api::OpenAiCompletions,
        r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say hello"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["text"], sim.reply());
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");

    let (_, stream) = post(
        &sim,
        Api::OpenAiCompletions,
        r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say hello","stream":true}"#,
    )
    .await;
    let text: String = events(&stream)
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, sim.reply());
    assert!(stream.ends_with("data: [DONE]\n\n"), "{stream}");
    let (content, terminated, error) = scan(Dialect::OpenAiChat, &stream);
    assert!(content > 0 && terminated && error.is_none());
}

#[tokio::test]
async fn embeddings_answer_one_vector_per_input_in_floats_or_base64() {
    let sim = Simulator::start().await.unwrap();
    let (status, floats) = post(
        &sim,
        Api::OpenAiEmbeddings,
        r#"{"model":"text-embedding-3-small","input":["first","second","first"],"dimensions":8}"#,
    )
    .await;
    assert_eq!(status, 200, "{floats}");
    let floats: Value = serde_json::from_str(&floats).unwrap();
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    let vector = |i: usize| -> Vec<f64> {
        data[i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    assert_eq!(vector(0).len(), 8);
    assert_eq!(vector(0), vector(2), "the same text, the same vector");
    assert_ne!(vector(0), vector(1));

    let (_, base64) = post(
        &sim,
        Api::OpenAiEmbeddings,
        r#"{"model":"text-embedding-3-small","input":"first","dimensions":8,"encoding_format":"base64"}"#,
    )
    .await;
    let base64: Value = serde_json::from_str(&base64).unwrap();
    let encoded = base64["data"][0]["embedding"].as_str().unwrap();
    // 8 little-endian f32s: 32 bytes, 44 base64 characters with padding.
    assert_eq!(encoded.len(), 44, "{encoded}");
    assert!(base64["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let (status, missing) = post(
        &sim,
        Api::OpenAiEmbeddings,
        r#"{"model":"text-embedding-3-small"}"#,
    )
    .await;
    assert_eq!(status, 400, "{missing}");
}

#[tokio::test]
async fn embeddings_get_the_fault_plan_like_chat() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::overloaded(), Fault::ok()]))
        .start()
        .await
        .unwrap();
    let body = r#"{"model":"text-embedding-3-small","input":"hi"}"#;
    let (first, error) = post(&sim, Api::OpenAiEmbeddings, body).await;
    assert_eq!(first, 503);
    let error: Value = serde_json::from_str(&error).unwrap();
    assert_eq!(error["error"]["code"], "server_is_overloaded");
    let (second, _) = post(&sim, Api::OpenAiEmbeddings, body).await;
    assert_eq!(second, 200);
}

#[tokio::test]
async fn the_responses_api_streams_numbered_events_ending_in_response_completed() {
    let sim = Simulator::start().await.unwrap();
    let (status, whole) = post(
        &sim,
        Api::OpenAiResponses,
        r#"{"model":"gpt-4o","input":"Say hello"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["object"], "response");
    assert_eq!(whole["status"], "completed");
    assert_eq!(whole["output"][0]["content"][0]["text"], sim.reply());

    let (_, stream) = post(
        &sim,
        Api::OpenAiResponses,
        r#"{"model":"gpt-4o","input":"Say hello","stream":true}"#,
    )
    .await;
    let events = events(&stream);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i as u64);
    }
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, v)| v["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, sim.reply());
    let (_, completed) = events.last().unwrap();
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        sim.reply()
    );
    let (content, terminated, error) = scan(Dialect::OpenAiResponses, &stream);
    assert!(content > 0 && terminated && error.is_none());
}

#[tokio::test]
async fn a_responses_stream_fails_with_response_failed_or_error_as_classify_reads_them() {
    let body = r#"{"model":"gpt-4o","input":"Say hello","stream":true}"#;
    let overloaded = Simulator::builder()
        .plan(FaultPlan::always(Fault::stream_error_after(2)))
        .start()
        .await
        .unwrap();
    let (_, stream) = post(&overloaded, Api::OpenAiResponses, body).await;
    assert!(stream.contains("event: response.failed"), "{stream}");
    let (content, _, error) = scan(Dialect::OpenAiResponses, &stream);
    assert_eq!((content, error), (2, Some(ErrorKind::Overloaded)));

    let limited = Simulator::builder()
        .plan(FaultPlan::always(Fault::stream_error_after_with(
            0,
            tower_llm_testkit::Failure::rate_limited(std::time::Duration::from_secs(1)),
        )))
        .start()
        .await
        .unwrap();
    let (_, stream) = post(&limited, Api::OpenAiResponses, body).await;
    assert!(stream.starts_with("event: error\n"), "{stream}");
    let (content, _, error) = scan(Dialect::OpenAiResponses, &stream);
    assert_eq!((content, error), (0, Some(ErrorKind::RateLimited)));
}

#[tokio::test]
async fn anthropic_count_tokens_answers_the_input_tokens_and_gets_the_fault_plan() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::overloaded(), Fault::ok()]))
        .start()
        .await
        .unwrap();
    let body =
        r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Say hello"}]}"#;
    let (first, error) = post(&sim, Api::AnthropicCountTokens, body).await;
    assert_eq!(first, 529);
    let error: Value = serde_json::from_str(&error).unwrap();
    assert_eq!(error["error"]["type"], "overloaded_error");
    let (second, count) = post(&sim, Api::AnthropicCountTokens, body).await;
    assert_eq!(second, 200);
    let count: Value = serde_json::from_str(&count).unwrap();
    // The simulator's estimate: a token per four bytes of the request.
    assert_eq!(count["input_tokens"], body.len().div_ceil(4) as u64);
    assert_eq!(
        sim.requests()[1].path,
        "/v1/messages/count_tokens",
        "{count}"
    );
}
