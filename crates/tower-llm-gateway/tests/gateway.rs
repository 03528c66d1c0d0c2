//! The gateway, started in-process on an ephemeral port against
//! the testkit's simulated providers, exercised over HTTP with a real
//! client: what a user of the gateway sees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_llm::config::StackConfig;
use tower_llm::retry::ReplayBody;
use tower_llm_gateway::{
    ATTEMPTS_HEADER, CONTINUED_TRAILER, FALLBACKS_HEADER, GatewayOptions, TARGET_HEADER, config,
    demo::Demo,
};
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

use support::{PRIMARY_KEY, client, two_targets};
const CALLER_KEY: &str = "sk-callers-own-key";

/// A running gateway: its base URL and how to stop it.
struct Gateway {
    base: String,
    running: support::Running,
}

impl Gateway {
    async fn start(config: &str, options: GatewayOptions) -> Gateway {
        let config = StackConfig::from_toml(config).unwrap();
        let env = |name: &str| (name == "PRIMARY_KEY").then(|| PRIMARY_KEY.to_owned());
        let stack = config
            .stack_with_env(support::upstream_client(), env)
            .unwrap()
            .build()
            .unwrap();
        let running = support::serve_stack(stack, &options).await;
        Gateway {
            base: running.base.clone(),
            running,
        }
    }

    async fn post(&self, body: impl Into<Bytes>) -> Response<Incoming> {
        self.post_with(body, HeaderMap::new()).await
    }

