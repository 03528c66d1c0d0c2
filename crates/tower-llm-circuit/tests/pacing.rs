//! Pacing with `tower_test::mock`: a call its key's rate-limit headers
//! (or configured limits) say will be refused never reaches the inner
//! service, and is answered at once with the wait until the reset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio_test::{assert_pending, task};
use tower::{Layer, Service};
use tower_llm_circuit::{Circuit, CircuitConfig, CircuitLayer, PaceLimits, PacingConfig};
use tower_llm_classify::ErrorKind;
use tower_test::mock;

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

const KEY: &str = "openai/gpt-4o";

fn setup(pacing: PacingConfig) -> (Circuit<Mock>, Handle, CircuitLayer) {
    let layer = CircuitLayer::new(CircuitConfig::builder().pacing(pacing).build().unwrap());
    let (mock, mut handle) = mock::pair();
    handle.allow(1000);
    (layer.layer(mock), handle, layer)
}

fn request(body: &'static str) -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::from(body))
        .unwrap()
}

fn small() -> Request<Full<Bytes>> {
    request(r#"{"model":"gpt-4o"}"#)
}

fn answer(headers: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let mut response = Response::builder();
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(Full::new(Bytes::new())).unwrap()
}

async fn ready(service: &mut Circuit<Mock>) {
    std::future::poll_fn(|cx| Service::<Request<Full<Bytes>>>::poll_ready(service, cx))
        .await
        .unwrap();
}

/// One call, answered with `headers`.
async fn call_answered(service: &mut Circuit<Mock>, handle: &mut Handle, headers: &[(&str, &str)]) {
    ready(service).await;
    let call = service.call(small());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(answer(headers));
    call.await.unwrap();
}

/// Whether the inner service has a request waiting.
fn nothing_sent(handle: &mut Handle) {
    let mut next = task::spawn(handle.next_request());
    assert_pending!(next.poll());
}

#[tokio::test(start_paused = true)]
async fn a_key_sends_nothing_after_its_headers_said_none_left_until_the_reset() {
    // Held until the reset (the default refills evenly until then).
    let (mut service, mut handle, layer) = setup(PacingConfig::default().continuous_refill(false));
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20s"),
        ],
    )
    .await;
    for _ in 0..50 {
        ready(&mut service).await;
        let error = service.call(small()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RateLimited);
    }
    nothing_sent(&mut handle);
    assert_eq!(layer.handle().paced_for(KEY), Some(Duration::from_secs(20)));

    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(layer.handle().paced_for(KEY), None);
    call_answered(&mut service, &mut handle, &[]).await;
}

#[tokio::test(start_paused = true)]
async fn by_default_a_key_that_ran_out_is_called_again_once_its_bucket_has_room_for_one() {
    let (mut service, mut handle, layer) = setup(PacingConfig::default());
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20s"),
        ],
    )
    .await;
    ready(&mut service).await;
    let error = service.call(small()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    nothing_sent(&mut handle);
    // 500 come back over 20 s: one every 40 ms, not all at the reset.
    let wait = layer.handle().paced_for(KEY).unwrap();
    assert!(wait <= Duration::from_millis(40), "{wait:?}");
    tokio::time::advance(Duration::from_millis(40)).await;
    assert_eq!(layer.handle().paced_for(KEY), None);
    call_answered(&mut service, &mut handle, &[]).await;
}

#[tokio::test(start_paused = true)]
async fn the_refusal_carries_the_wait_until_the_reset_and_may_be_retried() {
    let (mut service, mut handle, _) = setup(PacingConfig::default());
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ],
    )
    .await;
    tokio::time::advance(Duration::from_secs(60)).await;
    ready(&mut service).await;
    let error = service.call(small()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert!(error.retryable());
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(300))
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_with_more_left_than_in_flight_lets_calls_through() {
    let (mut service, mut handle, layer) = setup(PacingConfig::default());
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-remaining-requests", "2"),
            ("x-ratelimit-reset-requests", "30s"),
        ],
    )
    .await;
    // Two left: two calls go out and wait for their answers…
    ready(&mut service).await;
    let first = service.call(small());
    ready(&mut service).await;
    let second = service.call(small());
    let (_, send_first) = handle.next_request().await.unwrap();
    let (_, send_second) = handle.next_request().await.unwrap();
    // …and a third, with both in flight, would be refused.
    ready(&mut service).await;
    let third = service.call(small()).await.unwrap_err();
    assert_eq!(third.kind(), ErrorKind::RateLimited);
    assert_eq!(layer.handle().pacing(KEY).unwrap().in_flight, 2);

    // An answer saying 5 are left, with one call still in flight: 4 more.
    send_first.send_response(answer(&[
        ("x-ratelimit-remaining-requests", "5"),
        ("x-ratelimit-reset-requests", "30s"),
    ]));
    first.await.unwrap();
    for _ in 0..4 {
        ready(&mut service).await;
        drop(service.call(small()));
        handle.next_request().await.unwrap();
    }
    send_second.send_response(answer(&[]));
    second.await.unwrap();
    let snapshot = layer.handle().pacing(KEY).unwrap();
    assert_eq!(snapshot.requests.map(|(left, _)| left), Some(5));
    assert_eq!(snapshot.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_hands_its_reservation_back() {
    let (mut service, mut handle, _) = setup(PacingConfig::default());
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-remaining-requests", "1"),
            ("x-ratelimit-reset-requests", "30s"),
        ],
    )
    .await;
    ready(&mut service).await;
    let call = service.call(small());
    handle.next_request().await.unwrap();
    drop(call);
    call_answered(&mut service, &mut handle, &[]).await;
}

