//! Each fault appears on the wire exactly as scripted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use tokio::time::Instant;
use tower_llm_testkit::{Api, Delay, Failure, Fault, RetryHint, Simulator};

#[tokio::test]
async fn rate_limit_429_carries_retry_after_and_reset_headers_on_openai() {
    let sim = sim_with(Fault::rate_limited(Duration::from_millis(2500))).await;
    let answer = chat(&client(), &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["retry-after"], "3", "seconds, rounded up");
    assert_eq!(answer.headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(answer.headers["x-ratelimit-reset-requests"], "2.5s");
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["type"], "requests");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Please try again in 2.5s")
    );
}

#[tokio::test]
async fn rate_limit_hints_come_in_each_header_form() {
    let wait = Duration::from_millis(1500);
    let client = client();
    let sim = sim_with(Fault::rate_limited_with(wait, RetryHint::Milliseconds)).await;
    let answer = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.headers["retry-after-ms"], "1500");
    assert_eq!(answer.headers["retry-after"], "2");

    sim.set_plan(Fault::rate_limited_with(wait, RetryHint::HttpDate));
    let answer = chat(&client, &sim, Api::OpenAiChat, false).await;
    let date = httpdate::parse_http_date(answer.headers["retry-after"].to_str().unwrap()).unwrap();
    let ahead = date.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        ahead <= Duration::from_secs(2) && ahead >= Duration::from_millis(500),
        "{ahead:?}"
    );

    sim.set_plan(Fault::rate_limited_with(wait, RetryHint::ResetHeadersOnly));
    let answer = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert!(answer.headers.get("retry-after").is_none());
    assert_eq!(answer.headers["x-ratelimit-reset-requests"], "1.5s");

    sim.set_plan(Fault::rate_limited_without_hint());
    let answer = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.status, 429);
    assert!(answer.headers.get("retry-after").is_none());
    assert!(answer.headers.get("x-ratelimit-reset-requests").is_none());
    assert!(!answer.text().contains("Please try again"));
}

#[tokio::test]
async fn anthropic_rate_limit_has_rfc3339_reset_and_request_id_in_body() {
    let sim = sim_with(Fault::rate_limited(Duration::from_secs(17))).await;
    let answer = chat(&client(), &sim, Api::AnthropicMessages, false).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["retry-after"], "17");
    let reset = answer.headers["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap();
    assert!(reset.ends_with('Z') && reset.len() == 20, "{reset}");
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        body["request_id"],
        answer.headers["request-id"].to_str().unwrap()
    );
}

#[tokio::test]
async fn overload_is_529_with_x_should_retry_on_anthropic_and_503_elsewhere() {
    let sim = sim_with(Fault::overloaded()).await;
    let client = client();
    let anthropic = chat(&client, &sim, Api::AnthropicMessages, false).await;
    assert_eq!(anthropic.status, 529);
    assert_eq!(anthropic.headers["x-should-retry"], "true");
    assert_eq!(anthropic.json()["error"]["type"], "overloaded_error");

    let openai = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(openai.status, 503);
    assert_eq!(openai.json()["error"]["code"], "server_is_overloaded");

    let ollama = chat(&client, &sim, Api::OllamaChat, false).await;
    assert_eq!(ollama.status, 503);
    assert!(
        ollama.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("server busy")
    );
}

