//! Every duration setting of the circuit (and a hinted wait) at
//! `Duration::MAX`: refused by `build()` with a typed error, or the path it
//! governs runs without a panic — a breaker opened for `Duration::MAX`, a
//! cooldown of `Duration::MAX`, probes with no deadline. Paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio_test::{assert_pending, task};
use tower::{Layer, ServiceExt};
use tower_llm_circuit::{
    CircuitConfig, CircuitConfigBuilder, CircuitLayer, CircuitSettings, CircuitState, KeyBy,
    KeySnapshot, WindowKind,
};
use tower_llm_classify::hint::{Hint, HintSource, MAX_HINT};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};

const MAX: Duration = Duration::MAX;

/// What the upstream does with the next call.
#[derive(Clone, Copy, Debug, Default)]
enum Answer {
    #[default]
    Ok,
    Stream,
    Fail(ErrorKind, Option<Duration>),
    Never,
}

type Plan = Arc<Mutex<Answer>>;

fn upstream(
    plan: &Plan,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = LlmError,
    Future = impl Send,
> + Clone {
    let plan = Arc::clone(plan);
    tower::service_fn(move |_: Request<Full<Bytes>>| {
        let answer = *plan.lock().unwrap();
        async move {
            match answer {
                Answer::Ok => Ok(Response::new(Full::from("ok"))),
                Answer::Stream => Ok(Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Full::from(
                        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
                    ))
                    .unwrap()),
                Answer::Fail(kind, hint) => Err(LlmError::new(
                    Classification::new(kind)
                        .with_phase(Phase::BeforeHeaders)
                        .with_hint(hint.map(|delay| Hint {
                            delay,
                            source: HintSource::RetryAfter,
                        })),
                )),
                Answer::Never => std::future::pending().await,
            }
        }
    })
}

