//! Fallback over real HTTP: each target a Retry → Circuit → Classify stack
//! over a hyper client, against the testkit's simulated providers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};
use tower_llm_circuit::{CircuitConfig, CircuitLayer};
use tower_llm_classify::{ClassifyLayer, ErrorKind, LlmError};
use tower_llm_fallback::continuation::{Continuation, ContinuationReport};
use tower_llm_fallback::{Fallback, FallbackReport, Target};
use tower_llm_retry::{RetryLayer, RetryPolicy, RetryStats};
use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, LlmError>;
/// The body a target's stack returns.
type Inner = tower_llm_retry::RetryBody<
    tower_llm_circuit::CircuitBody<tower_llm_classify::stream::ResponseBody<hyper::body::Incoming>>,
>;
type Stack = BoxCloneSyncService<Request<Full<Bytes>>, http::Response<Body>, LlmError>;

/// A target's own stack: retry (seeded, short waits), circuit, classify, client.
fn stack(circuit: &CircuitLayer, attempts: u32) -> Stack {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let retry = RetryLayer::new(
        RetryPolicy::builder()
            .max_attempts(attempts)
            .seed(3)
            .build()
            .unwrap(),
    )
    .layer(circuit.layer(ClassifyLayer::new().layer(client)));
    let boxed = |response: http::Response<Inner>| {
        response.map(|body| body.map_err(LlmError::from_source).boxed_unsync())
    };
    let service: Stack = BoxCloneSyncService::new(tower::util::MapResponse::new(retry, boxed));
    service
}

fn fast_circuit() -> CircuitLayer {
    CircuitLayer::new(
        CircuitConfig::builder()
            .consecutive_failures(Some(2))
            .open_jitter(0.0)
            .build()
            .unwrap(),
    )
}

const CONVERSATION: &str = r#"{"model":"gpt-4o","temperature":0.2,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Which model are you? Say \"model\"."}]}"#;

fn request(sim: &Simulator, body: &str) -> Request<Full<Bytes>> {
    Request::post(sim.url(Api::OpenAiChat))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-caller")
        .body(Full::from(body.to_owned()))
        .unwrap()
}

fn target(name: &str, sim: &Simulator, circuit: &CircuitLayer, attempts: u32) -> Target<Stack> {
    Target::new(name, stack(circuit, attempts))
        .base_url(sim.base_url().parse().unwrap())
        .credential(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(&format!("Bearer sk-{name}")).unwrap(),
        )
}

async fn text(
    response: http::Response<tower_llm_fallback::FallbackBody<Body>>,
) -> Result<String, LlmError> {
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_cloud_target_down_after_its_retries_hands_the_conversation_to_the_local_one() {
    let cloud = Simulator::builder()
        .plan(Fault::server_error(503))
        .start()
        .await
        .unwrap();
    let local = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target(
            "cloud",
            &cloud,
            &CircuitLayer::new(CircuitConfig::standard()),
            3,
        ))
        .target(target("local", &local, &fast_circuit(), 3).model("llama3.2"))
        .build()
        .unwrap();
    let response = fallback
        .oneshot(request(&cloud, CONVERSATION))
        .await
        .unwrap();
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .unwrap()
        .clone();
    assert_eq!(report.served_by.as_deref(), Some("local"));
    assert_eq!(report.failed_kinds(), [("cloud", ErrorKind::Overloaded)]);
    assert!(text(response).await.unwrap().contains("chat.completion"));
    assert_eq!(cloud.requests().len(), 3, "the cloud target's own retries");
    // The same conversation, byte for byte, but for the model.
    let sent = &local.requests()[0];
    assert_eq!(
        sent.body_text(),
        CONVERSATION.replacen("gpt-4o", "llama3.2", 1)
    );
}

