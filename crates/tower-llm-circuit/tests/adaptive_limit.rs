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
    CircuitLayer, CircuitState, LimitSnapshot, WindowKind,
};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::RetryPolicy;
use tower_test::mock;

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

/// A limit of 2 (at least 1, at most 4) on from the start, two calls may
/// wait 1 s each.
fn config() -> AdaptiveLimitConfig {
    AdaptiveLimitConfig::builder()
        .limits(2, 1, 4)
        .off_until_shed(false)
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
async fn a_call_without_room_within_its_wait_is_refused_as_a_local_overload_left_to_a_fallback() {
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
    // Retried after a backoff on a route's last target, left to the
    // fallback where the policy leaves silence.
    assert!(RetryPolicy::sdk_default().is_retryable(error.classification()));
    let moves_on = RetryPolicy::sdk_default()
        .to_builder()
        .retry_on_silence(false)
        .build()
        .unwrap();
    assert!(!moves_on.is_retryable(error.classification()));
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

/// Sends `calls` calls, `at_once` at a time, each answered `answer()`.
async fn answer_calls(
    service: &mut AdaptiveLimit<Mock>,
    handle: &mut Handle,
    calls: usize,
    at_once: usize,
    answer: impl Fn() -> Result<Response<Full<Bytes>>, LlmError>,
) {
    for _ in 0..calls / at_once {
        let mut futures = Vec::new();
        for _ in 0..at_once {
            futures.push(service.ready().await.unwrap().call(request()));
        }
        for _ in 0..at_once {
            let (_, send) = handle.next_request().await.unwrap();
            match answer() {
                Ok(response) => send.send_response(response),
                Err(error) => send.send_error(error),
            }
        }
        for future in futures {
            let _ = future.await;
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shed_answers_lower_the_limit_once_they_are_30_percent_of_a_window_and_successes_raise_it_again()
 {
    let (mut service, mut handle, keys) = setup();
    handle.allow(100);
    // At a limit of 2 a window is 20 answers; 30 % of it is 6 shed.
    answer_calls(&mut service, &mut handle, 4, 2, || Err(shed())).await;
    assert_eq!(limit(&keys).limit, 2, "4 shed answers of 20: not yet");
    answer_calls(&mut service, &mut handle, 2, 2, || Err(shed())).await;
    assert_eq!(limit(&keys).limit, 1);
    // Never below the minimum: one call always goes.
    answer_calls(&mut service, &mut handle, 6, 1, || Err(shed())).await;
    assert_eq!(limit(&keys).limit, 1);
    // A call at the limit that ends well raises it by 1/limit.
    answer_calls(&mut service, &mut handle, 1, 1, || Ok(empty())).await;
    assert_eq!(limit(&keys).limit, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn other_failures_count_in_the_window_and_dilute_the_shed_ones() {
    let (mut service, mut handle, keys) = setup();
    handle.allow(100);
    let server_error = || {
        Err(LlmError::new(
            Classification::new(ErrorKind::ServerError)
                .with_status(http::StatusCode::INTERNAL_SERVER_ERROR)
                .with_phase(Phase::AfterHeaders),
        ))
    };
    // 15 server errors and 5 shed answers: a window of 20 answers, 25 %
    // shed, not 30 %. The sixth shed answer is the first of the next.
    answer_calls(&mut service, &mut handle, 14, 2, server_error).await;
    answer_calls(&mut service, &mut handle, 1, 1, server_error).await;
    answer_calls(&mut service, &mut handle, 4, 2, || Err(shed())).await;
    answer_calls(&mut service, &mut handle, 2, 1, || Err(shed())).await;
    assert_eq!(limit(&keys).limit, 2);
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
                    .off_until_shed(false)
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

/// The limit above a circuit on the same keys: a limit of 4 (at least 1,
/// at most 8) on from the start and no queue (a call over it is refused
/// at once); the breaker opens on 10 failures of 10 calls, for 10 s, and
/// closes on one probe.
fn limit_over_circuit() -> (AdaptiveLimit<Circuit<Mock>>, Handle, CircuitLayer) {
    limit_over_circuit_with(
        AdaptiveLimitConfig::builder()
            .limits(4, 1, 8)
            .off_until_shed(false)
            .queue(0, Duration::ZERO)
            .build()
            .unwrap(),
    )
}

fn limit_over_circuit_with(
    limit: AdaptiveLimitConfig,
) -> (AdaptiveLimit<Circuit<Mock>>, Handle, CircuitLayer) {
    let circuit = CircuitLayer::new(
        CircuitConfig::builder()
            .window(WindowKind::Count(20))
            .minimum_calls(10)
            .failure_rate(100.0)
            .consecutive_failures(None)
            .open_duration(Duration::from_secs(10), 1.0, Duration::from_secs(10))
            .open_jitter(0.0)
            .half_open_probes(1)
            .adaptive_limit(limit)
            .build()
            .unwrap(),
    );
    let (mock, handle) = mock::pair();
    let service = circuit.adaptive_limit().layer(circuit.layer(mock));
    (service, handle, circuit)
}

const KEY: &str = "openai/gpt-4o";

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_open_breakers_refusals_and_the_limits_own_refusals_never_lower_it() {
    let (mut service, mut handle, circuit) = limit_over_circuit();
    let keys = circuit.handle();
    handle.allow(10);
    keys.force_open(KEY);
    for _ in 0..30 {
        let refused = service.ready().await.unwrap().call(request()).await;
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::CircuitOpen);
    }
    assert_eq!(counts(&keys), (4, 0, 0));
    keys.reset(KEY);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(service.ready().await.unwrap().call(request()));
    }
    for _ in 0..30 {
        let refused = service.ready().await.unwrap().call(request()).await;
        let error = refused.unwrap_err();
        assert_eq!(
            (error.kind(), error.classification().phase()),
            (ErrorKind::Overloaded, Phase::Local)
        );
    }
    drop(held);
    assert_eq!(counts(&keys), (4, 0, 0));
}

/// `n` calls, one at a time, each answered with a shed.
async fn shed_one_at_a_time(
    service: &mut AdaptiveLimit<Circuit<Mock>>,
    handle: &mut Handle,
    n: usize,
) {
    for _ in 0..n {
        let call = service.ready().await.unwrap().call(request());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(shed());
        assert_eq!(call.await.unwrap_err().kind(), ErrorKind::Overloaded);
    }
}

/// The open interval (10 s) passes and a probe succeeds.
async fn probe_after_the_open_interval(
    service: &mut AdaptiveLimit<Circuit<Mock>>,
    handle: &mut Handle,
) {
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = service.ready().await.unwrap().call(request());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(empty());
    probe.await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_limit_starts_again_from_its_initial_value_when_the_breaker_closes_after_an_outage() {
    let (mut service, mut handle, circuit) = limit_over_circuit();
    let keys = circuit.handle();
    handle.allow(100);
    // Down: ten shed answers, one at a time. The sixth halves the limit
    // (30 % of a window of 20), the next four are too few for another
    // halving, the tenth opens the breaker.
    shed_one_at_a_time(&mut service, &mut handle, 10).await;
    assert_eq!(keys.state(KEY), Some(CircuitState::Open));
    assert_eq!(limit(&keys).limit, 2);
    // Back: the probe succeeds, the breaker closes, and the limit starts
    // again from 4 rather than growing back from 2 (by 1/2 per success).
    probe_after_the_open_interval(&mut service, &mut handle).await;
    assert_eq!(keys.state(KEY), Some(CircuitState::Closed));
    assert_eq!(counts(&keys), (4, 0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_limit_turns_off_when_the_breaker_closes_after_an_outage() {
    let (mut service, mut handle, circuit) =
        limit_over_circuit_with(AdaptiveLimitConfig::standard());
    let keys = circuit.handle();
    handle.allow(100);
    // Down: ten shed answers, one at a time. The sixth turns the limit on
    // (30 % of a window of 20) at the minimum (half of the one call in
    // flight), the tenth opens the breaker.
    shed_one_at_a_time(&mut service, &mut handle, 10).await;
    assert_eq!(keys.state(KEY), Some(CircuitState::Open));
    assert!(limit(&keys).enabled);
    assert_eq!(limit(&keys).limit, 1);
    probe_after_the_open_interval(&mut service, &mut handle).await;
    assert_eq!(keys.state(KEY), Some(CircuitState::Closed));
    assert!(!limit(&keys).enabled);
}

/// The standard limit (off until shed) on keys of its own.
fn standard() -> (AdaptiveLimit<Mock>, Handle, CircuitHandle) {
    let layer = AdaptiveLimitLayer::new(AdaptiveLimitConfig::standard());
    let (mock, handle) = mock::pair();
    (layer.layer(mock), handle, layer.handle())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_healthy_key_with_500_calls_at_once_never_queues_one() {
    let (mut service, mut handle, keys) = standard();
    handle.allow(1000);
    let mut calls = Vec::new();
    for _ in 0..500 {
        calls.push(service.ready().await.unwrap().call(request()));
    }
    let mut answers = Vec::new();
    for _ in 0..500 {
        answers.push(handle.next_request().await.unwrap().1);
    }
    let l = limit(&keys);
    assert_eq!((l.enabled, l.in_flight, l.waiting), (false, 500, 0));
    for send in answers {
        send.send_response(empty());
    }
    for call in calls {
        call.await.unwrap();
    }
    assert!(!limit(&keys).enabled);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn streams_stalled_for_minutes_never_make_a_call_wait_while_nothing_is_shed() {
    let (mut service, mut handle, keys) = standard();
    handle.allow(1000);
    // 40 streams whose bodies never end (nobody reads them): twice the
    // limit the layer once started every key at.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let call = service.ready().await.unwrap().call(request());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(Full::from("data: {}\n\n")));
        stalled.push(call.await.unwrap());
    }
    tokio::time::advance(Duration::from_secs(300)).await;
    // Every new call reaches the upstream at once, and ends well.
    for _ in 0..100 {
        let call = service.ready().await.unwrap().call(request());
        let (_, send) = handle.next_request().await.unwrap();
        assert_eq!(limit(&keys).waiting, 0);
        send.send_response(empty());
        call.await.unwrap();
    }
    let l = limit(&keys);
    assert_eq!((l.enabled, l.in_flight), (false, 40));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sustained_shed_share_turns_the_limit_on_at_half_of_what_was_in_flight_and_a_quiet_period_turns_it_off()
 {
    let (mut service, mut handle, keys) = standard();
    handle.allow(10_000);
    // 10 callers, each calling again when answered; two of every five
    // answers shed. While off, a window is 20 answers (twice the 10 in
    // flight, at least 20), 30 % of it 6 shed: the 6th shed answer (the
    // 12th answer) turns the limit on at half of the 10 in flight.
    let mut calls = std::collections::VecDeque::new();
    let mut sends = std::collections::VecDeque::new();
    for _ in 0..10 {
        calls.push_back(task::spawn(service.ready().await.unwrap().call(request())));
        sends.push_back(handle.next_request().await.unwrap().1);
    }
    for n in 0..12 {
        let send = sends.pop_front().unwrap();
        if n % 5 < 2 {
            send.send_error(shed());
        } else {
            send.send_response(empty());
        }
        let _ = calls.pop_front().unwrap().await;
        let mut call = task::spawn(service.ready().await.unwrap().call(request()));
        assert_pending!(call.poll());
        if n < 11 {
            sends.push_back(handle.next_request().await.unwrap().1);
        }
        calls.push_back(call);
    }
    let l = limit(&keys);
    assert_eq!((l.enabled, l.limit), (true, 5));
    // The caller of the 12th answer waits: 9 calls still run.
    assert_eq!((l.in_flight, l.waiting), (9, 1));
    // The overload ends: the running calls end well, and the waiting one
    // goes once fewer than 5 run.
    for send in sends {
        send.send_response(empty());
    }
    let mut waiting = calls.pop_back().unwrap();
    for call in calls {
        call.await.unwrap();
    }
    assert!(waiting.is_woken());
    assert_pending!(waiting.poll());
    handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_response(empty());
    waiting.await.unwrap();
    assert!(limit(&keys).enabled);
    // A quiet period later, the first call over the limit finds it off,
    // and every call goes at once.
    tokio::time::advance(AdaptiveLimitConfig::standard().quiet_period()).await;
    let mut more = Vec::new();
    for _ in 0..10 {
        more.push(service.ready().await.unwrap().call(request()));
        handle.next_request().await.unwrap();
    }
    let l = limit(&keys);
    assert_eq!((l.enabled, l.in_flight, l.waiting), (false, 10, 0));
}
