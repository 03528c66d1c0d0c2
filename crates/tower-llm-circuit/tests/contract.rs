//! The Tower service contract, with `tower_test::mock`: readiness passes
//! through, a pending readiness wakes the caller, an open circuit does not
//! call the inner service, a dropped call releases its probe permit, and a
//! call the layer above ended (its `AttemptEnd` set) counts as a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, Service};
use tower_llm_circuit::{Circuit, CircuitConfig, CircuitLayer, CircuitState, WindowKind};
use tower_llm_classify::{AttemptEnd, Classification, EndReason, ErrorKind, LlmError, Phase};
use tower_test::mock;

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

const KEY: &str = "openai/gpt-4o";

fn setup() -> (Circuit<Mock>, Handle, CircuitLayer) {
    let layer = CircuitLayer::new(
        CircuitConfig::builder()
            .window(WindowKind::Count(10))
            .consecutive_failures(Some(2))
            .open_duration(Duration::from_secs(10), 2.0, Duration::from_secs(60))
            .open_jitter(0.0)
            .half_open_probes(1)
            .build()
            .unwrap(),
    );
    let (mock, handle) = mock::pair();
    (layer.layer(mock), handle, layer)
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::from(r#"{"model":"gpt-4o"}"#))
        .unwrap()
}

fn overloaded() -> LlmError {
    LlmError::new(Classification::new(ErrorKind::Overloaded).with_phase(Phase::BeforeHeaders))
}

async fn ready(service: &mut Circuit<Mock>) {
    std::future::poll_fn(|cx| Service::<Request<Full<Bytes>>>::poll_ready(service, cx))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn readiness_passes_through_and_a_pending_one_wakes_the_caller() {
    let (mut service, mut handle, _) = setup();
    handle.allow(0);
    let mut readiness = task::spawn(std::future::poll_fn(|cx| {
        Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx)
    }));
    assert_pending!(readiness.poll());
    handle.allow(1);
    assert!(readiness.is_woken());
    assert_ready_ok!(readiness.poll());
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_never_calls_the_inner_service() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(10);
    for _ in 0..2 {
        ready(&mut service).await;
        let call = service.call(request());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(overloaded());
        assert_eq!(call.await.unwrap_err().kind(), ErrorKind::Overloaded);
    }
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::Open));
    ready(&mut service).await;
    let mut rejected = task::spawn(service.call(request()));
    let error = match assert_ready!(rejected.poll()) {
        Err(error) => error,
        Ok(_) => panic!("an open circuit let a call through"),
    };
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    let nothing = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await;
    assert!(nothing.is_err(), "the inner service was called");
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_before_its_answer_releases_its_permit() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(10);
    layer.handle().force_open(KEY);
    layer.handle().force_closed(KEY);
    // Trip, wait out the interval, start the one probe, drop it.
    for _ in 0..2 {
        ready(&mut service).await;
        let call = service.call(request());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(overloaded());
        let _ = call.await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    ready(&mut service).await;
    let probe = service.call(request());
    let (_, _send) = handle.next_request().await.unwrap();
    drop(probe);
    // The permit is back: the next caller is the probe, and it succeeds.
    ready(&mut service).await;
    let call = service.call(request());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Full::from("ok")));
    let response = call.await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_before_its_end_is_not_counted() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(1);
    ready(&mut service).await;
    let call = service.call(request());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Full::from("partial")));
    let response = call.await.unwrap();
    drop(response);
    assert_eq!(layer.handle().snapshot()[0].totals.calls, 0);
}

/// A request carrying an [`AttemptEnd`], as the retry layer sends it.
fn request_ended_by(end: &AttemptEnd) -> Request<Full<Bytes>> {
    let mut request = request();
    request.extensions_mut().insert(end.clone());
    request
}

#[tokio::test(start_paused = true)]
async fn a_call_the_layer_above_ends_counts_as_the_failure_it_names() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(10);
    let reasons = [
        EndReason::AttemptTimeout,
        EndReason::Failed(ErrorKind::Overloaded),
    ];
    for reason in reasons {
        ready(&mut service).await;
        let end = AttemptEnd::new();
        let call = service.call(request_ended_by(&end));
        let (_, _send) = handle.next_request().await.unwrap();
        end.end(reason);
        drop(call);
    }
    let key = &layer.handle().snapshot()[0];
    assert_eq!(
        (key.state, key.totals.failures),
        (CircuitState::Open, 2),
        "{key:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_the_layer_above_ends_before_its_end_counts_as_its_failure() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(1);
    ready(&mut service).await;
    let end = AttemptEnd::new();
    let mut request = request_ended_by(&end);
    *request.body_mut() = Full::from(r#"{"model":"gpt-4o","stream":true}"#);
    let call = service.call(request);
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Full::from("held back")));
    let response = call.await.unwrap();
    end.end(EndReason::Deadline);
    drop(response);
    assert_eq!(layer.handle().snapshot()[0].totals.failures, 1);
}

/// A whole answer whose head came is the target answering: cut by the
/// caller's time limit while its body is read, it says how long the answer
/// is (`max_tokens`), not how healthy the target is, and a caller must not
/// open the breaker for everyone with long requests.
#[tokio::test(start_paused = true)]
async fn a_whole_answer_cut_by_a_time_limit_after_its_head_is_not_counted() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(2);
    for reason in [EndReason::Deadline, EndReason::AttemptTimeout] {
        ready(&mut service).await;
        let end = AttemptEnd::new();
        let call = service.call(request_ended_by(&end));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(Full::from("held back")));
        let response = call.await.unwrap();
        end.end(reason);
        drop(response);
    }
    let key = &layer.handle().snapshot()[0];
    assert_eq!(key.totals.failures, 0, "{key:?}");
    assert_eq!(key.state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_with_its_end_unset_is_the_callers_and_not_counted() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(1);
    ready(&mut service).await;
    let end = AttemptEnd::new();
    let call = service.call(request_ended_by(&end));
    let (_, _send) = handle.next_request().await.unwrap();
    drop(call);
    assert_eq!(layer.handle().snapshot()[0].totals.calls, 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_the_layer_above_ends_concludes_and_reopens() {
    let (mut service, mut handle, layer) = setup();
    handle.allow(10);
    for _ in 0..2 {
        ready(&mut service).await;
        let call = service.call(request());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(overloaded());
        let _ = call.await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    ready(&mut service).await;
    let end = AttemptEnd::new();
    let probe = service.call(request_ended_by(&end));
    let (_, _send) = handle.next_request().await.unwrap();
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::HalfOpen));
    end.end(EndReason::AttemptTimeout);
    drop(probe);
    let key = &layer.handle().snapshot()[0];
    assert_eq!(key.state, CircuitState::Open);
    // Re-opened for longer: 10 s × 2.
    assert_eq!(key.open_remaining, Some(Duration::from_secs(20)));
}
