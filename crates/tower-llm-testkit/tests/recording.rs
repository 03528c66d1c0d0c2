//! What the simulator records, and what it refuses before the plan.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tower_llm_testkit::{Api, Fault, FaultPlan, REDACTED, Simulator, gaps};

async fn post_with_headers(
    sim: &Simulator,
    api: Api,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = http::Request::post(sim.url(api)).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client()
        .request(request.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        body_error: None,
    }
}

#[tokio::test]
async fn every_request_is_recorded_with_its_fault() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::overloaded()]))
        .start()
        .await
        .unwrap();
    let body = chat_body(Api::AnthropicMessages, "claude-sonnet-4-5", true);
    chat(&client(), &sim, Api::AnthropicMessages, true).await;
    send(&client(), &sim, Api::AnthropicMessages, &body)
        .await
        .unwrap();
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    let second = &requests[1];
    assert_eq!(
        (second.index, second.method.as_str(), second.path.as_str()),
        (1, "POST", "/v1/messages")
    );
    assert_eq!(second.api, Some(Api::AnthropicMessages));
    assert_eq!(second.body, Bytes::from(body));
    assert_eq!(second.model.as_deref(), Some("claude-sonnet-4-5"));
    assert!(second.stream);
    assert_eq!(second.headers["content-type"], "application/json");
    assert_eq!(
        requests[0].fault.as_ref().unwrap().to_string(),
        "overloaded"
    );
    assert!(second.fault.as_ref().unwrap().is_healthy());
    assert_eq!(sim.take_requests().len(), 2);
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn credentials_are_redacted_but_can_be_checked() {
    let sim = Simulator::start().await.unwrap();
    let body = chat_body(Api::OpenAiChat, "m", false);
    let answer = post_with_headers(
        &sim,
        Api::OpenAiChat,
        &body,
        &[
            ("authorization", "Bearer sk-target-a"),
            ("x-api-key", "sk-ant-b"),
            ("api-key", "azure-c"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let request = &sim.requests()[0];
    for name in ["authorization", "x-api-key", "api-key"] {
        assert_eq!(request.headers[name], REDACTED);
    }
    assert!(request.carries_credential("sk-target-a"));
    assert!(request.carries_credential("sk-ant-b"));
    assert!(request.carries_credential("azure-c"));
    assert!(!request.carries_credential("sk-target-b"));
    assert_eq!(request.credential_headers().count(), 3);
    let printed = format!("{request:?}");
    for secret in ["sk-target-a", "sk-ant-b", "azure-c"] {
        assert!(!printed.contains(secret), "{printed}");
    }
}

#[tokio::test]
async fn a_required_key_is_checked_before_the_plan() {
    let sim = Simulator::builder()
        .api_key("sk-right")
        .plan(FaultPlan::script([Fault::server_error(500)]))
        .start()
        .await
        .unwrap();
    let body = chat_body(Api::OpenAiChat, "m", false);
    let missing = post_with_headers(&sim, Api::OpenAiChat, &body, &[]).await;
    assert_eq!(missing.status, 401);
    let wrong = post_with_headers(
        &sim,
        Api::AnthropicMessages,
        &body,
        &[("x-api-key", "sk-wrong")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["type"], "authentication_error");
    assert!(!wrong.text().contains("sk-wrong"), "a key is never echoed");
    // The script's first step is still there for the first authorised request.
    let right = post_with_headers(
        &sim,
        Api::OpenAiChat,
        &body,
        &[("authorization", "Bearer sk-right")],
    )
    .await;
    assert_eq!(right.status, 500);
    let azure = post_with_headers(&sim, Api::OpenAiChat, &body, &[("api-key", "sk-right")]).await;
    assert_eq!(azure.status, 200);
    assert!(sim.requests()[0].fault.is_none());
}

#[tokio::test]
async fn a_prompt_over_the_context_window_is_refused_with_the_numbers() {
    let sim = Simulator::builder()
        .context_window(100)
        .start()
        .await
        .unwrap();
    let long = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "word ".repeat(200)
    );
    let answer = send(&client(), &sim, Api::OpenAiChat, &long).await.unwrap();
    assert_eq!(answer.status, 400);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], "context_length_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("maximum context length is 100 tokens"),
        "{message}"
    );
    assert!(
        message.contains(&format!("resulted in {} tokens", long.len().div_ceil(4))),
        "{message}"
    );
    assert_eq!(
        chat(&client(), &sim, Api::OpenAiChat, false).await.status,
        200
    );
}

#[tokio::test]
async fn malformed_requests_get_the_providers_400() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    let not_json = send(&client, &sim, Api::OpenAiChat, "{not json")
        .await
        .unwrap();
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json()["error"]["type"], "invalid_request_error");
    let no_model = send(&client, &sim, Api::AnthropicMessages, r#"{"messages":[]}"#)
        .await
        .unwrap();
    assert_eq!(no_model.status, 400);
    assert_eq!(no_model.json()["error"]["message"], "model: Field required");
    let ollama = send(&client, &sim, Api::OllamaChat, r#"{"messages":[]}"#)
        .await
        .unwrap();
    assert_eq!(ollama.json()["error"], "model is required");
    let wrong_type = send(&client, &sim, Api::OpenAiChat, r#"{"model":7}"#)
        .await
        .unwrap();
    assert_eq!(wrong_type.status, 400);
    assert_eq!(sim.stats().errors, 4);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_answered_not_faulted() {
    let sim = Simulator::builder()
        .plan(Fault::reset())
        .start()
        .await
        .unwrap();
    let client = client();
    let unknown = post(
        &client,
        &format!("{}/v1/images/generations", sim.base_url()),
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json()["error"]["message"],
        "Invalid URL (POST /v1/images/generations)"
    );
    let get = client
        .get(sim.url(Api::OpenAiChat).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.fault.is_none()));
}

#[tokio::test]
async fn an_oversized_body_gets_413_not_a_crash() {
    let sim = Simulator::builder().max_body(1024).start().await.unwrap();
    let big = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(4096));
    let answer = send(&client(), &sim, Api::AnthropicMessages, &big)
        .await
        .unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"]["type"], "request_too_large");
    assert_eq!(
        chat(&client(), &sim, Api::AnthropicMessages, false)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn an_announced_length_over_the_limit_is_refused_before_reading() {
    let sim = Simulator::builder().max_body(1024).start().await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{{\"model\":",
        Api::OpenAiChat.path()
    );
    let (bytes, _) = raw_exchange(sim.addr(), head.as_bytes(), Duration::from_secs(30)).await;
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].body.is_empty());
}

#[tokio::test]
async fn health_answers_and_is_not_recorded() {
    let sim = Simulator::builder()
        .plan(Fault::server_error(503))
        .start()
        .await
        .unwrap();
    chat(&client(), &sim, Api::OpenAiChat, false).await;
    let health = client()
        .get(format!("{}/health", sim.base_url()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let body = http_body_util::BodyExt::collect(health.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["requests"], 1);
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn recording_can_be_turned_off_and_counting_goes_on() {
    let sim = Simulator::builder().record(false).start().await.unwrap();
    chat(&client(), &sim, Api::OpenAiChat, false).await;
    assert!(sim.requests().is_empty());
    assert_eq!((sim.stats().requests, sim.stats().answered), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn gaps_between_requests_show_the_backoff_a_client_took() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    for wait in [0, 500, 1500] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        chat(&client, &sim, Api::OpenAiChat, false).await;
    }
    assert_eq!(
        gaps(&sim.requests()),
        [Duration::from_millis(500), Duration::from_millis(1500)]
    );
}
