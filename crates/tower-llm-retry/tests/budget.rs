//! How the retry layer draws on its budget, pinned with `tower_test::mock`
//! on the paused clock: a retry is withdrawn when it is sent (a wait holds
//! nothing), a retry that succeeds is given back (the AWS SDKs' retry
//! quota), a retry that fails or is cancelled in flight stays spent, a
//! budget emptied during the wait ends the call when the wait is over, and
//! a call a layer below refused before it left the process (so the
//! upstream never saw it) costs its retry nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service};
use tower_llm_classify::hint::{Hint, HintSource};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::{
    GiveUp, ReplayBody, Retry, RetryBudget, RetryLayer, RetryPolicy, RetryPolicyBuilder,
    RetryStats, future::ResponseFuture,
};
use tower_test::mock;

type Mock = mock::Mock<Request<ReplayBody>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<ReplayBody>, Response<Full<Bytes>>>;
type Call = task::Spawn<ResponseFuture<Mock, Full<Bytes>, Full<Bytes>>>;

/// Overloaded, come back in 2 s, failed in `phase`.
fn overloaded_in(phase: Phase) -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::Overloaded)
            .with_phase(phase)
            .with_hint(Some(Hint {
                delay: Duration::from_secs(2),
                source: HintSource::RetryAfter,
            })),
    )
}

/// The upstream answered: overloaded, come back in 2 s.
fn overloaded() -> LlmError {
    overloaded_in(Phase::BeforeHeaders)
}

/// A layer below refused the call before it left the process (a full
/// queue, an open breaker): come back in 2 s.
fn refused_here() -> LlmError {
    overloaded_in(Phase::Local)
}

/// A retry layer over `budget` with nothing left in it, and its mock.
fn over_an_empty(budget: &Arc<RetryBudget>) -> (Retry<Mock>, Handle) {
    while budget.withdraw() {}
    let (mock, mut handle): (Mock, Handle) = mock::pair();
    let service = RetryLayer::new(policy(budget).build().unwrap()).layer(mock);
    handle.allow(10);
    (service, handle)
}

/// A budget of one retry per first attempt over a minute, no floor: the
/// tests below never see a deposit expire.
/// Answers the first attempt with `error`, after spending the deposit
/// that attempt's call made, so that the budget is empty for its retry.
async fn fail_first_with_deposit_spent(
    handle: &mut Handle,
    budget: &Arc<RetryBudget>,
    error: LlmError,
) {
    let (_, send) = handle.next_request().await.unwrap();
    assert!(budget.withdraw());
    send.send_error(error);
}

fn budget() -> Arc<RetryBudget> {
    Arc::new(RetryBudget::new(Duration::from_secs(60), 0, 1.0).unwrap())
}

fn policy(budget: &Arc<RetryBudget>) -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .seed(1)
        .shared_budget(Arc::clone(budget))
}

/// Calls once through `policy`; the first attempt is answered with a
/// 2 s hint, and the call is left waiting.
async fn waiting_call(policy: RetryPolicy) -> (Retry<Mock>, Handle, Call) {
    let (mock, mut handle): (Mock, Handle) = mock::pair();
    let mut service = RetryLayer::new(policy).layer(mock);
    handle.allow(10);
    let mut ready = task::spawn(std::future::poll_fn(|cx| {
        Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx)
    }));
    assert_ready_ok!(ready.poll());
    drop(ready);
    let mut call = task::spawn(service.call(request()));
    assert_pending!(call.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(overloaded());
    assert_pending!(call.poll());
    (service, handle, call)
}