#[tokio::test]
async fn quota_exhausted_never_carries_a_retry_hint() {
    let sim = sim_with(Fault::quota_exhausted()).await;
    let client = client();
    let openai = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(openai.status, 429);
    assert_eq!(openai.json()["error"]["type"], "insufficient_quota");
    assert!(openai.headers.get("retry-after").is_none());
    let anthropic = chat(&client, &sim, Api::AnthropicMessages, false).await;
    assert_eq!(
        anthropic.json()["error"]["details"]["error_code"],
        "enforced_spend_limit_reached"
    );
    assert!(anthropic.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn a_502_in_front_of_openai_is_cloudflare_html() {
    let sim = sim_with(Fault::server_error(502)).await;
    let answer = chat(&client(), &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.headers["content-type"], "text/html");
    assert_eq!(answer.headers["server"], "cloudflare");
    assert!(answer.text().contains("<title>502 Bad Gateway</title>"));
}

#[tokio::test]
async fn client_errors_have_the_provider_codes() {
    let client = client();
    let sim = Simulator::start().await.unwrap();
    let cases: [(Fault, Api, u16, &str, &str); 6] = [
        (
            Fault::context_length_exceeded(),
            Api::OpenAiChat,
            400,
            "/error/code",
            "context_length_exceeded",
        ),
        (
            Fault::content_filtered(),
            Api::OpenAiChat,
            400,
            "/error/code",
            "content_policy_violation",
        ),
        (
            Fault::unauthorized(),
            Api::OpenAiChat,
            401,
            "/error/code",
            "invalid_api_key",
        ),
        (
            Fault::model_not_found(),
            Api::OpenAiChat,
            404,
            "/error/code",
            "model_not_found",
        ),
        (
            Fault::unauthorized(),
            Api::AnthropicMessages,
            401,
            "/error/type",
            "authentication_error",
        ),
        (
            Fault::model_not_found(),
            Api::AnthropicMessages,
            404,
            "/error/type",
            "not_found_error",
        ),
    ];
    for (fault, api, status, pointer, expected) in cases {
        sim.set_plan(fault.clone());
        let answer = chat(&client, &sim, api, false).await;
        assert_eq!(answer.status, status, "{fault} on {api}");
        assert_eq!(
            answer.json().pointer(pointer).unwrap(),
            expected,
            "{fault} on {api}"
        );
    }
    sim.set_plan(Fault::context_length_exceeded());
    let answer = chat(&client, &sim, Api::AnthropicMessages, false).await;
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("prompt is too long: "), "{message}");
}

#[tokio::test]
async fn error_body_bytes_are_what_the_failure_renders() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    let failures = [
        Failure::Overloaded,
        Failure::QuotaExhausted,
        Failure::ServerError(500),
        Failure::ServerError(502),
        Failure::ServerError(504),
        Failure::ContentFiltered,
        Failure::Unauthorized,
        Failure::ModelNotFound,
        Failure::Status(409),
    ];
    for api in Api::ALL {
        for failure in &failures {
            sim.set_plan(Fault::fail(failure.clone()));
            let answer = chat(&client, &sim, api, false).await;
            let request_id = answer.headers[api.request_id_header()].to_str().unwrap();
            let expected = failure.reply(api, "test-model", request_id, SystemTime::now());
            assert_eq!(answer.status, expected.status, "{failure} on {api}");
            assert_eq!(answer.body, expected.body, "{failure} on {api}");
            for (name, value) in &expected.headers {
                assert_eq!(
                    answer.headers.get(name),
                    Some(value),
                    "{name} of {failure} on {api}"
                );
            }
        }
    }
}

#[tokio::test]
async fn reset_sends_rst_before_any_byte() {
    let sim = sim_with(Fault::reset()).await;
    let (bytes, end) = raw_chat(&sim, Api::OpenAiChat, false, Duration::from_secs(5)).await;
    assert!(bytes.is_empty());
    assert_eq!(end, RawEnd::Reset);
    assert_eq!(sim.stats().dropped, 1);
}

#[tokio::test]
async fn close_sends_fin_before_any_byte() {
    let sim = sim_with(Fault::close()).await;
    let (bytes, end) = raw_chat(&sim, Api::OpenAiChat, false, Duration::from_secs(5)).await;
    assert!(bytes.is_empty());
    assert_eq!(end, RawEnd::Closed);
}

