//! The adaptive limit with `tower_test::mock`: a call over the limit waits
//! for room and goes when a call (its body, for a stream) ends; it is
//! refused locally, as an overload no retry repeats, when the wait or the
//! queue runs out; shed answers lower the limit; nothing leaks when a
//! caller drops a call midway. Paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt};
use tower_llm_circuit::{
    AdaptiveLimit, AdaptiveLimitConfig, AdaptiveLimitLayer, Circuit, CircuitConfig, CircuitHandle,
    CircuitLayer, LimitSnapshot, WindowKind,
};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::RetryPolicy;
use tower_test::mock;

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

/// A limit of 2 (at least 1, at most 4), two calls may wait 1 s each.
fn config() -> AdaptiveLimitConfig {
    AdaptiveLimitConfig::builder()
        .limits(2, 1, 4)
        .queue(2, Duration::from_secs(1))
        .build()
        .unwrap()
}

fn setup() -> (AdaptiveLimit<Mock>, Handle, CircuitHandle) {
    let layer = AdaptiveLimitLayer::new(config());
    let (mock, handle) = mock::pair();
    (layer.layer(mock), handle, layer.handle())
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::from(r#"{"model":"gpt-4o"}"#))
        .unwrap()
}

fn limit(handle: &CircuitHandle) -> LimitSnapshot {
    handle.snapshot()[0].limit
}

fn empty() -> Response<Full<Bytes>> {
    Response::new(Full::default())
}

fn shed() -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::Overloaded)
            .with_status(http::StatusCode::SERVICE_UNAVAILABLE)
            .with_phase(Phase::BeforeHeaders),
    )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_call_over_the_limit_waits_and_goes_when_a_call_ends() {
    let (mut service, mut handle, keys) = setup();
    handle.allow(10);
    let first = service.ready().await.unwrap().call(request());
    let second = service.ready().await.unwrap().call(request());
    let mut third = task::spawn(service.ready().await.unwrap().call(request()));
    assert_pending!(third.poll());
    let (_, send_first) = handle.next_request().await.unwrap();
    let (_, _send_second) = handle.next_request().await.unwrap();
    assert_eq!(
        (limit(&keys).in_flight, limit(&keys).waiting),
        (2, 1),
        "the third waits, the upstream has not seen it"
    );
    send_first.send_response(empty());
    first.await.unwrap();
    assert!(third.is_woken());
    assert_pending!(third.poll());
    let (_, send_third) = handle.next_request().await.unwrap();
    send_third.send_response(empty());
    assert_ready!(third.poll()).unwrap();
    drop(second);
    assert_eq!(counts(&keys), (2, 0, 0));
}

