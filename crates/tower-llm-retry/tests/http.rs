//! The retry layer over real HTTP: a hyper client, `ClassifyLayer`, and the
//! testkit's simulated providers. Time is paused: waits are exact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_llm_classify::{Classify, ClassifyLayer, ErrorKind, LlmError, Phase};
use tower_llm_retry::{Backoff, GiveUp, ReplayBody, Retry, RetryLayer, RetryPolicy, RetryStats};
use tower_llm_testkit::{Api, Failure, Fault, FaultPlan, RetryHint, Simulator, gaps};

type Stack = Retry<Classify<Client<HttpConnector, ReplayBody>>>;

fn stack(policy: RetryPolicy) -> Stack {
    let client = Client::builder(TokioExecutor::new()).build_http();
    RetryLayer::new(policy).layer(ClassifyLayer::new().layer(client))
}

fn policy() -> tower_llm_retry::RetryPolicyBuilder {
    RetryPolicy::builder().seed(42)
}

fn request(sim: &Simulator, api: Api, stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"m","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    Request::post(sim.url(api))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap()
}

async fn sim(plan: impl Into<FaultPlan>) -> Simulator {
    Simulator::builder()
        .reply_tokens(4)
        .plan(plan)
        .start()
        .await
        .unwrap()
}

/// Calls once; returns the body text (or the error) and the stats.
async fn call(
    service: &Stack,
    request: Request<Full<Bytes>>,
) -> (Result<String, LlmError>, RetryStats) {
    match service.clone().oneshot(request).await {
        Ok(response) => {
            let stats = RetryStats::of(response.extensions());
            let body = response
                .into_body()
                .collect()
                .await
                .map(|c| String::from_utf8(c.to_bytes().to_vec()).unwrap());
            (body, stats)
        }
        Err(error) => {
            let stats = *error.extensions().get::<RetryStats>().unwrap();
            (Err(error), stats)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn succeeds_first_try_with_one_attempt_and_no_wait() {
    let sim = sim(Fault::ok()).await;
    let (body, stats) = call(
        &stack(policy().build().unwrap()),
        request(&sim, Api::OpenAiChat, false),
    )
    .await;
    assert!(body.unwrap().contains("chat.completion"));
    assert_eq!(
        (stats.attempts, stats.slept, stats.gave_up),
        (1, Duration::ZERO, None)
    );
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_each_transient_failure_then_succeeds() {
    for fault in [
        Fault::overloaded(),
        Fault::server_error(500),
        Fault::server_error(502),
        Fault::server_error(503),
        Fault::server_error(504),
        Fault::rate_limited(Duration::from_secs(1)),
        Fault::status(408),
        Fault::status(409),
        Fault::reset(),
        Fault::close(),
    ] {
        for api in [Api::OpenAiChat, Api::AnthropicMessages] {
            let service = stack(policy().build().unwrap());
            let sim = sim(FaultPlan::script([fault.clone()])).await;
            let (body, stats) = call(&service, request(&sim, api, false)).await;
            assert!(body.is_ok(), "{fault} on {api}: {body:?}");
            assert_eq!(stats.attempts, 2, "{fault} on {api}");
            assert_eq!(sim.requests().len(), 2, "{fault} on {api}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn never_retries_what_a_retry_cannot_fix() {
    // One service for every case: nothing is retried, so the budget is untouched.
    let service = stack(policy().build().unwrap());
    for fault in [
        Fault::status(400),
        Fault::unauthorized(),
        Fault::status(403),
        Fault::model_not_found(),
        Fault::status(413),
        Fault::status(422),
        Fault::quota_exhausted(),
        Fault::context_length_exceeded(),
        Fault::content_filtered(),
    ] {
        let sim = sim(FaultPlan::script([fault.clone()])).await;
        let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
        let error = body.unwrap_err();
        assert!(!error.retryable(), "{fault}: {error:?}");
        assert_eq!(
            (stats.attempts, stats.gave_up),
            (1, Some(GiveUp::NotRetryable)),
            "{fault}"
        );
        assert_eq!(sim.requests().len(), 1, "{fault}");
    }
}

#[tokio::test(start_paused = true)]
async fn exhausts_attempts_and_returns_the_last_classified_error() {
    let sim = sim(Fault::overloaded()).await;
    let started = Instant::now();
    let (body, stats) = call(
        &stack(policy().build().unwrap()),
        request(&sim, Api::AnthropicMessages, false),
    )
    .await;
    let error = body.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert_eq!(
        error.classification().status(),
        Some(StatusCode::from_u16(529).unwrap())
    );
    assert_eq!(
        error.response_head().unwrap().status,
        529,
        "the provider's reply is kept"
    );
    assert_eq!(
        (stats.attempts, stats.gave_up),
        (3, Some(GiveUp::AttemptsExhausted))
    );
    assert_eq!(sim.requests().len(), 3);
    assert_eq!(started.elapsed(), stats.slept);
}

#[tokio::test(start_paused = true)]
async fn backoff_without_a_hint_follows_the_schedule() {
    let sim = sim(FaultPlan::script([
        Fault::server_error(500),
        Fault::server_error(500),
    ]))
    .await;
    let service = stack(
        policy()
            .backoff(
                Backoff::exponential(Duration::from_millis(300), Duration::from_secs(5))
                    .with_jitter(tower_llm_retry::Jitter::None),
            )
            .build()
            .unwrap(),
    );
    let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
    assert!(body.is_ok());
    assert_eq!(
        gaps(&sim.requests()),
        [Duration::from_millis(300), Duration::from_millis(600)]
    );
    assert_eq!(stats.slept, Duration::from_millis(900));
}

#[tokio::test(start_paused = true)]
async fn waits_at_least_the_hint_and_at_most_half_again_in_every_header_form() {
    let service = stack(policy().build().unwrap());
    for (hint, wait) in [
        (RetryHint::Seconds, Duration::from_secs(2)),
        (RetryHint::Milliseconds, Duration::from_millis(1500)),
        (RetryHint::HttpDate, Duration::from_secs(3)),
        (RetryHint::ResetHeadersOnly, Duration::from_secs(4)),
    ] {
        let sim = sim(FaultPlan::script([Fault::rate_limited_with(wait, hint)])).await;
        let (body, _) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
        assert!(body.is_ok(), "{hint:?}");
        let gap = gaps(&sim.requests())[0];
        // An HTTP-date has whole seconds, and is read against the wall clock.
        let least = if hint == RetryHint::HttpDate {
            wait - Duration::from_secs(1)
        } else {
            wait
        };
        assert!(
            gap >= least && gap <= wait.mul_f64(1.5),
            "{hint:?}: waited {gap:?} for {wait:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_is_preferred_to_retry_after() {
    // retry-after-ms: 200 and retry-after: 1; the wait follows the milliseconds.
    let sim = sim(FaultPlan::script([Fault::rate_limited_with(
        Duration::from_millis(200),
        RetryHint::Milliseconds,
    )]))
    .await;
    let (body, _) = call(
        &stack(policy().build().unwrap()),
        request(&sim, Api::OpenAiChat, false),
    )
    .await;
    assert!(body.is_ok());
    let gap = gaps(&sim.requests())[0];
    assert!(
        gap >= Duration::from_millis(200) && gap <= Duration::from_millis(300),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hint_over_the_ceiling_gives_up_at_once_with_the_hint() {
    let sim = sim(Fault::rate_limited(Duration::from_secs(120))).await;
    let started = Instant::now();
    let (body, stats) = call(
        &stack(policy().build().unwrap()),
        request(&sim, Api::OpenAiChat, false),
    )
    .await;
    let error = body.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "no sleep");
    assert_eq!(
        (stats.attempts, stats.gave_up),
        (1, Some(GiveUp::HintTooLong))
    );
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(120))
    );
}

#[tokio::test(start_paused = true)]
async fn a_hint_past_the_deadline_gives_up_at_once() {
    let sim = sim(Fault::rate_limited(Duration::from_secs(20))).await;
    let service = stack(policy().deadline(Duration::from_secs(10)).build().unwrap());
    let started = Instant::now();
    let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
    assert!(body.is_err());
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(stats.gave_up, Some(GiveUp::Deadline));
}

fn raw_with_should_retry(status: StatusCode, should_retry: &'static str) -> Fault {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-should-retry", HeaderValue::from_static(should_retry));
    Fault::raw(
        status,
        headers,
        r#"{"error":{"message":"simulated","type":"server_error","param":null,"code":null}}"#,
    )
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_overrides_the_status_both_ways() {
    let service = stack(policy().build().unwrap());
    let stopped = sim(FaultPlan::script([raw_with_should_retry(
        StatusCode::SERVICE_UNAVAILABLE,
        "false",
    )]))
    .await;
    let (body, stats) = call(&service, request(&stopped, Api::OpenAiChat, false)).await;
    assert!(body.is_err());
    assert_eq!((stats.attempts, stopped.requests().len()), (1, 1));

    let sim = sim(FaultPlan::script([raw_with_should_retry(
        StatusCode::BAD_REQUEST,
        "true",
    )]))
    .await;
    let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
    assert!(body.is_ok());
    assert_eq!((stats.attempts, sim.requests().len()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_contains_every_attempt_and_wait() {
    let sim = sim(Fault::stall()).await;
    let service = stack(
        policy()
            .max_attempts(10)
            .backoff(Backoff::constant(Duration::from_millis(100)))
            .attempt_timeout(Duration::from_secs(2))
            .deadline(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let started = Instant::now();
    let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
    let error = body.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    // 0–2 s attempt, 0.1 s wait, 2.1–4.1 s attempt; 0.9 s left is less than a wait and an attempt.
    assert_eq!(started.elapsed(), Duration::from_millis(4100));
    assert!(started.elapsed() <= Duration::from_secs(5));
    assert_eq!((stats.attempts, stats.gave_up), (2, Some(GiveUp::Deadline)));
}

#[tokio::test(start_paused = true)]
async fn the_body_is_replayed_byte_for_byte() {
    let sim = sim(FaultPlan::script([Fault::server_error(500)])).await;
    let request = request(&sim, Api::OpenAiChat, false);
    let (body, _) = call(&stack(policy().build().unwrap()), request).await;
    assert!(body.is_ok());
    let requests = sim.requests();
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(requests[0].headers, requests[1].headers);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_limit_is_a_clear_error_and_nothing_is_sent() {
    let sim = sim(Fault::ok()).await;
    let service = stack(policy().max_body(16).build().unwrap());
    let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
    let error = body.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PayloadTooLarge);
    assert_eq!(error.classification().phase(), Phase::Local);
    assert!(
        error.to_string().contains("larger than the 16 bytes"),
        "{error}"
    );
    assert_eq!(stats.attempts, 0);
    assert!(sim.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_error_as_the_first_stream_event_is_retried_and_the_caller_gets_a_clean_stream() {
    let service = stack(policy().build().unwrap());
    for api in Api::ALL {
        for fault in [Fault::stream_error_after(0), Fault::stream_drop_after(0)] {
            let faulty = sim(FaultPlan::script([fault.clone()])).await;
            let (body, stats) = call(&service, request(&faulty, api, true)).await;
            let text = body.unwrap_or_else(|e| panic!("{fault} on {api}: {e:?}"));
            // Exactly the events of a healthy stream: nothing of the failed
            // attempt, nothing twice.
            let healthy = sim(Fault::ok()).await;
            let (reference, _) = call(
                &stack(policy().build().unwrap()),
                request(&healthy, api, true),
            )
            .await;
            assert_eq!(shape(&text), shape(&reference.unwrap()), "{fault} on {api}");
            assert_eq!(stats.attempts, 2, "{fault} on {api}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_error_in_the_same_read_as_the_first_content_is_still_retried() {
    // No delay between events: content and the error arrive together, and
    // the guard has handed nothing to the caller yet.
    let sim = sim(FaultPlan::script([Fault::stream_error_after(2)])).await;
    let (body, stats) = call(
        &stack(policy().build().unwrap()),
        request(&sim, Api::AnthropicMessages, true),
    )
    .await;
    let text = body.unwrap();
    assert!(
        text.contains("message_stop") && !text.contains("event: error"),
        "{text}"
    );
    assert_eq!(stats.attempts, 2);
}

/// A stream's events with their ids and timestamps blanked out.
fn shape(text: &str) -> Vec<String> {
    text.split(['\n'])
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut line = line.to_owned();
            for key in ["\"id\":\"", "\"created_at\":\""] {
                if let Some(start) = line.find(key) {
                    let from = start + key.len();
                    if let Some(len) = line[from..].find('"') {
                        line.replace_range(from..from + len, "");
                    }
                }
            }
            line
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_after_content_is_never_retried() {
    let service = stack(policy().build().unwrap());
    // Content events 10 ms apart: the first reaches the caller before the failure.
    let spaced = Duration::from_millis(10);
    for fault in [
        Fault::stream_error_after(2).with_token_delay(spaced),
        Fault::stream_drop_after(2).with_token_delay(spaced),
    ] {
        let sim = sim(FaultPlan::script([fault.clone()])).await;
        let response = service
            .clone()
            .oneshot(request(&sim, Api::AnthropicMessages, true))
            .await
            .unwrap();
        assert_eq!(RetryStats::of(response.extensions()).attempts, 1);
        assert!(
            response.extensions().get::<RetryStats>().is_none(),
            "no allocation for a first-try success"
        );
        let error = response.into_body().collect().await.unwrap_err();
        assert_eq!(error.classification().phase(), Phase::MidStream, "{fault}");
        assert!(!error.retryable());
        assert_eq!(sim.requests().len(), 1, "{fault}");
    }
}

#[tokio::test(start_paused = true)]
async fn time_to_first_content_counts_against_the_attempt_timeout() {
    // Headers at once, then a stall before any content: the attempt times out.
    let sim = sim(FaultPlan::script([Fault::stream_stall_after(0)])).await;
    let service = stack(
        policy()
            .attempt_timeout(Duration::from_secs(3))
            .build()
            .unwrap(),
    );
    let started = Instant::now();
    let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, true)).await;
    assert!(body.is_ok(), "{body:?}");
    assert_eq!(stats.attempts, 2);
    assert_eq!(started.elapsed(), Duration::from_secs(3) + stats.slept);
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm_against_a_dead_upstream() {
    let sim = sim(Fault::server_error(503)).await;
    // The default budget: 10 % of requests, at least 1/s over 10 s.
    let service = stack(policy().build().unwrap());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (service, request) = (service.clone(), request(&sim, Api::OpenAiChat, false));
        calls.spawn(async move { call(&service, request).await.1 });
    }
    let stats = calls.join_all().await;
    let upstream_calls = sim.requests().len();
    let denied = stats
        .iter()
        .filter(|s| s.gave_up == Some(GiveUp::BudgetExhausted))
        .count();
    // 100 first attempts may add 10 % (10) plus 10 (1/s × 10 s): at most 20 extra calls.
    assert!(
        upstream_calls <= 120,
        "{upstream_calls} upstream calls for 100 requests"
    );
    assert!(
        upstream_calls >= 110,
        "retries were still allowed within the budget: {upstream_calls}"
    );
    assert!(denied >= 80, "{denied}");
}

#[tokio::test(start_paused = true)]
async fn the_budget_does_not_starve_ordinary_recovery() {
    // 5 % random transient failures, 3 attempts: no denial, success ≈ 1 − p³.
    let sim = Simulator::builder()
        .plan(FaultPlan::random(9).with(0.05, Fault::server_error(503)))
        .record(false)
        .start()
        .await
        .unwrap();
    let service = stack(policy().build().unwrap());
    let (mut failed, mut denied) = (0, 0);
    for _ in 0..2000 {
        let (body, stats) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
        failed += usize::from(body.is_err());
        denied += usize::from(stats.gave_up == Some(GiveUp::BudgetExhausted));
    }
    assert_eq!(denied, 0);
    // p³ × 2000 = 0.25 expected failures.
    assert!(failed <= 2, "{failed}");
}

#[tokio::test(start_paused = true)]
async fn an_in_band_error_before_content_keeps_its_kind_for_the_caller_when_attempts_run_out() {
    let sim = sim(Fault::stream_error_after_with(0, Failure::ServerError(500))).await;
    let (body, stats) = call(
        &stack(policy().build().unwrap()),
        request(&sim, Api::OpenAiChat, true),
    )
    .await;
    let error = body.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ServerError);
    assert_eq!(stats.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_keepalives_alone_is_handed_over_once_the_read_ahead_is_full() {
    let sim = Simulator::builder()
        .keepalive_interval(Duration::from_millis(10))
        .plan(Fault::stream_stall_after(0))
        .start()
        .await
        .unwrap();
    let service = stack(policy().build().unwrap());
    let response = tokio::time::timeout(
        Duration::from_secs(3600),
        service.oneshot(request(&sim, Api::AnthropicMessages, true)),
    )
    .await
    .expect("the guard never let go")
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(RetryStats::of(response.extensions()).attempts, 1);
    // Everything read ahead comes first and in order: the preamble, then pings.
    let mut body = response.into_body();
    let mut text = String::new();
    while text.len() < 64 * 1024 {
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        text.push_str(std::str::from_utf8(&frame).unwrap());
    }
    assert!(text.starts_with("event: message_start"));
    let names: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.lines().next())
        .collect();
    assert_eq!(
        &names[..3],
        [
            "event: message_start",
            "event: content_block_start",
            "event: ping"
        ]
    );
    assert!(
        names[3..names.len() - 1]
            .iter()
            .all(|n| *n == "event: ping"),
        "only pings follow"
    );
}

#[tokio::test(start_paused = true)]
async fn with_random_latencies_no_call_outlives_its_deadline() {
    // Deadline containment: long-tailed latencies (median 1 s, p99
    // 10 s), a third of the calls overloaded, a 6 s deadline and 4 s per
    // attempt: every call ends by its deadline, on the virtual clock.
    let sim = Simulator::builder()
        .seed(11)
        .latency(tower_llm_testkit::Delay::long_tail(
            Duration::from_secs(1),
            Duration::from_secs(10),
        ))
        .plan(FaultPlan::random(12).with(0.33, Fault::overloaded()))
        .record(false)
        .start()
        .await
        .unwrap();
    let deadline = Duration::from_secs(6);
    let service = stack(
        policy()
            .max_attempts(5)
            .deadline(deadline)
            .attempt_timeout(Duration::from_secs(4))
            .build()
            .unwrap(),
    );
    let (mut ok, mut late) = (0, 0);
    for _ in 0..200 {
        let started = Instant::now();
        let (body, _) = call(&service, request(&sim, Api::OpenAiChat, false)).await;
        ok += usize::from(body.is_ok());
        late += usize::from(started.elapsed() > deadline);
    }
    assert_eq!(late, 0);
    assert!(ok > 150, "{ok} of 200 succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_whole_answer_cut_midway_is_retried_and_arrives_whole() {
    // A non-streamed answer whose body stops halfway through its announced
    // length: the guard holds whole JSON answers to their end, so the cut
    // is retried before the caller sees a byte.
    for fault in [
        Fault::stream_drop_after(1),
        Fault::stream_without_terminal(),
    ] {
        let sim = sim(FaultPlan::script([fault.clone()])).await;
        let (body, stats) = call(
            &stack(policy().build().unwrap()),
            request(&sim, Api::OpenAiChat, false),
        )
        .await;
        let body = body.unwrap_or_else(|e| panic!("{fault}: {e}"));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["object"], "chat.completion", "{fault}");
        assert_eq!(stats.attempts, 2, "{fault}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_the_guard_a_whole_answer_cut_midway_reaches_the_caller_as_an_error() {
    let sim = sim(FaultPlan::script([Fault::stream_drop_after(1)])).await;
    let policy = policy().first_content_guard(false).build().unwrap();
    let (body, stats) = call(&stack(policy), request(&sim, Api::OpenAiChat, false)).await;
    assert!(body.is_err(), "the cut reached the caller");
    assert_eq!(stats.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_is_not_json_or_a_stream_is_passed_on_as_it_comes() {
    // Audio, files: not held back, whatever their length.
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("audio/mpeg"));
    let audio = Bytes::from(vec![7u8; 256 * 1024]);
    let sim = sim(FaultPlan::always(Fault::raw(
        StatusCode::OK,
        headers,
        audio.clone(),
    )))
    .await;
    let response = stack(policy().build().unwrap())
        .oneshot(request(&sim, Api::OpenAiChat, false))
        .await
        .unwrap();
    assert!(
        !response.body().has_read_ahead(),
        "nothing was read ahead of the caller"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, audio);
}
