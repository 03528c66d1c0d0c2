//! `POST /v1/messages`: Anthropic's Messages API, to Anthropic-protocol
//! targets only, with Anthropic's errors and events.

use http::{HeaderMap, HeaderValue, StatusCode};
use tower_llm_gateway::{FALLBACKS_HEADER, TARGET_HEADER};
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

use crate::{Gateway, anthropic_target, claude_sim, events, header_of, json, sim, text};

const MESSAGE: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Say hello"}]}"#;
const MESSAGE_STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;
const CHAT: &str = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;

/// An OpenAI-protocol target `openai` first, then Anthropic-protocol ones.
fn mixed(openai: &Simulator, anthropic: &[(&str, &Simulator)]) -> String {
    let mut config = format!(
        r#"
        preset = "development"

        [[targets]]
        name = "openai"
        base_url = "{}/v1"
        "#,
        openai.base_url()
    );
    for (name, sim) in anthropic {
        config.push_str(&anthropic_target(name, sim));
    }
    config
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn messages_go_only_to_anthropic_protocol_targets_with_their_own_key_whole_and_streamed() {
    let openai = sim(Fault::ok()).await;
    let claude = claude_sim(Fault::ok()).await;
    let gateway = Gateway::start(&mixed(&openai, &[("claude", &claude)])).await;

    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("sk-callers-own"));
    headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    headers.insert(
        "anthropic-beta",
        HeaderValue::from_static("output-128k-2025-02-19"),
    );
    let response = gateway.post_with("/v1/messages", MESSAGE, headers).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "claude");
    let whole = json(response).await;
    assert_eq!(whole["type"], "message");
    assert_eq!(whole["content"][0]["text"], claude.reply());

    let sent = &claude.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    // The simulator answers only its key (`CLAUDE_KEY`, which its record
    // redacts); the caller's never leaves the gateway.
    assert!(sent.headers.contains_key("x-api-key"));
    assert!(!format!("{:?}", sent.headers).contains("sk-callers-own"));
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.headers["anthropic-beta"], "output-128k-2025-02-19");
    assert!(sent.headers.get("authorization").is_none());
    assert!(openai.requests().is_empty());

    let response = gateway.post("/v1/messages", MESSAGE_STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream = text(response).await;
    let events = events(&stream);
    assert_eq!(events.first().unwrap().0, "message_start");
    assert_eq!(events.last().unwrap().0, "message_stop");
    let streamed: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .filter_map(|(_, v)| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, claude.reply());

    // The OpenAI endpoints of the same route never reach it.
    let response = gateway.post("/v1/chat/completions", CHAT).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "openai");
    assert_eq!(claude.requests().len(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_overloaded_anthropic_target_fails_over_to_the_next_one_that_speaks_the_protocol() {
    let openai = sim(Fault::ok()).await;
    let first = claude_sim(Fault::overloaded()).await;
    let second = claude_sim(Fault::ok()).await;
    let gateway = Gateway::start(&mixed(&openai, &[("first", &first), ("second", &second)])).await;

    for body in [MESSAGE, MESSAGE_STREAM] {
        let response = gateway.post("/v1/messages", body).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_of(&response, TARGET_HEADER), "second");
        assert_eq!(header_of(&response, FALLBACKS_HEADER), "first:overloaded");
        let answer = text(response).await;
        assert!(
            answer.contains(r#""type":"message""#)
                || answer.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            "{answer}"
        );
    }
    // Overloaded (529, `x-should-retry: true`): retried once a call (the
    // development preset's two attempts) before moving on.
    assert_eq!(first.requests().len(), 4);
    assert!(openai.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_messages_failure_is_anthropic_shaped_with_x_should_retry_and_retry_after() {
    let openai = sim(Fault::ok()).await;
    let claude = claude_sim(Fault::rate_limited(std::time::Duration::from_secs(7))).await;
    let gateway = Gateway::start(&mixed(&openai, &[("claude", &claude)])).await;

    let response = gateway.post("/v1/messages", MESSAGE).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_of(&response, "x-should-retry"), "true");
    assert!(!header_of(&response, "retry-after").is_empty());
    let error = json(response).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert!(openai.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn messages_on_a_route_without_an_anthropic_target_get_an_anthropic_shaped_404() {
    let openai = sim(Fault::ok()).await;
    let gateway = Gateway::start(&mixed(&openai, &[])).await;

    let response = gateway.post("/v1/messages", MESSAGE).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(header_of(&response, "x-should-retry"), "false");
    let error = json(response).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "not_found_error");
    assert!(openai.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_messages_stream_broken_after_content_ends_with_anthropics_error_event() {
    let openai = sim(Fault::ok()).await;
    let claude = claude_sim(Fault::stream_drop_after(2)).await;
    let gateway = Gateway::start(&mixed(&openai, &[("claude", &claude)])).await;

    let response = gateway.post("/v1/messages", MESSAGE_STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream = text(response).await;
    let (name, last) = events(&stream).pop().unwrap();
    assert_eq!(name, "error", "{stream}");
    assert_eq!(last["type"], "error");
    assert!(last["error"]["type"].is_string(), "{stream}");
    assert!(!stream.contains("message_stop"), "{stream}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_messages_stream_cut_after_content_is_continued_and_read_as_one_answer() {
    let openai = sim(Fault::ok()).await;
    let claude = Simulator::builder()
        .reply_tokens(30)
        .plan(FaultPlan::script([
            Fault::stream_drop_after(20),
            Fault::ok(),
        ]))
        .api_key(crate::CLAUDE_KEY)
        .start()
        .await
        .unwrap();
    let config = mixed(&openai, &[("claude", &claude)]).replace(
        "api_key_env = \"CLAUDE_KEY\"",
        "api_key_env = \"CLAUDE_KEY\"\n        continuation = \"trailing_assistant\"",
    );
    let gateway = Gateway::start(&config).await;

    let response = gateway.post("/v1/messages", MESSAGE_STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream = text(response).await;
    let events = events(&stream);
    let said: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .filter_map(|(_, v)| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(said, claude.reply(), "no text twice, none missing");
    assert_eq!(events.last().unwrap().0, "message_stop", "{stream}");
    assert_eq!(stream.matches("event: message_start").count(), 1);
    // The rest was asked for with the answer so far as the assistant's
    // last turn.
    let requests = claude.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].prefill.is_some());
    assert!(openai.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_anthropic_target_refusing_the_gateways_key_is_a_502_not_to_be_retried() {
    let openai = sim(Fault::ok()).await;
    let claude = claude_sim(Fault::ok()).await;
    let config = mixed(&openai, &[("claude", &claude)]).replace(
        "api_key_env = \"CLAUDE_KEY\"",
        "api_key_env = \"WRONG_KEY\"",
    );
    let gateway = Gateway::start(&config).await;

    let response = gateway.post("/v1/messages", MESSAGE).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header_of(&response, "x-should-retry"), "false");
    let error = json(response).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert!(!error.to_string().contains("sk-"), "{error}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn count_tokens_is_asked_of_anthropic_targets_and_retried_like_messages() {
    let openai = sim(Fault::ok()).await;
    let claude = claude_sim(FaultPlan::script([Fault::overloaded(), Fault::ok()])).await;
    let gateway = Gateway::start(&mixed(&openai, &[("claude", &claude)])).await;

    let response = gateway.post("/v1/messages/count_tokens", MESSAGE).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "claude");
    assert_eq!(header_of(&response, "x-tower-llm-attempts"), "2");
    let count = json(response).await;
    assert!(count["input_tokens"].as_u64().unwrap() > 0, "{count}");
    let requests = claude.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.path == "/v1/messages/count_tokens")
    );
    assert!(openai.requests().is_empty());
}