    async fn post_with(&self, body: impl Into<Bytes>, headers: HeaderMap) -> Response<Incoming> {
        let mut request = Request::post(format!("{}/v1/chat/completions", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        request.headers_mut().extend(headers);
        client().request(request).await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(format!("{}{path}", self.base))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = client().request(request).await.unwrap();
        let status = response.status();
        (status, text(response).await)
    }

    async fn shutdown(self) -> std::io::Result<()> {
        self.running.stop().await
    }
}

async fn text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn header_of<'a>(response: &'a Response<Incoming>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

fn chat(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hello"}}]}}"#
    )
}

async fn sim(plan: impl Into<FaultPlan>) -> Simulator {
    Simulator::builder().plan(plan).start().await.unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_outage_of_the_primary_is_served_by_the_backup_with_headers_saying_so() {
    let primary = sim(Fault::status(503)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "backup");
    assert_eq!(header_of(&response, ATTEMPTS_HEADER), "1");
    assert_eq!(header_of(&response, FALLBACKS_HEADER), "primary:overloaded");
    assert!(text(response).await.contains("chat.completion"));
    // Development preset: two attempts at the primary, then the backup,
    // asked for its own model.
    assert_eq!(primary.requests().len(), 2);
    assert_eq!(backup.requests()[0].model.as_deref(), Some("llama3.2"));
    assert_eq!(backup.requests()[0].path, "/v1/chat/completions");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_primary_out_of_quota_is_passed_at_once_without_a_retry() {
    let primary = sim(Fault::quota_exhausted()).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, FALLBACKS_HEADER),
        "primary:quota_exhausted"
    );
    assert_eq!(primary.requests().len(), 1, "quota is never retried");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_too_long_for_the_primary_goes_to_the_routes_long_context_target() {
    let primary = sim(Fault::context_length_exceeded()).await;
    let backup = sim(Fault::ok()).await;
    let long = sim(Fault::ok()).await;
    let config = format!(
        r#"
        preset = "development"
        [[targets]]
        name = "primary"
        base_url = "{}/v1"
        context_window = 8000
        [[targets]]
        name = "backup"
        base_url = "{}/v1"
        context_window = 8000
        [[targets]]
        name = "long"
        base_url = "{}/v1"
        model = "gemini-2.5-pro"
        context_window = 1000000

        [[routes]]
        model = "gpt-4o"
        targets = ["primary", "backup"]
        context_length = ["long"]
        "#,
        primary.base_url(),
        backup.base_url(),
        long.base_url()
    );
    let gateway = Gateway::start(&config, Default::default()).await;

    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "long");
    assert!(backup.requests().is_empty(), "a target as small is skipped");
    assert_eq!(long.requests()[0].model.as_deref(), Some("gemini-2.5-pro"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_model_no_route_serves_gets_an_openai_shaped_404() {
    let primary = sim(Fault::ok()).await;
    let config = format!(
        r#"
        [[targets]]
        name = "primary"
        base_url = "{}/v1"
        [[routes]]
        model = "gpt-4o"
        targets = ["primary"]
        "#,
        primary.base_url()
    );
    let gateway = Gateway::start(&config, Default::default()).await;

    let response = gateway.post(chat("claude-opus-4", false)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-opus-4"),
        "{body}"
    );
    assert!(primary.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_passes_through_byte_for_byte() {
    // An exact SSE body, so what the client receives can be compared with
    // what the provider sent.
    let sse = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\u00e9lo\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    let primary = sim(Fault::raw(StatusCode::OK, headers, sse)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let response = gateway.post(chat("gpt-4o", true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, "content-type"), "text/event-stream");
    assert_eq!(text(response).await, sse);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_dropped_before_content_is_served_whole_by_a_retry() {
    let primary = sim(FaultPlan::script([Fault::stream_drop_after(0)])).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let response = gateway.post(chat("gpt-4o", true)).await;
    assert_eq!(header_of(&response, TARGET_HEADER), "primary");
    assert_eq!(header_of(&response, ATTEMPTS_HEADER), "2");
    let body = text(response).await;
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(backup.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_dropped_after_content_ends_with_an_error_event_the_sdk_reads_and_never_switches_to_a_target_that_cannot_continue()
 {
    // Loopback simulators name no provider known to continue an answer:
    // nothing can continue this one.
    let primary = sim(Fault::stream_drop_after(2)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let response = gateway.post(chat("gpt-4o", true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = text(response).await;
    assert!(received.contains("\"content\""), "content came first");
    assert!(!received.contains("[DONE]"), "never presented as complete");
    let last = received.trim_end().rsplit("\n\n").next().unwrap();
    let event: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        event["error"]["code"], "stream_incomplete",
        "the caller's SDK learns why: {last}"
    );
    assert_eq!(primary.requests().len(), 1, "no replay after content");
    assert!(backup.requests().is_empty(), "no silent switch of provider");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_cut_after_40_of_60_tokens_is_finished_by_a_backup_that_continues_and_read_as_one_answer()
 {
    let reply = |plan: FaultPlan| async move {
        Simulator::builder()
            .reply_tokens(60)
            .plan(plan)
            .start()
            .await
            .unwrap()
    };
    let primary = reply(FaultPlan::always(Fault::stream_drop_after(40))).await;
    let backup = reply(FaultPlan::always(Fault::ok())).await;
    let config = two_targets(&primary, &backup).replace(
        "model = \"llama3.2\"",
        "model = \"llama3.2\"\n        continuation = \"trailing_assistant\"",
    );
    let gateway = Gateway::start(&config, Default::default()).await;

    let mut asks_for_trailers = HeaderMap::new();
    asks_for_trailers.insert(header::TE, HeaderValue::from_static("trailers"));
    let response = gateway
        .post_with(chat("gpt-4o", true), asks_for_trailers)
        .await;
    assert_eq!(header_of(&response, TARGET_HEADER), "primary");
    assert_eq!(header_of(&response, "trailer"), CONTINUED_TRAILER);
    let whole = response.into_body().collect().await.unwrap();
    let trailers = whole.trailers().cloned().expect("the continuation trailer");
    assert_eq!(trailers[CONTINUED_TRAILER], "1; backup");
    let received = String::from_utf8(whole.to_bytes().to_vec()).unwrap();
    let said: String = received
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(said, primary.reply(), "no text twice, none missing");
    assert_eq!(received.matches("data: [DONE]").count(), 1);
    assert!(
        !received.contains("llama3.2"),
        "the model the caller saw first"
    );
    assert!(backup.requests()[0].prefill.is_some());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_continued_stream_that_breaks_for_good_still_says_it_was_continued() {
    let reply = |plan: FaultPlan| async move {
        Simulator::builder()
            .reply_tokens(60)
            .plan(plan)
            .start()
            .await
            .unwrap()
    };
    // The primary breaks after 40 tokens; every rest the backup sends
    // breaks after 2 more, until the continuations allowed are spent.
    let primary = reply(FaultPlan::always(Fault::stream_drop_after(40))).await;
    let backup = reply(FaultPlan::always(Fault::stream_drop_after(2))).await;
    let config = two_targets(&primary, &backup).replace(
        "model = \"llama3.2\"",
        "model = \"llama3.2\"\n        continuation = \"trailing_assistant\"",
    );
    let gateway = Gateway::start(&config, Default::default()).await;

    let mut asks_for_trailers = HeaderMap::new();
    asks_for_trailers.insert(header::TE, HeaderValue::from_static("trailers"));
    let response = gateway
        .post_with(chat("gpt-4o", true), asks_for_trailers)
        .await;
    let whole = response.into_body().collect().await.unwrap();
    let trailers = whole.trailers().cloned().expect("the continuation trailer");
    let continued = trailers[CONTINUED_TRAILER].to_str().unwrap().to_owned();
    let received = String::from_utf8(whole.to_bytes().to_vec()).unwrap();
    assert!(!received.contains("[DONE]"), "never presented as complete");
    assert!(received.contains("stream_incomplete"), "{received}");
    assert!(
        continued.starts_with("4; backup"),
        "each continuation told: {continued}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn health_shows_an_open_circuit_and_a_degraded_status() {
    let primary = sim(Fault::status(503)).await;
    let backup = sim(Fault::ok()).await;
    let config = two_targets(&primary, &backup)
        + "\n[circuit]\nconsecutive_failures = 3\nminimum_calls = 3\nopen_ms = 60000\n";
    let gateway = Gateway::start(&config, Default::default()).await;

    let (_, before) = gateway.get("/health").await;
    assert!(before.contains(r#""status":"ok""#), "{before}");
    for _ in 0..2 {
        assert_eq!(gateway.post(chat("gpt-4o", false)).await.status(), 200);
    }
    let (status, health) = gateway.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "degraded");
    let primary_key = health["circuits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "primary/gpt-4o")
        .unwrap();
    assert_eq!(primary_key["state"], "open");
    assert!(primary_key["open_remaining_ms"].as_u64().unwrap() > 0);
    // While open, the primary is not called at all.
    let calls = primary.requests().len();
    assert_eq!(gateway.post(chat("gpt-4o", false)).await.status(), 200);
    assert_eq!(primary.requests().len(), calls);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn health_and_metrics_show_each_deployments_picks() {
    let (east, west) = (
        sim(FaultPlan::healthy()).await,
        sim(FaultPlan::healthy()).await,
    );
    // Names no other test uses: the recorder is process-wide.
    let config = format!(
        r#"
        preset = "development"
        [[targets]]
        name = "picks-east"
        base_url = "{}/v1"
        weight = 3
        [[targets]]
        name = "picks-west"
        base_url = "{}/v1"
        [[routes]]
        model = "gpt-4o"
        groups = [{{ strategy = "weighted", targets = ["picks-east", "picks-west"] }}]
        "#,
        east.base_url(),
        west.base_url()
    );
    let gateway = Gateway::start(&config, Default::default()).await;
    for _ in 0..8 {
        assert_eq!(gateway.post(chat("gpt-4o", false)).await.status(), 200);
    }
    let served = [east.requests().len() as u64, west.requests().len() as u64];

    let (status, health) = gateway.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let route = &health["groups"][0];
    assert_eq!(route["model"], "gpt-4o", "{health}");
    let group = &route["groups"][0];
    assert_eq!(group["strategy"], "weighted");
    let deployments = group["deployments"].as_array().unwrap();
    let shown: Vec<(&str, u64, u64)> = deployments
        .iter()
        .map(|d| {
            (
                d["target"].as_str().unwrap(),
                d["weight"].as_u64().unwrap(),
                d["picks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [("picks-east", 3, served[0]), ("picks-west", 1, served[1])]
    );

    assert_eq!(served.iter().sum::<u64>(), 8);

    // A deployment's counter starts with its first pick.
    let (_, metrics) = gateway.get("/metrics").await;
    for (name, count) in [("picks-east", served[0]), ("picks-west", served[1])] {
        let line =
            format!(r#"tower_llm_fallback_picks_total{{route="gpt-4o",target="{name}"}} {count}"#);
        assert!(
            count == 0 || metrics.contains(&line),
            "{line} not in {metrics}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_count_retries_and_served_requests() {
    let primary = sim(FaultPlan::script([Fault::overloaded()])).await;
    // A target name no other test uses: the recorder is process-wide.
    let config = format!(
        r#"
        preset = "development"
        [[targets]]
        name = "metrics-only-target"
        base_url = "{}/v1"
        "#,
        primary.base_url()
    );
    let gateway = Gateway::start(&config, Default::default()).await;
    let value = |metrics: &str, line: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let served = r#"tower_llm_gateway_requests_total{endpoint="chat_completions",status="200",target="metrics-only-target"}"#;
    let retried = r#"tower_llm_retry_retries_total{kind="overloaded"}"#;
    let (_, before) = gateway.get("/metrics").await;

    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(header_of(&response, ATTEMPTS_HEADER), "2");
    let (status, after) = gateway.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value(&after, served), 1.0, "{after}");
    assert!(value(&after, retried) > value(&before, retried), "{after}");
    // The retry layer's success counters (their handles kept from the
    // first success on): one more call, two more attempts.
    let calls = r#"tower_llm_retry_calls_total{outcome="success"}"#;
    let attempts = "tower_llm_retry_attempts_total";
    assert!(
        value(&after, calls) >= value(&before, calls) + 1.0,
        "{after}"
    );
    assert!(
        value(&after, attempts) >= value(&before, attempts) + 2.0,
        "{after}"
    );
    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, later) = gateway.get("/metrics").await;
    assert!(value(&later, calls) > value(&after, calls), "{later}");
    // Latency is a histogram per endpoint, with buckets from 5 ms to
    // 10 minutes (an LLM call is not a web page).
    for bucket in [r#"le="0.005""#, r#"le="600""#] {
        assert!(
            after.lines().any(|l| l
                .starts_with("tower_llm_gateway_request_duration_seconds_bucket{")
                && l.contains(r#"endpoint="chat_completions""#)
                && l.contains(bucket)),
            "{after}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_target_refusing_the_gateways_key_is_a_502_that_echoes_nothing_of_it() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    headers.insert("openai-organization", "org-gatewayowner".parse().unwrap());
    headers.insert(header::SET_COOKIE, "upstream=1".parse().unwrap());
    let echoed = r#"{"error":{"message":"Incorrect API key provided: sk-proj-TARGETSECRET","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    let primary = sim(Fault::raw(StatusCode::UNAUTHORIZED, headers, echoed)).await;
    let backup = sim(Fault::status(503)).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers().get("openai-organization").is_none());
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let body = text(response).await;
    assert!(!body.contains("TARGETSECRET"), "{body}");
    assert!(body.contains("upstream_authentication"), "{body}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn upstream_hop_by_hop_cookie_and_account_headers_stay_at_the_gateway() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    headers.insert(header::CONNECTION, "close, x-internal".parse().unwrap());
    headers.insert("x-internal", "1".parse().unwrap());
    headers.insert(header::SET_COOKIE, "upstream=1".parse().unwrap());
    headers.insert("openai-organization", "org-gatewayowner".parse().unwrap());
    headers.insert("x-request-id", "req_123".parse().unwrap());
    let primary = sim(Fault::raw(
        StatusCode::OK,
        headers,
        r#"{"object":"chat.completion"}"#,
    ))
    .await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    for name in [
        "connection",
        "x-internal",
        "set-cookie",
        "openai-organization",
    ] {
        assert!(
            response.headers().get(name).is_none(),
            "{name} reached the client"
        );
    }
    assert_eq!(header_of(&response, "x-request-id"), "req_123");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unknown_paths_and_methods_get_openai_shaped_errors() {
    let primary = sim(Fault::ok()).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;
    let (status, body) = gateway.get("/v1/images/generations").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains(r#""type":"not_found""#), "{body}");
    let (status, body) = gateway.get("/v1/chat/completions").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains(r#""error""#), "{body}");
    // Not JSON: with a default route it goes on (the model may be in the
    // path for some APIs) and the provider refuses it; without one, the
    // stack does (tests/stack.rs).
    let response = gateway.post("not json").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_callers_key_never_reaches_an_upstream_and_each_target_gets_its_own() {
    let primary = sim(Fault::status(503)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {CALLER_KEY}");
    headers.insert(header::AUTHORIZATION, bearer.parse().unwrap());
    headers.insert("x-api-key", CALLER_KEY.parse().unwrap());
    headers.insert("api-key", CALLER_KEY.parse().unwrap());
    headers.insert(header::COOKIE, "session=abc".parse().unwrap());
    let response = gateway.post_with(chat("gpt-4o", false), headers).await;
    assert_eq!(response.status(), StatusCode::OK);

    let primary_requests = primary.requests();
    assert!(!primary_requests.is_empty());
    for request in primary_requests {
        assert!(request.carries_credential(PRIMARY_KEY));
        assert!(!request.carries_credential(CALLER_KEY));
        assert!(!request.headers.contains_key(header::COOKIE));
    }
    for request in backup.requests() {
        assert!(!request.carries_credential(CALLER_KEY));
        assert!(
            !request.carries_credential(PRIMARY_KEY),
            "no key crosses targets"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_10_mb_body_is_refused_with_413_and_never_sent_upstream() {
    let primary = sim(Fault::ok()).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;
    let huge = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(10 * 1024 * 1024)
    );

    // With a content-length: refused before the body is read.
    let response = gateway.post(huge.clone()).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(header_of(&response, "content-type"), "application/json");
    let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(body["error"]["type"], "payload_too_large");

    // Chunked, without a length: cut at the limit.
    let chunks = huge
        .as_bytes()
        .chunks(64 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    let request = Request::post(format!("{}/v1/chat/completions", gateway.base))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Chunked(chunks))
        .unwrap();
    let chunked = Client::builder(TokioExecutor::new()).build_http();
    let response = chunked.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(body["error"]["type"], "payload_too_large");

    assert!(primary.requests().is_empty() && backup.requests().is_empty());
}

/// A body of chunks with no announced length (sent chunked).
struct Chunked(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_target_cooling_down_answers_429_with_retry_after() {
    let primary = sim(Fault::rate_limited(Duration::from_secs(40))).await;
    let backup = sim(Fault::rate_limited(Duration::from_secs(20))).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    // Development preset: hints above 5 s are left to the fallback, which
    // has nowhere left to go.
    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header_of(&response, "retry-after").parse().unwrap();
    assert_eq!(retry_after, 20, "the soonest target's wait");

    // Now both keys cool down in their breakers: no upstream call at all.
    let calls = primary.requests().len() + backup.requests().len();
    let response = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header_of(&response, "retry-after").parse().unwrap();
    assert!((19..=20).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(primary.requests().len() + backup.requests().len(), calls);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_over_the_concurrency_limit_get_503_and_a_finished_stream_frees_its_slot() {
    let primary = sim(Fault::ok().with_token_delay(Duration::from_millis(100))).await;
    let backup = sim(Fault::ok()).await;
    let options = GatewayOptions {
        max_concurrency: 1,
        ..Default::default()
    };
    let gateway = Gateway::start(&two_targets(&primary, &backup), options).await;

    // A slow stream holds the only slot while it streams.
    let streaming = gateway.post(chat("gpt-4o", true)).await;
    assert_eq!(streaming.status(), StatusCode::OK);
    let refused = gateway.post(chat("gpt-4o", false)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header_of(&refused, "retry-after"), "1");
    let body = text(streaming).await;
    assert!(body.ends_with("data: [DONE]\n\n"));
    // The stream ended: its slot is free again.
    tokio::task::yield_now().await;
    assert_eq!(gateway.post(chat("gpt-4o", false)).await.status(), 200);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_shutdown_lets_a_stream_in_flight_finish() {
    let primary = sim(Fault::ok().with_token_delay(Duration::from_millis(200))).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup), Default::default()).await;

    let streaming = gateway.post(chat("gpt-4o", true)).await;
    assert_eq!(streaming.status(), StatusCode::OK);
    let base = gateway.base.clone();
    let stopping = tokio::spawn(gateway.shutdown());
    let body = text(streaming).await;
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "the stream finished: {body}"
    );
    stopping.await.unwrap().unwrap();
    // Stopped: nothing listens any more.
    let request = Request::get(format!("{base}/health"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert!(client().request(request).await.is_err());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_whole_answer_still_awaited_at_the_end_of_the_grace_period_is_told_the_gateway_shuts_down()
 {
    // Both targets answer after two minutes: the request is in the stack's
    // call when the gateway stops.
    let primary = sim(Fault::latency(Duration::from_secs(120))).await;
    let backup = sim(Fault::latency(Duration::from_secs(120))).await;
    let options = GatewayOptions {
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    let gateway = Gateway::start(&two_targets(&primary, &backup), options).await;
    let base = gateway.base.clone();
    let waiting = tokio::spawn(async move {
        let request = Request::post(format!("{base}/v1/chat/completions"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(chat("gpt-4o", false))))
            .unwrap();
        client().request(request).await.unwrap()
    });
    while primary.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    gateway.shutdown().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = text(answer).await;
    assert!(body.contains("shutting down"), "{body}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_shutdown_does_not_wait_past_its_grace_period() {
    let primary = sim(Fault::stream_stall_after(1)).await;
    let backup = sim(Fault::ok()).await;
    let options = GatewayOptions {
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    let gateway = Gateway::start(&two_targets(&primary, &backup), options).await;

    let stalled = gateway.post(chat("gpt-4o", true)).await;
    assert_eq!(stalled.status(), StatusCode::OK);
    let started = tokio::time::Instant::now();
    gateway.shutdown().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    // The stalled stream was ended, not left open behind the server: with
    // an error event its caller's SDK reads, then a clean end.
    let read = text(stalled).await;
    assert!(
        read.contains("shut down") && !read.contains("[DONE]"),
        "{read}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[test]
fn a_gateway_file_is_split_into_its_section_and_the_stack_and_typos_are_named() {
    let (section, stack) = config::parse_file(
        r#"
        [gateway]
        listen = "0.0.0.0:9000"
        max_concurrency = 64

        [[targets]]
        name = "openai"
        base_url = "https://api.openai.com/v1"
        "#,
    )
    .unwrap();
    let options = section.options().unwrap();
    assert_eq!(options.listen.port(), 9000);
    assert_eq!(options.max_concurrency, 64);
    assert_eq!(stack.targets.len(), 1);

    let error = config::parse_file("[gateway]\nmax_concurency = 4\n").unwrap_err();
    assert!(error.contains("max_concurency"), "{error}");
    let error = config::parse_file("[retry]\nmax_attemps = 4\n").unwrap_err();
    assert!(error.contains("max_attemps"), "{error}");
    let error = config::parse_file("[gateway]\nlisten = \"here\"\n")
        .and_then(|(s, _)| s.options())
        .unwrap_err();
    assert!(error.contains("listen"), "{error}");
}

#[test]
fn the_annotated_example_configuration_parses() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    let (section, config) = config::parse_file(&text).unwrap();
    section.options().unwrap();
    assert!(config.targets.len() >= 5, "the file shows every provider");
    // It builds, with stand-in keys: every route names a real target.
    let upstream: Client<HttpConnector, ReplayBody> =
        Client::builder(TokioExecutor::new()).build_http();
    let stack = config
        .stack_with_env(upstream, |_| Some("sk-stand-in".to_owned()))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        stack.targets_for(Some("gpt-4o")),
        Some(vec!["openai", "azure", "anthropic", "gemini", "ollama"])
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_demo_configuration_builds_and_serves() {
    let demo = Demo::start().await.unwrap();
    let config = demo.config().unwrap();
    let upstream: Client<HttpConnector, ReplayBody> =
        Client::builder(TokioExecutor::new()).build_http();
    let stack = config
        .stack_with_env(upstream, Demo::env)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        stack.targets_for(Some("gpt-4o")),
        Some(vec!["primary", "backup"])
    );
    // And serves: the flaky primary or, failing it, the backup.
    use tower::ServiceExt;
    let request = Request::post("/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(chat("gpt-4o", false))
        .unwrap();
    let response = stack.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// `serve` keeps a timer pending for as long as it serves (so that each
/// request's timeouts are filed without waking tokio's timer driver), and
/// that task ends with it: nothing is left running after a shutdown.
#[tokio::test(flavor = "current_thread")]
async fn serving_runs_a_timer_heartbeat_that_ends_with_it() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let backup = sim(Fault::ok()).await;
    let before = metrics.num_alive_tasks();
    let gateway = Gateway::start(&two_targets(&backup, &backup), Default::default()).await;
    // Let the server task start its heartbeat.
    let (status, _) = gateway.get("/health/live").await;
    assert_eq!(status, StatusCode::OK);
    // The server, its heartbeat and at least the connection just made.
    assert!(metrics.num_alive_tasks() >= before + 2);
    gateway.shutdown().await.unwrap();
    // Connection tasks end as their connections close.
    for _ in 0..100 {
        if metrics.num_alive_tasks() <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.num_alive_tasks(), before);
}