/// The key's limit, calls in flight and calls waiting.
fn counts(handle: &CircuitHandle) -> (u32, u32, u32) {
    let l = limit(handle);
    (l.limit, l.in_flight, l.waiting)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_keeps_its_room_until_its_body_ends() {
    let (mut service, mut handle, keys) = setup();
    handle.allow(10);
    let first = service.ready().await.unwrap().call(request());
    let _second = service.ready().await.unwrap().call(request());
    let mut third = task::spawn(service.ready().await.unwrap().call(request()));
    let (_, send_first) = handle.next_request().await.unwrap();
    send_first.send_response(Response::new(Full::from("data: {}\n\n")));
    let response = first.await.unwrap();
    // The head is here, the body is not read: the stream is in flight.
    assert_pending!(third.poll());
    assert_eq!(limit(&keys).in_flight, 2);
    response.into_body().collect().await.unwrap();
    assert!(third.is_woken());
    assert_pending!(third.poll());
    assert_eq!((limit(&keys).in_flight, limit(&keys).waiting), (2, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_call_without_room_within_its_wait_is_refused_as_a_local_overload_no_retry_repeats() {
    let (mut service, mut handle, keys) = setup();
    handle.allow(10);
    let _first = service.ready().await.unwrap().call(request());
    let _second = service.ready().await.unwrap().call(request());
    let waiting = service.ready().await.unwrap().call(request());
    let error = waiting.await.unwrap_err();
    assert_eq!(
        (error.kind(), error.classification().phase()),
        (ErrorKind::Overloaded, Phase::Local)
    );
    assert!(!RetryPolicy::sdk_default().is_retryable(error.classification()));
    assert_eq!((limit(&keys).in_flight, limit(&keys).waiting), (2, 0));
    // A full queue refuses at once.
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let mut waiter = task::spawn(service.ready().await.unwrap().call(request()));
        assert_pending!(waiter.poll());
        waiters.push(waiter);
    }
    let refused = service.ready().await.unwrap().call(request()).await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Overloaded);
    assert_eq!(limit(&keys).waiting, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn nothing_leaks_when_callers_drop_calls_waiting_called_or_streaming() {
    let (mut service, mut handle, keys) = setup();
    handle.allow(10);
    let first = service.ready().await.unwrap().call(request());
    let second = service.ready().await.unwrap().call(request());
    let mut waiting = task::spawn(service.ready().await.unwrap().call(request()));
    assert_pending!(waiting.poll());
    assert_eq!(counts(&keys), (2, 2, 1));
    // Dropped while waiting: it leaves the queue.
    drop(waiting);
    assert_eq!(counts(&keys), (2, 2, 0));
    // Dropped while called: its room is freed.
    drop(first);
    assert_eq!(limit(&keys).in_flight, 1);
    // A body dropped before its end frees its room too.
    let (_, _first_sent) = handle.next_request().await.unwrap();
    let (_, send_second) = handle.next_request().await.unwrap();
    send_second.send_response(Response::new(Full::from("data: {}\n\n")));
    let response = second.await.unwrap();
    assert_eq!(limit(&keys).in_flight, 1);
    drop(response);
    // Room handed to a waiter that is dropped before it runs goes back.
    let a = service.ready().await.unwrap().call(request());
    let b = service.ready().await.unwrap().call(request());
    let mut c = task::spawn(service.ready().await.unwrap().call(request()));
    assert_pending!(c.poll());
    drop(a);
    assert_eq!(counts(&keys), (2, 2, 0), "handed to the waiter");
    drop(c);
    drop(b);
    assert_eq!(counts(&keys), (2, 0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shed_answers_lower_the_limit_once_per_window_and_successes_raise_it_again() {
    let (mut service, mut handle, keys) = setup();
    handle.allow(100);
    let limit_of_key = || limit(&keys).limit;
    // Two shed answers of calls admitted together: one decrease.
    let (a, b) = (
        service.ready().await.unwrap().call(request()),
        service.ready().await.unwrap().call(request()),
    );
    for _ in 0..2 {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(shed());
    }
    assert_eq!(a.await.unwrap_err().kind(), ErrorKind::Overloaded);
    assert_eq!(b.await.unwrap_err().kind(), ErrorKind::Overloaded);
    assert_eq!(limit_of_key(), 1);
    // Never below the minimum: one call always goes.
    let call = service.ready().await.unwrap().call(request());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(shed());
    let _ = call.await;
    assert_eq!(limit_of_key(), 1);
    // A call at the limit that ends well raises it by 1/limit.
    let call = service.ready().await.unwrap().call(request());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(empty());
    call.await.unwrap();
    assert_eq!(limit_of_key(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn made_from_a_circuit_layer_it_shares_its_keys_and_the_breaker_never_hears_its_refusals() {
    let circuit = CircuitLayer::new(
        CircuitConfig::builder()
            .window(WindowKind::Count(10))
            .minimum_calls(1)
            .adaptive_limit(
                AdaptiveLimitConfig::builder()
                    .limits(1, 1, 1)
                    .queue(0, Duration::ZERO)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    );
    let (mock, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut service: AdaptiveLimit<Circuit<Mock>> =
        circuit.adaptive_limit().layer(circuit.layer(mock));
    handle.allow(10);
    let held = service.ready().await.unwrap().call(request());
    for _ in 0..5 {
        let refused = service.ready().await.unwrap().call(request()).await;
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::Overloaded);
    }
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(empty());
    held.await.unwrap();
    let key = &circuit.handle().snapshot()[0];
    assert_eq!((key.totals.calls, key.totals.failures), (1, 0), "{key:?}");
    assert_eq!(key.limit.in_flight, 0);
}