#[tokio::test(start_paused = true)]
async fn configured_rpm_paces_a_key_that_sends_no_headers() {
    let (mut service, mut handle, _) =
        setup(PacingConfig::default().limit("openai", PaceLimits::rpm(2)));
    call_answered(&mut service, &mut handle, &[]).await;
    tokio::time::advance(Duration::from_secs(15)).await;
    call_answered(&mut service, &mut handle, &[]).await;
    ready(&mut service).await;
    let error = service.call(small()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    // The first call leaves the minute at the end of its second: 61 s.
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(46))
    );
    nothing_sent(&mut handle);
    tokio::time::advance(Duration::from_secs(46)).await;
    call_answered(&mut service, &mut handle, &[]).await;
}

#[tokio::test(start_paused = true)]
async fn tokens_estimated_from_the_body_and_max_tokens_must_fit_what_is_left() {
    let (mut service, mut handle, _) = setup(PacingConfig::default());
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-remaining-tokens", "150"),
            ("x-ratelimit-reset-tokens", "10s"),
        ],
    )
    .await;
    // 48 bytes (12 tokens) plus 100 asked for: one fits, two do not.
    let asking = || request(r#"{"model":"gpt-4o","max_tokens":100,"messages":[]}"#);
    ready(&mut service).await;
    let first = service.call(asking());
    handle.next_request().await.unwrap();
    ready(&mut service).await;
    let error = service.call(asking()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    // A small one still fits beside it.
    ready(&mut service).await;
    drop(service.call(small()));
    handle.next_request().await.unwrap();
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn malformed_rate_limit_headers_are_ignored() {
    let (mut service, mut handle, layer) = setup(PacingConfig::default());
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-remaining-requests", "none"),
            ("x-ratelimit-reset-requests", "20s"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "tomorrow"),
            ("ratelimit", "\"default\";r=-1;t=30"),
        ],
    )
    .await;
    assert!(layer.handle().pacing(KEY).is_none());
    for _ in 0..3 {
        call_answered(&mut service, &mut handle, &[]).await;
    }
}

/// `at` as Anthropic's reset headers write it (RFC 3339, whole seconds).
fn rfc3339(at: SystemTime) -> String {
    tower_llm_classify::hint::format_rfc3339(at, 0)
}

#[tokio::test(start_paused = true)]
async fn anthropic_headers_pace_the_key_as_openai_ones_do() {
    let (mut service, mut handle, layer) = setup(PacingConfig::default());
    let reset = rfc3339(SystemTime::now() + Duration::from_secs(31));
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", &reset),
        ],
    )
    .await;
    ready(&mut service).await;
    let error = service.call(small()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    let wait = error.classification().retry_after().unwrap();
    // The reset instant, in whole seconds, less the real time since.
    assert!(
        !wait.is_zero() && wait <= Duration::from_secs(31),
        "{wait:?}"
    );
    nothing_sent(&mut handle);
    tokio::time::advance(wait).await;
    assert_eq!(layer.handle().paced_for(KEY), None);
    call_answered(&mut service, &mut handle, &[]).await;
}

#[tokio::test(start_paused = true)]
async fn pacing_off_reads_no_headers() {
    let (mut service, mut handle, layer) = setup(PacingConfig::off());
    call_answered(
        &mut service,
        &mut handle,
        &[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20s"),
        ],
    )
    .await;
    assert!(layer.handle().pacing(KEY).is_none());
    call_answered(&mut service, &mut handle, &[]).await;
}

#[tokio::test(start_paused = true)]
async fn a_view_shared_by_another_replica_paces_calls_here_and_never_loosens_it() {
    let (mut replica_a, mut handle_a, layer_a) = setup(PacingConfig::default());
    let (mut replica_b, mut handle_b, layer_b) = setup(PacingConfig::default());
    call_answered(
        &mut replica_a,
        &mut handle_a,
        &[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20s"),
        ],
    )
    .await;
    let shared = layer_a.handle().shared_pacing();
    assert_eq!(shared.len(), 1);
    assert!(layer_b.handle().apply_pacing(&shared[0]));
    ready(&mut replica_b).await;
    let error = replica_b.call(small()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(20))
    );
    nothing_sent(&mut handle_b);
    // B's own answer said more is left for longer: A's tighter view stays.
    let (mut replica_c, mut handle_c, layer_c) = setup(PacingConfig::default());
    call_answered(
        &mut replica_c,
        &mut handle_c,
        &[
            ("x-ratelimit-remaining-requests", "50"),
            ("x-ratelimit-reset-requests", "30s"),
        ],
    )
    .await;
    assert!(layer_c.handle().apply_pacing(&shared[0]));
    assert!(!layer_c.handle().apply_pacing(&shared[0]));
    assert_eq!(
        layer_c.handle().paced_for(KEY),
        Some(Duration::from_secs(30))
    );
}