#[tokio::test]
async fn a_hyper_client_sees_reset_and_close_as_request_errors() {
    let sim = sim_with(Fault::reset()).await;
    let client = client();
    let body = chat_body(Api::OpenAiChat, "m", false);
    assert!(send(&client, &sim, Api::OpenAiChat, &body).await.is_err());
    sim.set_plan(Fault::close());
    assert!(send(&client, &sim, Api::OpenAiChat, &body).await.is_err());
    sim.set_plan(Fault::ok());
    assert_eq!(
        send(&client, &sim, Api::OpenAiChat, &body)
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn stall_never_answers_and_holds_the_connection_open() {
    let sim = sim_with(Fault::stall()).await;
    let (bytes, end) = raw_chat(&sim, Api::OpenAiChat, false, Duration::from_secs(3600)).await;
    assert!(bytes.is_empty());
    assert_eq!(end, RawEnd::StillOpen);
    assert_eq!(sim.stats().stalled, 1);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_headers_by_exactly_the_scripted_time() {
    let sim = sim_with(Fault::latency(Duration::from_millis(750))).await;
    let started = Instant::now();
    let answer = chat(&client(), &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(started.elapsed().as_millis(), 750);
}

#[tokio::test(start_paused = true)]
async fn latency_adds_up_from_simulator_and_fault() {
    let sim = Simulator::builder()
        .latency(Duration::from_millis(100))
        .plan(Fault::overloaded().with_latency(Duration::from_millis(200)))
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let answer = chat(&client(), &sim, Api::AnthropicMessages, false).await;
    assert_eq!(answer.status, 529);
    assert_eq!(started.elapsed().as_millis(), 300);
}

#[tokio::test(start_paused = true)]
async fn distributed_latency_is_reproducible_for_a_seed() {
    async fn latencies(seed: u64) -> Vec<u128> {
        let sim = Simulator::builder()
            .seed(seed)
            .latency(Delay::uniform(
                Duration::from_millis(10),
                Duration::from_millis(500),
            ))
            .start()
            .await
            .unwrap();
        let client = client();
        let mut out = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            chat(&client, &sim, Api::OpenAiChat, false).await;
            out.push(started.elapsed().as_millis());
        }
        out
    }
    let first = latencies(7).await;
    assert_eq!(first, latencies(7).await);
    assert_ne!(first, latencies(8).await);
    assert!(first.iter().all(|ms| (10..=500).contains(ms)), "{first:?}");
}

#[tokio::test]
async fn raw_replies_go_out_verbatim() {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "text/plain".parse().unwrap());
    let sim = sim_with(Fault::raw(
        http::StatusCode::IM_A_TEAPOT,
        headers,
        "short and stout",
    ))
    .await;
    let answer = chat(&client(), &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.status, 418);
    assert_eq!(answer.headers["content-type"], "text/plain");
    assert_eq!(answer.text(), "short and stout");
}

#[tokio::test]
async fn any_status_gets_the_anthropic_error_type_for_it() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    for (status, kind) in [
        (402, "billing_error"),
        (403, "permission_error"),
        (408, "invalid_request_error"),
        (409, "conflict_error"),
        (413, "request_too_large"),
        (500, "api_error"),
        (504, "timeout_error"),
    ] {
        sim.set_plan(Fault::fail(Failure::Status(status)));
        let answer = chat(&client, &sim, Api::AnthropicMessages, false).await;
        assert_eq!(answer.status, status);
        assert_eq!(answer.json()["error"]["type"], kind, "{status}");
    }
}

#[tokio::test]
async fn request_ids_differ_between_simulators() {
    let (a, b) = (
        Simulator::start().await.unwrap(),
        Simulator::start().await.unwrap(),
    );
    let client = client();
    let first = chat(&client, &a, Api::OpenAiChat, false).await;
    let second = chat(&client, &b, Api::OpenAiChat, false).await;
    assert_ne!(
        first.headers["x-request-id"],
        second.headers["x-request-id"]
    );
    assert_ne!(first.json()["id"], second.json()["id"]);
}

#[tokio::test]
async fn absurd_hints_are_rendered_without_overflow() {
    let sim = sim_with(Fault::rate_limited_with(
        Duration::from_secs(u64::MAX / 2),
        RetryHint::HttpDate,
    ))
    .await;
    let client = client();
    let answer = chat(&client, &sim, Api::AnthropicMessages, false).await;
    assert_eq!(answer.status, 429);
    assert!(httpdate::parse_http_date(answer.headers["retry-after"].to_str().unwrap()).is_ok());
    sim.set_plan(Fault::rate_limited(Duration::MAX));
    assert_eq!(
        chat(&client, &sim, Api::AnthropicMessages, false)
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn overload_bodies_are_byte_for_byte_the_providers() {
    let sim = sim_with(Fault::overloaded()).await;
    let client = client();
    // Anthropic's 529 `overloaded_error` (platform.claude.com/docs/en/api/errors)
    // and OpenAI's 503 `server_is_overloaded` (help.openai.com article 6891839).
    let anthropic = chat(&client, &sim, Api::AnthropicMessages, false).await;
    let id = anthropic.headers["request-id"].to_str().unwrap();
    assert_eq!(
        anthropic.text(),
        format!(
            r#"{{"type":"error","error":{{"type":"overloaded_error","message":"Overloaded"}},"request_id":"{id}"}}"#
        )
    );
    let openai = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(
        openai.text(),
        r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"service_unavailable_error","param":null,"code":"server_is_overloaded"}}"#
    );
}
