//! What an operator and an orchestrator see of a running gateway: the
//! probes, the status page, and the inbound rate limits that protect it,
//! over real HTTP against the testkit's simulated providers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use support::{Gateway, chat};
use tower_llm_testkit::Simulator;

async fn healthy() -> Simulator {
    Simulator::start().await.unwrap()
}

fn one_target(upstream: &Simulator, gateway_section: &str) -> String {
    format!(
        r#"
        preset = "development"
        {gateway_section}

        [[targets]]
        name = "primary"
        base_url = "{}/v1"
        "#,
        upstream.base_url()
    )
}

async fn post_chat(gateway: &Gateway, key: Option<&str>, body: &str) -> support::Answer {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    gateway
        .call(Method::POST, "/v1/chat/completions", &headers, body)
        .await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn liveness_answers_anyone_without_asking_the_upstreams() {
    let upstream = healthy().await;
    let file = one_target(&upstream, "[gateway]\napi_keys_env = \"CALLER_KEYS\"");
    let gateway = Gateway::start_file(&file, &[("CALLER_KEYS", "sk-caller")]).await;

    let live = gateway.get("/health/live").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json()["status"], "live");
    assert!(upstream.requests().is_empty());
    // The API itself still needs the key.
    assert_eq!(
        post_chat(&gateway, None, &chat("gpt-4o")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// With `ready_requires_upstreams`: readiness follows the routes.
const STRICT_READINESS: &str = "[gateway]\nready_requires_upstreams = true";

/// One request served (the target's breaker keys exist), then every key
/// forced open, as an operator or another replica would; the keys.
async fn serve_once_then_force_open(gateway: &Gateway) -> Vec<std::sync::Arc<str>> {
    assert_eq!(
        post_chat(gateway, None, &chat("gpt-4o")).await.status,
        StatusCode::OK
    );
    let keys: Vec<_> = gateway
        .circuits
        .snapshot()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert!(!keys.is_empty());
    for key in &keys {
        gateway.circuits.force_open(key);
    }
    keys
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_route_whose_every_target_is_open_leaves_the_replica_ready_and_is_named_degraded() {
    let upstream = healthy().await;
    let gateway = Gateway::start_file(&one_target(&upstream, ""), &[]).await;
    let keys = serve_once_then_force_open(&gateway).await;
    // Every replica sees the provider down alike: none leaves rotation for
    // it (the whole fleet would, and every route with it)…
    let ready = gateway.get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    let body = ready.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["routes"][0]["targets"][0], "primary", "{body}");
    // …and the route's callers get the gateway's own answer.
    let answer = post_chat(&gateway, None, &chat("gpt-4o")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("error"), "{}", answer.body);

    gateway.circuits.reset(&keys[0]);
    assert_eq!(gateway.get("/health/ready").await.json()["status"], "ready");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn strict_readiness_is_503_naming_the_route_whose_every_target_is_open_and_200_again_once_one_closes()
 {
    let upstream = healthy().await;
    let gateway = Gateway::start_file(&one_target(&upstream, STRICT_READINESS), &[]).await;
    // Never called: nothing says the target cannot take traffic.
    assert_eq!(gateway.get("/health/ready").await.status, StatusCode::OK);
    let keys = serve_once_then_force_open(&gateway).await;

    let unready = gateway.get("/health/ready").await;
    assert_eq!(unready.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = unready.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["routes"][0]["targets"][0], "primary", "{body}");

    gateway.circuits.reset(&keys[0]);
    assert_eq!(gateway.get("/health/ready").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_route_whose_every_target_cools_down_after_a_rate_limit_stays_ready_and_answers_429() {
    let upstream = healthy().await;
    // Even where readiness follows the routes.
    let gateway = Gateway::start_file(&one_target(&upstream, STRICT_READINESS), &[]).await;
    assert_eq!(
        post_chat(&gateway, None, &chat("gpt-4o")).await.status,
        StatusCode::OK
    );
    // The provider account's limit, as a 429 or another replica would
    // have set it on every key.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    for key in gateway.circuits.snapshot() {
        assert!(gateway.circuits.apply_cooldown_until(&key.key, until));
    }
    // Every replica shares it: none leaves rotation for it…
    assert_eq!(gateway.get("/health/ready").await.status, StatusCode::OK);
    // …and callers get the gateway's own 429 with the wait.
    let answer = post_chat(&gateway, None, &chat("gpt-4o")).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        answer.headers.contains_key("retry-after"),
        "{}",
        answer.body
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_status_page_is_open_self_contained_html_under_a_content_security_policy() {
    let upstream = healthy().await;
    let file = one_target(&upstream, "[gateway]\napi_keys_env = \"CALLER_KEYS\"");
    let gateway = Gateway::start_file(&file, &[("CALLER_KEYS", "sk-caller")]).await;

    let page = gateway.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    let csp = page.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(page.body.contains("/health"), "the page reads /health");
    // Nothing from elsewhere: no external script, style or font.
    for external in ["http://", "https://", "//cdn"] {
        assert!(!page.body.contains(external), "{external} in the page");
    }
}

fn limited(upstream: &Simulator, limits: &str) -> String {
    one_target(
        upstream,
        &format!("[gateway]\napi_keys_env = \"CALLER_KEYS\"\n[gateway.rate_limits]\n{limits}"),
    )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_caller_over_its_requests_per_minute_gets_openais_429_with_the_wait_and_no_upstream_call()
{
    let upstream = healthy().await;
    let gateway = Gateway::start_file(
        &limited(&upstream, "requests_per_minute = 2"),
        &[("CALLER_KEYS", "sk-caller")],
    )
    .await;
    for remaining in ["1", "0"] {
        let ok = post_chat(&gateway, Some("sk-caller"), &chat("gpt-4o")).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        assert_eq!(ok.header("x-ratelimit-limit-requests"), "2");
        assert_eq!(ok.header("x-ratelimit-remaining-requests"), remaining);
    }

    let refused = post_chat(&gateway, Some("sk-caller"), &chat("gpt-4o")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // A request comes back every 30 s.
    assert_eq!(refused.header("retry-after"), "30");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), "0");
    assert_eq!(refused.header("x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.json()["error"]["type"], "requests");
    assert_eq!(upstream.requests().len(), 2);

    tokio::time::advance(Duration::from_secs(30)).await;
    let again = post_chat(&gateway, Some("sk-caller"), &chat("gpt-4o")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_caller_key_has_its_own_bucket() {
    let upstream = healthy().await;
    let gateway = Gateway::start_file(
        &limited(&upstream, "requests_per_minute = 1"),
        &[("CALLER_KEYS", "sk-alice, sk-bob")],
    )
    .await;
    let alice = post_chat(&gateway, Some("sk-alice"), &chat("gpt-4o")).await;
    assert_eq!(alice.status, StatusCode::OK);
    let alice_again = post_chat(&gateway, Some("sk-alice"), &chat("gpt-4o")).await;
    assert_eq!(alice_again.status, StatusCode::TOO_MANY_REQUESTS);

    let bob = post_chat(&gateway, Some("sk-bob"), &chat("gpt-4o")).await;
    assert_eq!(bob.status, StatusCode::OK);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tokens_per_minute_count_the_prompt_and_max_tokens_before_any_upstream_call() {
    let upstream = healthy().await;
    let gateway = Gateway::start_file(
        &limited(&upstream, "tokens_per_minute = 200"),
        &[("CALLER_KEYS", "sk-caller")],
    )
    .await;
    let body = |max_tokens: u32| {
        format!(
            r#"{{"model":"gpt-4o","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hello"}}]}}"#
        )
    };
    // More than a minute's tokens: never admitted, so no Retry-After, and
    // the SDKs are told not to retry it.
    let huge = post_chat(&gateway, Some("sk-caller"), &body(1000)).await;
    assert_eq!(huge.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(huge.header("retry-after"), "");
    assert_eq!(huge.header("x-should-retry"), "false");
    assert!(
        huge.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Request too large")
    );

    let ok = post_chat(&gateway, Some("sk-caller"), &body(100)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.header("x-ratelimit-limit-tokens"), "200");
    // The body is 82 bytes (21 tokens) plus 100 asked for.
    assert_eq!(ok.header("x-ratelimit-remaining-tokens"), "79");

    let over = post_chat(&gateway, Some("sk-caller"), &body(100)).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.json()["error"]["type"], "tokens");
    assert!(over.header("retry-after").parse::<u64>().unwrap() >= 1);
    // The refusal says where the caller stands, as OpenAI's does.
    assert_eq!(over.header("x-ratelimit-limit-tokens"), "200");
    assert_eq!(over.header("x-ratelimit-remaining-tokens"), "79");
    assert!(!over.header("x-ratelimit-reset-tokens").is_empty());
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_gateways_limits_replace_the_upstreams_ratelimit_headers_which_describe_its_own_account()
 {
    let upstream = healthy().await;
    // Without limits of its own, the upstream's headers pass as they came.
    let open = Gateway::start_file(&one_target(&upstream, ""), &[]).await;
    let passed = post_chat(&open, None, &chat("gpt-4o")).await;
    let upstreams = passed.header("x-ratelimit-limit-requests").to_owned();
    assert!(!upstreams.is_empty(), "the simulator sends its limits");

    let limited = Gateway::start_file(
        &limited(&upstream, "requests_per_minute = 7"),
        &[("CALLER_KEYS", "sk-caller")],
    )
    .await;
    let ours = post_chat(&limited, Some("sk-caller"), &chat("gpt-4o")).await;
    assert_eq!(ours.header("x-ratelimit-limit-requests"), "7");
    assert_ne!(upstreams, "7");
    // None of the upstream's left to mix with ours (no token limit here).
    assert_eq!(ours.header("x-ratelimit-limit-tokens"), "");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn on_anthropics_messages_a_caller_over_its_limit_gets_anthropics_429_and_headers() {
    let claude = Simulator::builder()
        .api_key("sk-claude-upstream")
        .start()
        .await
        .unwrap();
    let file = format!(
        r#"
        preset = "development"
        [gateway]
        api_keys_env = "CALLER_KEYS"
        [gateway.rate_limits.endpoints.messages]
        requests_per_minute = 1

        [[targets]]
        name = "claude"
        provider = "anthropic"
        protocol = "anthropic"
        base_url = "{}/v1"
        api_key_env = "CLAUDE_KEY"
        "#,
        claude.base_url()
    );
    let gateway = Gateway::start_file(
        &file,
        &[
            ("CALLER_KEYS", "sk-caller"),
            ("CLAUDE_KEY", "sk-claude-upstream"),
        ],
    )
    .await;
    let message = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let send = || {
        gateway.call(
            Method::POST,
            "/v1/messages",
            &[
                ("content-type", "application/json"),
                ("x-api-key", "sk-caller"),
                ("anthropic-version", "2023-06-01"),
            ],
            message,
        )
    };
    let ok = send().await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.header("anthropic-ratelimit-requests-limit"), "1");
    assert_eq!(ok.header("anthropic-ratelimit-requests-remaining"), "0");
    // Anthropic gives the reset as an instant.
    assert!(
        ok.header("anthropic-ratelimit-requests-reset")
            .ends_with('Z')
    );

    let refused = send().await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), "60");
    let body = refused.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(claude.requests().len(), 1);
    // Chat has no limit here.
    let chat = post_chat(&gateway, Some("sk-caller"), &chat("gpt-4o")).await;
    assert_ne!(chat.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_route_whose_breaker_opened_by_itself_is_ready_again_once_its_open_time_is_over() {
    let upstream = Simulator::builder()
        .plan(tower_llm_testkit::Fault::status(500))
        .start()
        .await
        .unwrap();
    let file = one_target(
        &upstream,
        &format!(
            "{STRICT_READINESS}\n[circuit]\nconsecutive_failures = 2\nopen_ms = 10000\nopen_jitter = 0.0"
        ),
    );
    let gateway = Gateway::start_file(&file, &[]).await;
    for _ in 0..2 {
        let answer = post_chat(&gateway, None, &chat("gpt-4o")).await;
        assert_ne!(answer.status, StatusCode::OK);
    }
    let states: Vec<_> = gateway
        .circuits
        .snapshot()
        .into_iter()
        .map(|k| (k.key, k.state, k.open_remaining))
        .collect();
    assert!(
        states
            .iter()
            .any(|(_, state, _)| *state == tower_llm::circuit::CircuitState::Open),
        "{states:?}"
    );
    assert_eq!(
        gateway.get("/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // No call comes while the replica is out of rotation; the open time
    // running out must be enough (the next call is the probe).
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(gateway.get("/health/ready").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_refused_for_its_tokens_gives_its_request_back() {
    let upstream = healthy().await;
    let gateway = Gateway::start_file(
        &limited(
            &upstream,
            "requests_per_minute = 2\ntokens_per_minute = 200",
        ),
        &[("CALLER_KEYS", "sk-caller")],
    )
    .await;
    let big =
        r#"{"model":"gpt-4o","max_tokens":150,"messages":[{"role":"user","content":"hello"}]}"#;
    let ok = post_chat(&gateway, Some("sk-caller"), big).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("x-ratelimit-remaining-requests"), "1");

    let refused = post_chat(&gateway, Some("sk-caller"), big).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"]["type"], "tokens");
    // The request it was admitted with came back.
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), "1");
    let small = post_chat(&gateway, Some("sk-caller"), &chat("gpt-4o")).await;
    assert_eq!(small.status, StatusCode::OK, "{}", small.body);
    assert_eq!(small.header("x-ratelimit-remaining-requests"), "0");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_caller_without_a_key_on_anthropics_messages_gets_anthropics_401() {
    let upstream = healthy().await;
    let file = one_target(&upstream, "[gateway]\napi_keys_env = \"CALLER_KEYS\"");
    let gateway = Gateway::start_file(&file, &[("CALLER_KEYS", "sk-caller")]).await;
    let refused = gateway
        .call(
            Method::POST,
            "/v1/messages",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["type"], "error");
    assert_eq!(refused.json()["error"]["type"], "authentication_error");
    let openai = post_chat(&gateway, None, &chat("gpt-4o")).await;
    assert_eq!(openai.json()["error"]["code"], "invalid_api_key");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_that_fails_after_its_head_counts_as_failed_for_its_target() {
    let upstream = Simulator::builder()
        .plan(tower_llm_testkit::Fault::stream_drop_after(2))
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start_file(&one_target(&upstream, ""), &[]).await;
    let stream = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = post_chat(&gateway, None, stream).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("stream_incomplete"), "{}", answer.body);

    let health = gateway.get("/health").await.json();
    let primary = health["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "primary")
        .unwrap()
        .clone();
    assert_eq!(primary["requests"], 1, "{health}");
    assert_eq!(primary["failed"], 1, "{health}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_upstreams_own_x_tower_llm_headers_never_reach_the_caller_or_the_figures() {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert(
        "x-tower-llm-fallbacks",
        "elsewhere:overloaded".parse().unwrap(),
    );
    headers.insert("x-tower-llm-target", "not-ours".parse().unwrap());
    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    let upstream = Simulator::builder()
        .plan(tower_llm_testkit::Fault::raw(StatusCode::OK, headers, body))
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start_file(&one_target(&upstream, ""), &[]).await;
    let answer = post_chat(&gateway, None, &chat("gpt-4o")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("x-tower-llm-target"), "primary");
    assert_eq!(answer.header("x-tower-llm-fallbacks"), "");
    let health = gateway.get("/health").await.json();
    assert_eq!(
        health["recent_fallbacks"],
        serde_json::json!([]),
        "{health}"
    );
}
