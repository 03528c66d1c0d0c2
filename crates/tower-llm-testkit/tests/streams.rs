//! Streams, whole and broken, in each API's format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tower_llm_testkit::{Api, Failure, Fault, Simulator};

const TOKENS: usize = 5;
const TEXT: &str = "token0 token1 token2 token3 token4 ";

async fn sim_with(fault: Fault) -> Simulator {
    sim_builder_with(fault)
        .reply_tokens(TOKENS)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn openai_stream_is_chunks_then_finish_reason_then_done() {
    let sim = sim_with(Fault::ok()).await;
    let answer = chat(&client(), &sim, Api::OpenAiChat, true).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let data = sse_data(answer.text());
    // role chunk, 5 content chunks, finish chunk, [DONE]
    assert_eq!(data.len(), TOKENS + 3);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let first: serde_json::Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let finish: serde_json::Value = serde_json::from_str(&data[TOKENS + 1]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(streamed_text(Api::OpenAiChat, answer.text()), TEXT);
    assert!(answer.body_error.is_none());
}

#[tokio::test]
async fn openai_stream_reports_usage_when_asked() {
    let sim = sim_with(Fault::ok()).await;
    let body =
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let answer = send(&client(), &sim, Api::OpenAiChat, body).await.unwrap();
    let data = sse_data(answer.text());
    let usage: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], TOKENS);
    let content: serde_json::Value = serde_json::from_str(&data[1]).unwrap();
    assert!(content["usage"].is_null() && content.get("usage").is_some());
}

#[tokio::test]
async fn anthropic_stream_has_every_event_type_in_order() {
    let sim = sim_with(Fault::ok()).await;
    let answer = chat(&client(), &sim, Api::AnthropicMessages, true).await;
    let names = sse_names(answer.text());
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", TOKENS));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    assert_eq!(answer.headers["request-id"].to_str().unwrap().len(), 36);
    assert_eq!(streamed_text(Api::AnthropicMessages, answer.text()), TEXT);
    let delta: serde_json::Value =
        serde_json::from_str(&sse_data(answer.text())[TOKENS + 4]).unwrap();
    assert_eq!(delta["usage"]["output_tokens"], TOKENS);
}

#[tokio::test]
async fn ollama_streams_ndjson_by_default_and_ends_with_done() {
    let sim = sim_with(Fault::ok()).await;
    let answer = send(
        &client(),
        &sim,
        Api::OllamaChat,
        r#"{"model":"llama3.2","messages":[]}"#,
    )
    .await
    .unwrap();
    assert_eq!(answer.headers["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = answer
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), TOKENS + 1);
    assert!(lines[..TOKENS].iter().all(|l| l["done"] == false));
    assert_eq!(lines[TOKENS]["done"], true);
    assert_eq!(lines[TOKENS]["done_reason"], "stop");
    assert_eq!(lines[TOKENS]["eval_count"], TOKENS);
    assert_eq!(streamed_text(Api::OllamaChat, answer.text()), TEXT);
}

#[tokio::test]
async fn whole_answers_carry_the_reply_and_usage() {
    let sim = sim_with(Fault::ok()).await;
    let client = client();
    let openai = chat(&client, &sim, Api::OpenAiChat, false).await.json();
    assert_eq!(openai["choices"][0]["message"]["content"], TEXT);
    assert_eq!(openai["usage"]["completion_tokens"], TOKENS);
    assert_eq!(openai["model"], "test-model");
    let anthropic = chat(&client, &sim, Api::AnthropicMessages, false)
        .await
        .json();
    assert_eq!(anthropic["content"][0]["text"], TEXT);
    assert_eq!(anthropic["stop_reason"], "end_turn");
    let ollama = chat(&client, &sim, Api::OllamaChat, false).await.json();
    assert_eq!(ollama["message"]["content"], TEXT);
    assert_eq!(ollama["done"], true);
}