fn config() -> CircuitConfigBuilder {
    CircuitConfig::builder()
        .window(WindowKind::Count(10))
        .minimum_calls(10)
        .consecutive_failures(Some(2))
        .open_duration(Duration::from_secs(1), 2.0, Duration::from_secs(60))
        .open_jitter(0.0)
        .half_open_probes(1)
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::from(r#"{"model":"gpt-4o"}"#))
        .unwrap()
}

/// One call, body read to the end: `Ok` or the failure.
async fn call(layer: &CircuitLayer, plan: &Plan, answer: Answer) -> Result<(), LlmError> {
    *plan.lock().unwrap() = answer;
    let response = layer.layer(upstream(plan)).oneshot(request()).await?;
    match response.into_body().collect().await {
        Ok(_) => Ok(()),
        Err(never) => match never {},
    }
}

fn only_key(layer: &CircuitLayer) -> KeySnapshot {
    let snapshot = layer.handle().snapshot();
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    snapshot[0].clone()
}

async fn trip(layer: &CircuitLayer, plan: &Plan) {
    for _ in 0..2 {
        let _ = call(layer, plan, Answer::Fail(ErrorKind::Overloaded, None)).await;
    }
    assert_eq!(only_key(layer).state, CircuitState::Open);
}

/// The next call fails at once as circuit open, with a hint no longer than
/// classify's ceiling.
async fn assert_open(layer: &CircuitLayer, plan: &Plan) {
    let error = call(layer, plan, Answer::Ok).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CircuitOpen, "{error}");
    assert!(
        error
            .classification()
            .retry_after()
            .is_some_and(|wait| wait <= MAX_HINT)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_open_duration_of_duration_max_keeps_the_breaker_open() {
    let plan = Plan::default();
    let layer = CircuitLayer::new(config().open_duration(MAX, 2.0, MAX).build().unwrap());
    trip(&layer, &plan).await;
    assert_open(&layer, &plan).await;
    assert!(only_key(&layer).open_remaining.is_some());
    tokio::time::advance(Duration::from_secs(100 * 365 * 24 * 3600)).await;
    assert_open(&layer, &plan).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_maximum_open_duration_of_duration_max_caps_the_growth() {
    let plan = Plan::default();
    // Grows by 1e300 per re-open: the second interval is the cap.
    let layer = CircuitLayer::new(
        config()
            .open_duration(Duration::from_secs(1), 1e300, MAX)
            .build()
            .unwrap(),
    );
    trip(&layer, &plan).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = call(&layer, &plan, Answer::Fail(ErrorKind::Overloaded, None)).await;
    assert_eq!(probe.unwrap_err().kind(), ErrorKind::Overloaded);
    assert_eq!(only_key(&layer).state, CircuitState::Open);
    tokio::time::advance(Duration::from_secs(100 * 365 * 24 * 3600)).await;
    assert_open(&layer, &plan).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_half_open_deadline_of_duration_max_waits_for_its_probe() {
    let plan = Plan::default();
    let layer = CircuitLayer::new(config().half_open_deadline(MAX).build().unwrap());
    trip(&layer, &plan).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    *plan.lock().unwrap() = Answer::Never;
    let mut probe = task::spawn(layer.layer(upstream(&plan)).oneshot(request()));
    assert_pending!(probe.poll());
    assert_eq!(only_key(&layer).state, CircuitState::HalfOpen);
    // Every other caller is told the (unbounded) wait for the next probe.
    tokio::time::advance(Duration::from_secs(100 * 365 * 24 * 3600)).await;
    assert_open(&layer, &plan).await;
    // The probe's caller goes away: its permit comes back.
    drop(probe);
    assert_eq!(call(&layer, &plan, Answer::Ok).await.ok(), Some(()));
    assert_eq!(only_key(&layer).state, CircuitState::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slow_call_limits_of_duration_max_never_call_a_call_slow() {
    let plan = Plan::default();
    let layer = CircuitLayer::new(
        config()
            .slow_calls(MAX, 50.0)
            .slow_first_content(MAX)
            .build()
            .unwrap(),
    );
    for answer in [Answer::Ok, Answer::Stream] {
        for _ in 0..3 {
            call(&layer, &plan, answer).await.unwrap();
        }
    }
    let key = only_key(&layer);
    assert_eq!(
        (key.state, key.totals.calls, key.totals.slow),
        (CircuitState::Closed, 6, 0)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_quota_cooldown_of_duration_max_fails_fast_with_a_bounded_hint() {
    let plan = Plan::default();
    let layer = CircuitLayer::new(config().quota_cooldown(MAX).build().unwrap());
    let quota = call(&layer, &plan, Answer::Fail(ErrorKind::QuotaExhausted, None)).await;
    assert_eq!(quota.unwrap_err().kind(), ErrorKind::QuotaExhausted);
    tokio::time::advance(Duration::from_secs(100 * 365 * 24 * 3600)).await;
    let error = call(&layer, &plan, Answer::Ok).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(error.classification().retry_after(), Some(MAX_HINT));
    assert!(only_key(&layer).cooldown_remaining.is_some());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rate_limit_hinting_duration_max_cools_down_for_the_quota_cooldown_without_overflow() {
    let plan = Plan::default();
    let layer = CircuitLayer::new(config().build().unwrap());
    let limited = call(
        &layer,
        &plan,
        Answer::Fail(ErrorKind::RateLimited, Some(MAX)),
    )
    .await;
    assert_eq!(limited.unwrap_err().kind(), ErrorKind::RateLimited);
    let error = call(&layer, &plan, Answer::Ok).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    // Capped at the quota cooldown (1 h by default).
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(3600))
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_idle_eviction_of_duration_max_still_makes_room_for_new_keys() {
    let plan = Plan::default();
    let layer = CircuitLayer::new(config().idle_eviction(MAX).max_keys(1).build().unwrap())
        .key_by(KeyBy::Host);
    for i in 0..40 {
        let request = Request::post(format!("http://host-{i}/v1/chat/completions"))
            .body(Full::from(r#"{"model":"gpt-4o"}"#))
            .unwrap();
        *plan.lock().unwrap() = Answer::Ok;
        let response = layer.layer(upstream(&plan)).oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    // One per shard at most (16 shards).
    assert!(layer.handle().keys() <= 16, "{}", layer.handle().keys());
}

#[test]
fn a_time_window_beyond_an_hour_is_refused_by_build() {
    let error = config()
        .window(WindowKind::Time(u32::MAX))
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("window"), "{error}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn settings_of_u64_max_milliseconds_build_and_serve() {
    let mut settings = CircuitSettings::default();
    settings.slow_call_ms = Some(u64::MAX);
    settings.open_ms = Some(u64::MAX);
    settings.max_open_ms = Some(u64::MAX);
    settings.quota_cooldown_ms = Some(u64::MAX);
    settings.half_open_deadline_ms = Some(u64::MAX);
    settings.slow_first_content_ms = Some(u64::MAX);
    settings.idle_eviction_ms = Some(u64::MAX);
    settings.consecutive_failures = Some(2);
    let plan = Plan::default();
    let layer = CircuitLayer::new(settings.build().unwrap());
    call(&layer, &plan, Answer::Stream).await.unwrap();
    trip(&layer, &plan).await;
    tokio::time::advance(Duration::from_secs(100 * 365 * 24 * 3600)).await;
    assert_open(&layer, &plan).await;
}
