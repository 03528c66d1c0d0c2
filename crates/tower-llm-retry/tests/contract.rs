//! The Tower service contract, pinned with `tower_test::mock`: readiness
//! before every attempt, and nothing left behind by a dropped future.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service};
use tower_llm_classify::hint::{Hint, HintSource};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::{Backoff, ReplayBody, RetryLayer, RetryPolicy, RetryStats};
use tower_test::mock;

type Mock = mock::Mock<Request<ReplayBody>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<ReplayBody>, Response<Full<Bytes>>>;

fn overloaded(hint: Option<Duration>) -> LlmError {
    let hint = hint.map(|delay| Hint {
        delay,
        source: HintSource::RetryAfter,
    });
    LlmError::new(
        Classification::new(ErrorKind::Overloaded)
            .with_phase(Phase::BeforeHeaders)
            .with_hint(hint),
    )
}

fn setup(policy: RetryPolicy) -> (tower_llm_retry::Retry<Mock>, Handle) {
    let (mock, handle) = mock::pair();
    (RetryLayer::new(policy).layer(mock), handle)
}

/// Makes the service ready, calls it, and takes the first attempt's
/// request at the mock: the pending response and the attempt's reply slot.
async fn first_attempt(
    service: &mut tower_llm_retry::Retry<Mock>,
    handle: &mut Handle,
) -> (
    task::Spawn<tower_llm_retry::future::ResponseFuture<Mock, Full<Bytes>, Full<Bytes>>>,
    mock::SendResponse<Response<Full<Bytes>>>,
) {
    let mut ready = task::spawn(std::future::poll_fn(|cx| {
        Service::<Request<Full<Bytes>>>::poll_ready(service, cx)
    }));
    assert_ready_ok!(ready.poll());
    drop(ready);
    let mut response = task::spawn(service.call(request()));
    assert_pending!(response.poll());
    let (first, send) = handle.next_request().await.unwrap();
    assert_eq!(first.uri().path(), "/v1/chat/completions");
    (response, send)
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://provider/v1/chat/completions")
        .body(Full::from(r#"{"model":"m"}"#))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_attempt_waits_for_the_inner_service_to_be_ready() {
    let (mut service, mut handle) = setup(
        RetryPolicy::builder()
            .backoff(Backoff::constant(Duration::from_millis(100)))
            .build()
            .unwrap(),
    );
    handle.allow(1);
    let (mut response, send) = first_attempt(&mut service, &mut handle).await;
    send.send_error(overloaded(None));
    assert_pending!(response.poll());
    tokio::time::advance(Duration::from_millis(100)).await;
    // The wait is over, but the inner service has no capacity: no call yet.
    assert_pending!(response.poll());
    let nothing = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await;
    assert!(nothing.is_err(), "called without readiness");

    handle.allow(1);
    assert!(response.is_woken(), "readiness wakes the waiting future");
    assert_pending!(response.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Full::from("ok")));
    let response = assert_ready_ok!(response.poll());
    assert_eq!(
        response.extensions().get::<RetryStats>().unwrap().attempts,
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_while_waiting_never_calls_again_and_leaves_no_task() {
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let (mut service, mut handle) = setup(RetryPolicy::sdk_default());
    handle.allow(10);
    let (mut response, send) = first_attempt(&mut service, &mut handle).await;
    send.send_error(overloaded(Some(Duration::from_secs(10))));
    assert_pending!(response.poll()); // now sleeping 10–15 s
    drop(response);
    let later = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
    assert!(later.is_err(), "a dropped call made another attempt");
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        alive
    );
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_during_an_attempt_cancels_it() {
    let (mut service, mut handle) = setup(RetryPolicy::sdk_default());
    handle.allow(10);
    let (response, send) = first_attempt(&mut service, &mut handle).await;
    drop(response);
    // The attempt's future was dropped with the call: answering goes nowhere,
    // and no retry follows.
    send.send_error(overloaded(None));
    let later = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
    assert!(later.is_err());
}

#[tokio::test(start_paused = true)]
async fn clones_and_relayered_services_share_one_budget() {
    let layer = RetryLayer::new(
        RetryPolicy::builder()
            .budget(Duration::from_secs(10), 0, 0.5)
            .build()
            .unwrap(),
    );
    let (a, b) = (layer.layer(()), layer.layer(()));
    let budget = a.policy().budget().unwrap();
    assert!(std::sync::Arc::ptr_eq(budget, b.policy().budget().unwrap()));
    assert!(std::sync::Arc::ptr_eq(
        budget,
        a.clone().policy().budget().unwrap()
    ));
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_ends_the_call_without_polling_again() {
    let (mut service, mut handle) = setup(
        RetryPolicy::builder()
            .backoff(Backoff::constant(Duration::from_millis(100)))
            .build()
            .unwrap(),
    );
    handle.allow(1);
    let (mut response, send) = first_attempt(&mut service, &mut handle).await;
    send.send_error(overloaded(None));
    assert_pending!(response.poll());
    tokio::time::advance(Duration::from_millis(100)).await;
    handle.send_error(overloaded(None)); // the next poll_ready fails
    let error = match response.poll() {
        std::task::Poll::Ready(Err(error)) => error,
        other => panic!("{other:?}"),
    };
    let stats = RetryStats::of(error.extensions());
    assert_eq!(
        (stats.attempts, stats.gave_up),
        (1, Some(tower_llm_retry::GiveUp::NotRetryable))
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_also_bounds_waiting_for_readiness() {
    let policy = RetryPolicy::builder()
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut service, mut handle) = setup(policy);
    handle.allow(1);
    let mut ready = task::spawn(std::future::poll_fn(|cx| {
        Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx)
    }));
    assert_ready_ok!(ready.poll());
    drop(ready);
    let started = tokio::time::Instant::now();
    let call = service.call(request());
    let answer = async {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(overloaded(None));
        // ... and the inner service never becomes ready again.
        std::future::pending::<()>().await
    };
    let error = tokio::select! {
        result = call => result.unwrap_err(),
        _ = answer => unreachable!(),
    };
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(
        RetryStats::of(error.extensions()).gave_up,
        Some(tower_llm_retry::GiveUp::Deadline)
    );
}