#[tokio::test(start_paused = true)]
async fn quota_exhausted_moves_on_at_once_without_retries() {
    let primary = Simulator::builder()
        .plan(Fault::quota_exhausted())
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("primary", &primary, &fast_circuit(), 3))
        .target(target("backup", &backup, &fast_circuit(), 3))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let response = fallback
        .oneshot(request(&primary, CONVERSATION))
        .await
        .unwrap();
    assert_eq!(
        response
            .extensions()
            .get::<FallbackReport>()
            .unwrap()
            .served_by
            .as_deref(),
        Some("backup")
    );
    assert_eq!(primary.requests().len(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO, "no wait");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_request_does_not_move_on() {
    let primary = Simulator::builder()
        .plan(Fault::status(400))
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("primary", &primary, &fast_circuit(), 3))
        .target(target("backup", &backup, &fast_circuit(), 3))
        .build()
        .unwrap();
    let error = fallback
        .oneshot(request(&primary, CONVERSATION))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert_eq!(
        error
            .extensions()
            .get::<FallbackReport>()
            .unwrap()
            .failed_kinds(),
        [("primary", ErrorKind::InvalidRequest)]
    );
    assert!(backup.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn context_length_goes_to_the_larger_context_target_and_skips_the_small_one() {
    let small = Simulator::builder()
        .plan(Fault::context_length_exceeded())
        .start()
        .await
        .unwrap();
    let also_small = Simulator::start().await.unwrap();
    let large = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("small", &small, &fast_circuit(), 3).context_window(8_000))
        .target(
            target("also-small", &also_small, &fast_circuit(), 3)
                .context_window(4_000)
                .larger_context(),
        )
        .target(
            target("large", &large, &fast_circuit(), 3)
                .context_window(200_000)
                .larger_context(),
        )
        .build()
        .unwrap();
    let response = fallback
        .oneshot(request(&small, CONVERSATION))
        .await
        .unwrap();
    assert_eq!(
        response
            .extensions()
            .get::<FallbackReport>()
            .unwrap()
            .served_by
            .as_deref(),
        Some("large")
    );
    assert!(
        also_small.requests().is_empty(),
        "a smaller window is skipped"
    );
    assert_eq!(small.requests().len(), 1, "context length is never retried");
}

#[tokio::test(start_paused = true)]
async fn a_content_filter_goes_to_its_listed_target() {
    let strict = Simulator::builder()
        .plan(Fault::content_filtered())
        .start()
        .await
        .unwrap();
    let ordinary = Simulator::start().await.unwrap();
    let lenient = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("strict", &strict, &fast_circuit(), 3))
        .target(target("ordinary", &ordinary, &fast_circuit(), 3))
        .target(target("lenient", &lenient, &fast_circuit(), 3).for_content_filter())
        .build()
        .unwrap();
    let response = fallback
        .oneshot(request(&strict, CONVERSATION))
        .await
        .unwrap();
    assert_eq!(
        response
            .extensions()
            .get::<FallbackReport>()
            .unwrap()
            .served_by
            .as_deref(),
        Some("lenient")
    );
    assert!(ordinary.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_target_with_an_open_circuit_is_skipped_without_a_call() {
    let down = Simulator::builder()
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let circuit = fast_circuit();
    let fallback = Fallback::builder()
        .target(target("down", &down, &circuit, 1))
        .target(target("backup", &backup, &fast_circuit(), 1))
        .build()
        .unwrap();
    call_times(&fallback, &down, 2).await;
    assert_eq!(down.requests().len(), 2, "two overloads opened its circuit");
    let response = fallback
        .clone()
        .oneshot(request(&down, CONVERSATION))
        .await
        .unwrap();
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .unwrap()
        .clone();
    assert_eq!(report.failed_kinds(), [("down", ErrorKind::CircuitOpen)]);
    assert_eq!(down.requests().len(), 2, "no call to an open target");
    assert_eq!(backup.requests().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_before_its_first_content_is_served_whole_by_the_next_target() {
    let first = Simulator::builder()
        .plan(Fault::stream_error_after(0))
        .start()
        .await
        .unwrap();
    let second = Simulator::builder().reply_tokens(3).start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("first", &first, &fast_circuit(), 1))
        .target(target("second", &second, &fast_circuit(), 1))
        .build()
        .unwrap();
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = fallback.oneshot(request(&first, body)).await.unwrap();
    assert_eq!(
        response
            .extensions()
            .get::<FallbackReport>()
            .unwrap()
            .served_by
            .as_deref(),
        Some("second")
    );
    let streamed = text(response).await.unwrap();
    assert!(
        streamed.contains("token0")
            && streamed.contains("token2")
            && streamed.ends_with("data: [DONE]\n\n")
    );
    assert!(!streamed.contains("error"));
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_after_content_is_incomplete_and_no_second_provider_is_called() {
    let first = Simulator::builder()
        .reply_tokens(4)
        .plan(Fault::stream_drop_after(2).with_token_delay(Duration::from_millis(10)))
        .start()
        .await
        .unwrap();
    let second = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("first", &first, &fast_circuit(), 1))
        .target(target("second", &second, &fast_circuit(), 1))
        .build()
        .unwrap();
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = fallback.oneshot(request(&first, body)).await.unwrap();
    let error = text(response).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    assert!(!error.retryable());
    assert!(second.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn credentials_never_cross_targets() {
    let a = Simulator::builder()
        .plan(Fault::server_error(500))
        .start()
        .await
        .unwrap();
    let b = Simulator::builder()
        .plan(Fault::server_error(500))
        .start()
        .await
        .unwrap();
    let c = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("a", &a, &fast_circuit(), 2))
        .target(target("b", &b, &fast_circuit(), 2))
        .target(
            Target::new("c", stack(&fast_circuit(), 2))
                .base_url(c.base_url().parse().unwrap())
                .credential(
                    HeaderName::from_static("x-api-key"),
                    HeaderValue::from_static("sk-c"),
                ),
        )
        .build()
        .unwrap();
    fallback.oneshot(request(&a, CONVERSATION)).await.unwrap();
    for (sim, own, others) in [
        (&a, "sk-a", ["sk-b", "sk-c"]),
        (&b, "sk-b", ["sk-a", "sk-c"]),
        (&c, "sk-c", ["sk-a", "sk-b"]),
    ] {
        for sent in sim.requests() {
            assert!(sent.carries_credential(own), "{own}");
            assert!(
                !sent.carries_credential("sk-caller"),
                "the caller's key was forwarded"
            );
            for other in others {
                assert!(
                    !sent.carries_credential(other),
                    "{other} reached the wrong target"
                );
            }
            assert_eq!(sent.credential_headers().count(), 1);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn when_every_target_fails_the_error_lists_them_all() {
    let a = Simulator::builder()
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let b = Simulator::builder()
        .plan(Fault::quota_exhausted())
        .start()
        .await
        .unwrap();
    let c = Simulator::builder()
        .plan(Fault::reset())
        .start()
        .await
        .unwrap();
    let fallback = Fallback::builder()
        .target(target("a", &a, &fast_circuit(), 1))
        .target(target("b", &b, &fast_circuit(), 1))
        .target(target("c", &c, &fast_circuit(), 1))
        .build()
        .unwrap();
    let error = fallback
        .oneshot(request(&a, CONVERSATION))
        .await
        .unwrap_err();
    let report = error.extensions().get::<FallbackReport>().unwrap().clone();
    assert_eq!(report.served_by, None);
    let kinds: Vec<(&str, ErrorKind)> = report.failed_kinds();
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds[0], ("a", ErrorKind::Overloaded));
    assert_eq!(kinds[1], ("b", ErrorKind::QuotaExhausted));
    assert_eq!(kinds[2].0, "c");
    assert!(
        matches!(kinds[2].1, ErrorKind::Transport | ErrorKind::Connect),
        "{:?}",
        kinds[2]
    );
    assert_eq!(
        error.kind(),
        ErrorKind::Overloaded,
        "the primary's error: a provider's own answer"
    );
    assert_eq!(error.response_head().unwrap().status, 503);
    assert_eq!(RetryStats::of(error.extensions()).attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn when_every_target_is_rate_limited_the_soonest_retry_after_is_returned() {
    let a = Simulator::builder()
        .plan(Fault::rate_limited(Duration::from_secs(120)))
        .start()
        .await
        .unwrap();
    let b = Simulator::builder()
        .plan(Fault::rate_limited(Duration::from_secs(90)))
        .start()
        .await
        .unwrap();
    let fallback = Fallback::builder()
        .target(target("a", &a, &fast_circuit(), 3))
        .target(target("b", &b, &fast_circuit(), 3))
        .build()
        .unwrap();
    let error = fallback
        .oneshot(request(&a, CONVERSATION))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(90))
    );
    let response = error.into_response();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "90");
}

#[tokio::test(start_paused = true)]
async fn a_target_rejecting_its_own_key_moves_on() {
    let revoked = Simulator::builder()
        .api_key("sk-current")
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("revoked", &revoked, &fast_circuit(), 3))
        .target(target("backup", &backup, &fast_circuit(), 3))
        .build()
        .unwrap();
    let response = fallback
        .oneshot(request(&revoked, CONVERSATION))
        .await
        .unwrap();
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .unwrap()
        .clone();
    assert_eq!(
        report.failed_kinds(),
        [("revoked", ErrorKind::Authentication)]
    );
    assert_eq!(report.served_by.as_deref(), Some("backup"));
}

#[tokio::test(start_paused = true)]
async fn a_request_a_target_cannot_take_skips_it_without_a_call() {
    let picky = Simulator::start().await.unwrap();
    let backup = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("picky", &picky, &fast_circuit(), 3).model("needs-a-string-model"))
        .target(target("backup", &backup, &fast_circuit(), 3))
        .build()
        .unwrap();
    // Not a JSON object: its model cannot be set for `picky`, which is
    // skipped; `backup` sends it as it is (and the provider refuses it).
    let body = r#"[{"model":"gpt-4o"}]"#;
    let error = fallback.oneshot(request(&picky, body)).await.unwrap_err();
    let report = error.extensions().get::<FallbackReport>().unwrap().clone();
    assert_eq!(
        report.failed_kinds(),
        [
            ("picky", ErrorKind::InvalidRequest),
            ("backup", ErrorKind::InvalidRequest)
        ]
    );
    assert!(
        report.failures[0]
            .1
            .message()
            .unwrap()
            .contains("not sent to `picky`")
    );
    assert!(picky.requests().is_empty());
    assert_eq!(backup.requests()[0].body_text(), body);
}

#[tokio::test(start_paused = true)]
async fn when_every_target_is_cooling_down_or_open_the_soonest_wait_is_returned() {
    let limited = Simulator::builder()
        .plan(Fault::rate_limited(Duration::from_secs(120)))
        .start()
        .await
        .unwrap();
    let down = Simulator::builder()
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let circuit = fast_circuit();
    let fallback = Fallback::builder()
        .target(target("limited", &limited, &fast_circuit(), 1))
        .target(target("down", &down, &circuit, 1))
        .build()
        .unwrap();
    // Open `down`'s circuit (two overloads), then ask again.
    for _ in 0..2 {
        let _ = fallback
            .clone()
            .oneshot(request(&limited, CONVERSATION))
            .await;
    }
    let error = fallback
        .oneshot(request(&limited, CONVERSATION))
        .await
        .unwrap_err();
    // limited: cooling down ~120 s; down: circuit open for ~10 s.
    assert!(
        error.classification().retry_after().unwrap() <= Duration::from_secs(10),
        "{error:?}"
    );
}

#[test]
fn a_credential_without_a_base_url_or_a_relative_base_is_refused() {
    let with_key = Target::new("t", ()).credential(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("sk"),
    );
    let error = Fallback::builder().target(with_key).build().unwrap_err();
    assert!(error.to_string().contains("no base URL"), "{error}");
    let relative = Target::new("t", ()).base_url("api.anthropic.com".parse().unwrap());
    let error = Fallback::builder().target(relative).build().unwrap_err();
    assert!(error.to_string().contains("scheme and a host"), "{error}");
}

fn hedged(primary: &Simulator, backup: &Simulator, ratio: f64) -> Fallback<Stack> {
    Fallback::builder()
        .target(target("primary", primary, &fast_circuit(), 1))
        .target(target("backup", backup, &fast_circuit(), 1))
        .hedge(Duration::from_secs(1), ratio)
        .build()
        .unwrap()
}

/// Sends `n` conversations through `fallback`, one after the other, each
/// answered.
async fn call_times(fallback: &Fallback<Stack>, sim: &Simulator, n: usize) {
    for _ in 0..n {
        let _ = fallback
            .clone()
            .oneshot(request(sim, CONVERSATION))
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn hedging_returns_the_faster_target_and_cancels_the_slower() {
    let slow = Simulator::builder()
        .latency(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let fast = Simulator::start().await.unwrap();
    let started = tokio::time::Instant::now();
    let response = hedged(&slow, &fast, 1.0)
        .oneshot(request(&slow, CONVERSATION))
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "the hedge went out after 1 s and answered at once"
    );
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .unwrap()
        .clone();
    assert_eq!(report.served_by.as_deref(), Some("backup"));
    assert!(report.failures.is_empty());
    assert!(text(response).await.unwrap().contains("chat.completion"));
    // The slow call was cancelled: its connection closed, nothing in service.
    for _ in 0..100 {
        if slow.stats().in_service == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.stats().in_service, 0);
    assert_eq!(slow.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_first_target_answers_in_time() {
    let primary = Simulator::builder()
        .latency(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let response = hedged(&primary, &backup, 1.0)
        .oneshot(request(&primary, CONVERSATION))
        .await
        .unwrap();
    assert_eq!(
        response
            .extensions()
            .get::<FallbackReport>()
            .unwrap()
            .served_by
            .as_deref(),
        Some("primary")
    );
    assert!(backup.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_hedging_budget_bounds_the_hedges() {
    let slow = Simulator::builder()
        .latency(Duration::from_secs(3))
        .record(true)
        .start()
        .await
        .unwrap();
    let fast = Simulator::start().await.unwrap();
    let fallback = hedged(&slow, &fast, 0.25);
    call_times(&fallback, &slow, 8).await;
    // At most a quarter of the calls hedged.
    assert!(
        fast.requests().len() <= 2,
        "{} hedges for 8 calls",
        fast.requests().len()
    );
    assert!(!fast.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_long_quiet_run_saves_no_hedges_for_a_later_slow_spell() {
    // 1,000 calls answered in time, then the primary turns slow: at a
    // 10 % ratio, the next 100 calls may not all hedge.
    let primary = Simulator::builder().record(true).start().await.unwrap();
    let backup = Simulator::builder().record(true).start().await.unwrap();
    let fallback = hedged(&primary, &backup, 0.1);
    call_times(&fallback, &primary, 1000).await;
    assert!(backup.requests().is_empty());
    primary.set_latency(Duration::from_secs(3));
    call_times(&fallback, &primary, 100).await;
    let hedges = backup.requests().len();
    assert!(
        hedges <= 2 * 100 / 10 + 10,
        "{hedges} of the 100 slow calls hedged"
    );
    assert!(hedges > 0);
}

#[tokio::test(start_paused = true)]
async fn a_first_target_failing_before_the_hedge_moves_on_as_usual() {
    let broken = Simulator::builder()
        .plan(Fault::server_error(500))
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let started = tokio::time::Instant::now();
    let response = hedged(&broken, &backup, 1.0)
        .oneshot(request(&broken, CONVERSATION))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .unwrap()
        .clone();
    assert_eq!(report.served_by.as_deref(), Some("backup"));
    assert_eq!(report.failed_kinds(), [("primary", ErrorKind::ServerError)]);
}

#[tokio::test(start_paused = true)]
async fn when_both_hedged_calls_fail_the_next_target_serves() {
    let a = Simulator::builder()
        .latency(Duration::from_secs(2))
        .plan(Fault::server_error(503))
        .start()
        .await
        .unwrap();
    let b = Simulator::builder()
        .plan(Fault::server_error(500).with_latency(Duration::from_secs(2)))
        .start()
        .await
        .unwrap();
    let c = Simulator::start().await.unwrap();
    let fallback = Fallback::builder()
        .target(target("a", &a, &fast_circuit(), 1))
        .target(target("b", &b, &fast_circuit(), 1))
        .target(target("c", &c, &fast_circuit(), 1))
        .hedge(Duration::from_secs(1), 1.0)
        .build()
        .unwrap();
    let response = fallback.oneshot(request(&a, CONVERSATION)).await.unwrap();
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .unwrap()
        .clone();
    assert_eq!(report.served_by.as_deref(), Some("c"));
    assert_eq!(
        report.failed_kinds(),
        [("a", ErrorKind::Overloaded), ("b", ErrorKind::ServerError)]
    );
}

/// A streamed conversation (what a gateway's caller sends).
const STREAMED: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Tell me a story."}]}"#;

/// The text content of an OpenAI stream, as an SDK concatenates it.
fn streamed_text(stream: &str) -> String {
    stream
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            v.pointer("/choices/0/delta/content")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_after_1_or_40_content_events_reaches_the_caller_whole_and_once() {
    for cut in [1, 40] {
        let primary = Simulator::builder()
            .reply_tokens(60)
            .plan(FaultPlan::script([Fault::stream_drop_after(cut)]))
            .start()
            .await
            .unwrap();
        let fallback = Fallback::builder()
            .target(
                target("primary", &primary, &fast_circuit(), 3)
                    .continuation(Continuation::TrailingAssistant),
            )
            .continue_streams(2)
            .build()
            .unwrap();
        let response = fallback.oneshot(request(&primary, STREAMED)).await.unwrap();
        let report = response
            .extensions()
            .get::<ContinuationReport>()
            .cloned()
            .unwrap();
        let stream = text(response).await.unwrap();
        assert_eq!(
            streamed_text(&stream),
            primary.reply(),
            "cut after {cut}: no text twice, none missing"
        );
        assert_eq!(stream.matches("\"role\"").count(), 1, "one role chunk");
        assert_eq!(stream.matches("data: [DONE]").count(), 1);
        assert_eq!(report.continued(), 1);
        let requests = primary.requests();
        assert_eq!(requests.len(), 2, "the cut stream and the rest");
        assert!(
            requests[1].prefill.is_some(),
            "the rest was asked with a prefill"
        );
    }
}
