//! A call the breaker refuses before it leaves the process (its key
//! cooling down after a 429, or paced out ahead of its rate limit) never
//! reached the upstream: the retry above waits out the refusal's hint and
//! sends the call, taking nothing from its retry budget, even an empty one.
//! (Before, both refusals said they failed before the answer's head, as if
//! the upstream had seen them: each drew on the budget, and once it was
//! empty every waiting call ended at once with `BudgetExhausted`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};
use tower_llm::circuit::{CircuitConfig, CircuitLayer, PaceLimits, PacingConfig};
use tower_llm::retry::{ReplayBody, RetryBudget, RetryLayer, RetryPolicy, RetryStats};
use tower_llm::{LlmError, Phase};

const KEY: &str = "openai/gpt-4o";

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::from(r#"{"model":"gpt-4o","messages":[]}"#))
        .unwrap()
}

/// An upstream's answer, at once.
type Answer = std::future::Ready<Result<Response<Full<Bytes>>, LlmError>>;

/// An upstream that answers every call 200 and counts them.
fn upstream(
    calls: &Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<ReplayBody>,
    Response = Response<Full<Bytes>>,
    Error = LlmError,
    Future = Answer,
> + Clone {
    let calls = Arc::clone(calls);
    service_fn(move |_: Request<ReplayBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(Full::from(r#"{"choices":[]}"#))))
    })
}

/// A retry whose budget holds nothing, ever: a retry it is asked for ends
/// the call. Hints up to two minutes are waited out (a paced call waits
/// for its minute's first call to leave it: 61 s).
fn retry() -> RetryLayer {
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 0, 0.0).unwrap());
    RetryLayer::new(
        RetryPolicy::builder()
            .seed(1)
            .max_hint(Duration::from_secs(120))
            .shared_budget(budget)
            .build()
            .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_call_refused_by_a_cooldown_waits_it_out_without_the_retry_budget() {
    let calls = Arc::new(AtomicUsize::new(0));
    let circuit = CircuitLayer::new(CircuitConfig::standard());
    let handle = circuit.handle();
    let service = retry().layer(circuit.layer(upstream(&calls)));
    let started = tokio::time::Instant::now();
    assert!(handle.apply_cooldown_until(KEY, started + Duration::from_secs(1)));

    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one call reached the upstream"
    );
    response.into_body().collect().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_call_paced_out_waits_for_room_without_the_retry_budget() {
    let calls = Arc::new(AtomicUsize::new(0));
    let pacing = PacingConfig::default().limit(KEY, PaceLimits::rpm(1));
    let config = CircuitConfig::builder().pacing(pacing).build().unwrap();
    let circuit = CircuitLayer::new(config);
    let service = retry().layer(circuit.layer(upstream(&calls)));

    // The minute's one call.
    let first = service.clone().oneshot(request()).await.unwrap();
    first.into_body().collect().await.unwrap();
    // The next is paced out until the first leaves the minute, then sent.
    let started = tokio::time::Instant::now();
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
    assert!(started.elapsed() >= Duration::from_secs(59));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_breakers_own_refusals_say_they_never_left_the_process() {
    let calls = Arc::new(AtomicUsize::new(0));
    let circuit = CircuitLayer::new(CircuitConfig::standard());
    let handle = circuit.handle();
    let service = circuit.layer(upstream(&calls));
    let now = tokio::time::Instant::now();
    assert!(handle.apply_cooldown_until(KEY, now + Duration::from_secs(5)));
    let request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(ReplayBody::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[]}"#,
        )))
        .unwrap();
    let error = service.oneshot(request).await.unwrap_err();
    assert_eq!(error.classification().phase(), Phase::Local);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