#[tokio::test]
async fn in_band_error_follows_exactly_n_content_events() {
    let client = client();
    for n in [0, 1, 3] {
        let sim = sim_with(Fault::stream_error_after(n)).await;
        let openai = chat(&client, &sim, Api::OpenAiChat, true).await;
        assert_eq!(openai.status, 200);
        let data = sse_data(openai.text());
        let preamble = usize::from(n > 0);
        assert_eq!(
            data.len(),
            preamble + n + 1,
            "role chunk unless n = 0, {n} content, error"
        );
        let error: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(error["error"]["code"], "server_is_overloaded");
        assert!(!openai.text().contains("[DONE]"));
        assert!(
            openai.body_error.is_none(),
            "an in-band error ends the stream cleanly"
        );

        let anthropic = chat(&client, &sim, Api::AnthropicMessages, true).await;
        let names = sse_names(anthropic.text());
        assert_eq!(
            names.iter().filter(|n| *n == "content_block_delta").count(),
            n
        );
        assert_eq!(names.last().unwrap(), "error");
        assert!(anthropic.text().contains(r#""type":"overloaded_error""#));

        let ollama = chat(&client, &sim, Api::OllamaChat, true).await;
        let lines: Vec<&str> = ollama.text().lines().collect();
        assert_eq!(lines.len(), n + 1);
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with(r#"{"error":"server busy"#)
        );
    }
}

#[tokio::test]
async fn an_error_before_any_content_is_the_first_event() {
    let sim = sim_with(Fault::stream_error_after(0)).await;
    let client = client();
    let openai = chat(&client, &sim, Api::OpenAiChat, true).await;
    assert!(
        openai.text().starts_with("data: {\"error\":"),
        "{}",
        openai.text()
    );
    let anthropic = chat(&client, &sim, Api::AnthropicMessages, true).await;
    assert_eq!(sse_names(anthropic.text()), ["error"]);
}

#[tokio::test]
async fn in_band_error_can_be_any_failure() {
    let sim = sim_with(Fault::stream_error_after_with(2, Failure::ServerError(500))).await;
    let answer = chat(&client(), &sim, Api::AnthropicMessages, true).await;
    assert!(answer.text().ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n"));
}

#[tokio::test]
async fn a_non_streaming_request_gets_the_in_band_error_as_its_status() {
    let sim = sim_with(Fault::stream_error_after(2)).await;
    let answer = chat(&client(), &sim, Api::AnthropicMessages, false).await;
    assert_eq!(answer.status, 529);
}

#[tokio::test]
async fn dropped_stream_delivers_n_events_then_fails_the_body() {
    let client = client();
    for n in [0, 1, 3] {
        let sim = sim_with(Fault::stream_drop_after(n)).await;
        for api in Api::ALL {
            let answer = chat(&client, &sim, api, true).await;
            assert_eq!(answer.status, 200);
            let expected: String = (0..n).map(|i| format!("token{i} ")).collect();
            assert_eq!(
                streamed_text(api, answer.text()),
                expected,
                "{api} drop@{n}"
            );
            assert!(
                answer.body_error.is_some(),
                "{api} drop@{n}: the client must see the cut"
            );
        }
    }
}

#[tokio::test]
async fn dropped_whole_body_is_cut_short_of_its_content_length() {
    let sim = sim_with(Fault::stream_drop_after(1)).await;
    let body = chat_body(Api::OpenAiChat, "m", false);
    let (bytes, end) = raw_exchange(
        sim.addr(),
        &raw_post(Api::OpenAiChat, &body),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(end, RawEnd::Closed);
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(body.len() < length, "{} of {length}", body.len());
}

#[tokio::test(start_paused = true)]
async fn stalled_stream_sends_keepalives_and_nothing_else() {
    let sim = Simulator::builder()
        .reply_tokens(TOKENS)
        .keepalive_interval(Duration::from_secs(10))
        .plan(Fault::stream_stall_after(2))
        .start()
        .await
        .unwrap();
    let body = chat_body(Api::AnthropicMessages, "m", true);
    // Reads for 35 s of (paused) time: three pings must have come.
    let (bytes, end) = raw_exchange(
        sim.addr(),
        &raw_post(Api::AnthropicMessages, &body),
        Duration::from_secs(35),
    )
    .await;
    assert_eq!(end, RawEnd::StillOpen);
    let text = String::from_utf8(bytes).unwrap();
    let names = sse_names(text.split_once("\r\n\r\n").unwrap().1);
    let deltas = names.iter().filter(|n| *n == "content_block_delta").count();
    let pings_after = names
        .iter()
        .skip_while(|n| *n != "content_block_delta")
        .filter(|n| *n == "ping")
        .count();
    assert_eq!(deltas, 2);
    assert_eq!(pings_after, 3);
    assert!(!names.contains(&"message_stop".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn stalled_openai_stream_sends_sse_comments() {
    let sim = Simulator::builder()
        .keepalive_interval(Duration::from_secs(1))
        .plan(Fault::stream_stall_after(0))
        .start()
        .await
        .unwrap();
    let body = chat_body(Api::OpenAiChat, "m", true);
    let (bytes, end) = raw_exchange(
        sim.addr(),
        &raw_post(Api::OpenAiChat, &body),
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(end, RawEnd::StillOpen);
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text.matches(": keep-alive\n\n").count(), 2);
}

#[tokio::test]
async fn truncated_stream_ends_cleanly_without_terminal_event() {
    let sim = sim_with(Fault::stream_without_terminal()).await;
    let client = client();
    let openai = chat(&client, &sim, Api::OpenAiChat, true).await;
    assert_eq!(streamed_text(Api::OpenAiChat, openai.text()), TEXT);
    assert!(!openai.text().contains("[DONE]") && !openai.text().contains("finish_reason\":\"stop"));
    assert!(openai.body_error.is_none());
    let anthropic = chat(&client, &sim, Api::AnthropicMessages, true).await;
    assert!(!anthropic.text().contains("message_stop"));
    let ollama = chat(&client, &sim, Api::OllamaChat, true).await;
    assert!(!ollama.text().contains("\"done\":true"));
    assert_eq!(streamed_text(Api::OllamaChat, ollama.text()), TEXT);
}

#[tokio::test(start_paused = true)]
async fn slow_tokens_space_the_content_events_and_nothing_else() {
    let sim = sim_with(Fault::slow_tokens(Duration::from_millis(40))).await;
    let client = client();
    for api in Api::ALL {
        let started = Instant::now();
        let answer = chat(&client, &sim, api, true).await;
        assert_eq!(streamed_text(api, answer.text()), TEXT);
        // The first content comes with the preamble; 4 gaps of 40 ms follow;
        // the closing events come with the last content.
        assert_eq!(started.elapsed().as_millis(), 4 * 40, "{api}");
    }
}

#[tokio::test(start_paused = true)]
async fn time_to_first_token_is_the_latency_whatever_the_api() {
    let sim = sim_with(
        Fault::latency(Duration::from_millis(300)).with_token_delay(Duration::from_millis(50)),
    )
    .await;
    for api in Api::ALL {
        let started = Instant::now();
        let response = client()
            .request(
                http::Request::post(sim.url(api))
                    .body(http_body_util::Full::from(chat_body(api, "m", true)))
                    .unwrap(),
            )
            .await
            .unwrap();
        let mut body = response.into_body();
        let first = http_body_util::BodyExt::frame(&mut body)
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(started.elapsed().as_millis(), 300, "{api}");
        assert!(
            streamed_text(api, std::str::from_utf8(&first).unwrap()) == "token0 ",
            "{api}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn slow_tokens_combine_with_a_drop() {
    let sim =
        sim_with(Fault::stream_drop_after(3).with_token_delay(Duration::from_millis(10))).await;
    let started = Instant::now();
    let answer = chat(&client(), &sim, Api::OllamaChat, true).await;
    assert_eq!(
        streamed_text(Api::OllamaChat, answer.text()),
        "token0 token1 token2 "
    );
    assert!(answer.body_error.is_some());
    assert_eq!(started.elapsed().as_millis(), 2 * 10);
}

#[tokio::test]
async fn model_names_are_json_escaped() {
    let sim = sim_with(Fault::ok()).await;
    let body = r#"{"model":"we\"ird\\model","stream":true}"#;
    let answer = send(&client(), &sim, Api::OpenAiChat, body).await.unwrap();
    let first: serde_json::Value = serde_json::from_str(&sse_data(answer.text())[0]).unwrap();
    assert_eq!(first["model"], "we\"ird\\model");
}