/// Lets the 2–3 s wait pass and takes the retry at the mock.
async fn retry_sent(
    handle: &mut Handle,
    call: &mut Call,
) -> mock::SendResponse<Response<Full<Bytes>>> {
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_pending!(call.poll());
    handle.next_request().await.unwrap().1
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://provider/v1/chat/completions")
        .body(Full::from(r#"{"model":"m"}"#))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retry_waiting_out_a_hint_holds_no_budget() {
    let budget = budget();
    let (_service, _handle, call) = waiting_call(policy(&budget).build().unwrap()).await;
    // The first attempt deposited one retry; the wait has not taken it.
    assert_eq!(budget.remaining(), 1);
    drop(call);
    assert_eq!(budget.remaining(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_withdrawn_when_sent_and_given_back_when_it_succeeds() {
    let budget = budget();
    let (_service, mut handle, mut call) = waiting_call(policy(&budget).build().unwrap()).await;
    let send = retry_sent(&mut handle, &mut call).await;
    assert_eq!(budget.remaining(), 0, "the retry in flight is spent");
    send.send_response(Response::new(Full::from("ok")));
    let response = assert_ready_ok!(call.poll());
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
    assert_eq!(budget.remaining(), 1, "a successful retry is given back");
}

#[tokio::test(start_paused = true)]
async fn without_refunds_a_successful_retry_stays_spent() {
    let budget = budget();
    let policy = policy(&budget)
        .refund_successful_retries(false)
        .build()
        .unwrap();
    assert!(!policy.refunds_successful_retries());
    let (_service, mut handle, mut call) = waiting_call(policy).await;
    let send = retry_sent(&mut handle, &mut call).await;
    send.send_response(Response::new(Full::from("ok")));
    assert_ready_ok!(call.poll());
    assert_eq!(budget.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_retry_stays_spent() {
    let budget = budget();
    let policy = policy(&budget).max_attempts(2).build().unwrap();
    let (_service, mut handle, mut call) = waiting_call(policy).await;
    let send = retry_sent(&mut handle, &mut call).await;
    send.send_error(overloaded());
    let error = match call.poll() {
        Poll::Ready(Err(error)) => error,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        RetryStats::of(error.extensions()).gave_up,
        Some(GiveUp::AttemptsExhausted)
    );
    assert_eq!(budget.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_cancelled_in_flight_stays_spent() {
    // The upstream had the request: giving it back would let callers that
    // time out during an outage retry without bound.
    let budget = budget();
    let (_service, mut handle, mut call) = waiting_call(policy(&budget).build().unwrap()).await;
    let _send = retry_sent(&mut handle, &mut call).await;
    drop(call);
    assert_eq!(budget.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_budget_emptied_during_the_wait_ends_the_call_when_the_wait_is_over() {
    let budget = budget();
    let (_service, mut handle, mut call) = waiting_call(policy(&budget).build().unwrap()).await;
    assert!(budget.withdraw(), "another call takes the last retry");
    tokio::time::advance(Duration::from_secs(3)).await;
    let error = match call.poll() {
        Poll::Ready(Err(error)) => error,
        other => panic!("{other:?}"),
    };
    assert_eq!(error.kind(), ErrorKind::BudgetExhausted);
    let stats = RetryStats::of(error.extensions());
    assert_eq!(
        (stats.attempts, stats.gave_up),
        (1, Some(GiveUp::BudgetExhausted))
    );
    assert!(stats.slept >= Duration::from_secs(2), "{stats:?}");
    let nothing = tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await;
    assert!(nothing.is_err(), "no retry was sent");
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_ends_the_call_without_waiting() {
    let budget = budget();
    let (mut service, mut handle) = over_an_empty(&budget);
    let spender = Arc::clone(&budget);
    let answer = async move {
        fail_first_with_deposit_spent(&mut handle, &spender, overloaded()).await;
        handle
    };
    let started = tokio::time::Instant::now();
    let (result, _handle) = tokio::join!(
        tower::ServiceExt::<Request<Full<Bytes>>>::oneshot(&mut service, request()),
        answer
    );
    let error = result.unwrap_err();
    assert_eq!(
        RetryStats::of(error.extensions()).gave_up,
        Some(GiveUp::BudgetExhausted)
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_retry_taken_but_never_sent_is_given_back() {
    // The wait is over and the retry withdrawn, but the inner service
    // fails its readiness: nothing was sent, so nothing is spent.
    let budget = budget();
    let (_service, mut handle, mut call) = waiting_call(policy(&budget).build().unwrap()).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    handle.send_error(overloaded()); // the next poll_ready fails
    assert!(matches!(call.poll(), Poll::Ready(Err(_))));
    assert_eq!(budget.remaining(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_local_refusal_takes_nothing_from_the_budget() {
    // The budget bounds the calls a retry adds to the upstream's load; a
    // call refused below this layer never reached it, so its retry is the
    // request's first call there, even with the budget empty.
    let budget = budget();
    let (mut service, mut handle) = over_an_empty(&budget);
    let spender = Arc::clone(&budget);
    let answer = async move {
        fail_first_with_deposit_spent(&mut handle, &spender, refused_here()).await;
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(Full::from("ok")));
        handle
    };
    let (result, _handle) = tokio::join!(
        tower::ServiceExt::<Request<Full<Bytes>>>::oneshot(&mut service, request()),
        answer
    );
    let response = result.unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
    assert_eq!(budget.remaining(), 0, "nothing withdrawn, nothing given");
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_before_it_left_is_given_back() {
    let budget = budget();
    let policy = policy(&budget).max_attempts(3).build().unwrap();
    let (_service, mut handle, mut call) = waiting_call(policy).await;
    // The first attempt reached the upstream: its retry is withdrawn…
    let send = retry_sent(&mut handle, &mut call).await;
    assert_eq!(budget.remaining(), 0);
    // …and given back when a layer below refuses it, so the next retry
    // (a call the upstream will see) can take it.
    send.send_error(refused_here());
    assert_pending!(call.poll());
    assert_eq!(budget.remaining(), 1);
    let send = retry_sent(&mut handle, &mut call).await;
    assert_eq!(budget.remaining(), 0);
    send.send_response(Response::new(Full::from("ok")));
    let response = assert_ready_ok!(call.poll());
    assert_eq!(RetryStats::of(response.extensions()).attempts, 3);
}
