//! Streams that go quiet: no head at all, a stall after `n` content events
//! (silent, or with keep-alives that carry no content), a slow first token,
//! and a cut after `n` content events. Paused time: every wait is exact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower_llm_testkit::{Api, Fault, Simulator};

const HOUR: Duration = Duration::from_secs(3600);

/// The names of the content events in `body`, for counting them: OpenAI
/// chunks with text, Anthropic `content_block_delta`, Ollama lines with text.
fn content_events(api: Api, body: &str) -> usize {
    match api {
        Api::AnthropicMessages => sse_names(body)
            .iter()
            .filter(|n| *n == "content_block_delta")
            .count(),
        Api::OllamaChat => body
            .lines()
            .filter(|line| !streamed_text(api, line).is_empty())
            .count(),
        _ => sse_data(body)
            .iter()
            .filter(|d| !streamed_text(api, &format!("data: {d}\n\n")).is_empty())
            .count(),
    }
}

/// What follows the last content event of `body`.
fn after_last_content(api: Api, body: &str) -> String {
    let marker = match api {
        Api::OpenAiChat => "\"delta\":{\"content\":\"token",
        Api::AnthropicMessages => "\"text_delta\",\"text\":\"token",
        _ => "\"content\":\"token",
    };
    let start = body.rfind(marker).unwrap();
    let end = body[start..].find(if api == Api::OllamaChat { "\n" } else { "\n\n" });
    let end = start + end.unwrap() + if api == Api::OllamaChat { 1 } else { 2 };
    body[end..].to_owned()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_silent_upstream_never_sends_a_head() {
    let sim = sim_with(Fault::stall()).await;
    for api in Api::ALL {
        // A streamed request's head comes at once from a live provider;
        // from this one, nothing comes in an hour.
        let (bytes, end) =
            raw_exchange(sim.addr(), &raw_post(api, &chat_body(api, "m", true)), HOUR).await;
        assert!(
            bytes.is_empty(),
            "{api}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(end, RawEnd::StillOpen, "{api}");
    }
    assert_eq!(sim.stats().stalled, 3);
    assert_eq!(sim.requests().len(), 3, "each request was read");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stall_after_n_events_keeps_the_connection_open_and_silent() {
    let sim = Simulator::builder()
        .reply_tokens(60)
        .keepalive_interval(Duration::from_secs(1))
        .plan(Fault::stream_stall_silent_after(20))
        .start()
        .await
        .unwrap();
    for api in Api::ALL {
        let (bytes, end) =
            raw_exchange(sim.addr(), &raw_post(api, &chat_body(api, "m", true)), HOUR).await;
        assert_eq!(end, RawEnd::StillOpen, "{api}");
        let head = String::from_utf8_lossy(&bytes);
        assert!(head.starts_with("HTTP/1.1 200"), "{api}: {head}");
        let body = dechunked_body(&bytes);
        assert_eq!(content_events(api, &body), 20, "{api}");
        // Not a byte after the 20th content event, keep-alive or other.
        assert_eq!(after_last_content(api, &body), "", "{api}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keepalives_during_a_stall_carry_no_content() {
    let sim = Simulator::builder()
        .reply_tokens(60)
        .keepalive_interval(Duration::from_secs(5))
        .plan(Fault::stream_stall_after(3))
        .start()
        .await
        .unwrap();
    for api in [Api::OpenAiChat, Api::AnthropicMessages] {
        let (bytes, end) = raw_exchange(
            sim.addr(),
            &raw_post(api, &chat_body(api, "m", true)),
            Duration::from_secs(62),
        )
        .await;
        assert_eq!(end, RawEnd::StillOpen, "{api}");
        let body = dechunked_body(&bytes);
        assert_eq!(streamed_text(api, &body), "token0 token1 token2 ", "{api}");
        // 62 s of stall: a keep-alive every 5 s, and nothing else.
        let keepalive = std::str::from_utf8(api.keepalive().unwrap()).unwrap();
        assert_eq!(
            after_last_content(api, &body),
            keepalive.repeat(12),
            "{api}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_first_token_sends_the_head_at_once_and_the_content_later() {
    let sim = Simulator::builder()
        .reply_tokens(5)
        .plan(Fault::slow_first_token(Duration::from_secs(20)))
        .start()
        .await
        .unwrap();
    let client = client();
    for api in Api::ALL {
        let started = Instant::now();
        let request = http::Request::post(sim.url(api))
            .body(Full::from(chat_body(api, "m", true)))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO, "{api}: the head at once");
        let mut body = response.into_body();
        let mut text = String::new();
        let mut first_content_at = None;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            text.push_str(std::str::from_utf8(&data).unwrap());
            if first_content_at.is_none() && !streamed_text(api, &text).is_empty() {
                first_content_at = Some(started.elapsed());
            }
            if first_content_at.is_none() {
                // What comes before content (role chunk, message_start) is
                // not held back.
                assert_eq!(started.elapsed(), Duration::ZERO, "{api}");
            }
        }
        assert_eq!(first_content_at, Some(Duration::from_secs(20)), "{api}");
        assert_eq!(
            streamed_text(api, &text),
            "token0 token1 token2 token3 token4 "
        );
        assert_eq!(started.elapsed(), Duration::from_secs(20), "{api}");
    }
    // A whole answer's head comes only when it is all written.
    let started = Instant::now();
    let answer = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(started.elapsed(), Duration::from_secs(20));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_first_token_comes_before_the_slow_tokens() {
    let sim = Simulator::builder()
        .reply_tokens(5)
        .plan(
            Fault::slow_first_token(Duration::from_secs(2))
                .with_token_delay(Duration::from_millis(100)),
        )
        .start()
        .await
        .unwrap();
    for api in Api::ALL {
        let started = Instant::now();
        let answer = chat(&client(), &sim, api, true).await;
        assert_eq!(streamed_text(api, answer.text()).len(), 35, "{api}");
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(2000 + 4 * 100),
            "{api}"
        );
    }
}

#[tokio::test]
async fn a_cut_after_n_content_events_closes_the_connection_mid_stream() {
    let sim = Simulator::builder().reply_tokens(60).start().await.unwrap();
    let client = client();
    for api in Api::ALL {
        for n in [1, 40] {
            sim.set_plan(Fault::stream_drop_after(n));
            let answer = chat(&client, &sim, api, true).await;
            assert_eq!(answer.status, 200);
            assert_eq!(content_events(api, answer.text()), n, "{api}");
            let expected: String = (0..n).map(|i| format!("token{i} ")).collect();
            assert_eq!(streamed_text(api, answer.text()), expected, "{api}");
            assert!(answer.body_error.is_some(), "{api}: the body fails");
            for terminal in ["[DONE]", "message_stop", "\"done\":true"] {
                assert!(!answer.text().contains(terminal), "{api}");
            }
        }
    }
}
