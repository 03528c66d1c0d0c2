//! A silent target, pinned with `tower_test::mock` on tokio's paused
//! clock: a streamed request's head and first content have limits of their
//! own, a whole answer's head does not, and a policy that leaves silence to
//! a fallback returns it at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_llm_classify::{ClassifyLayer, ErrorKind, Phase};
use tower_llm_retry::{Backoff, GiveUp, ReplayBody, RetryLayer, RetryPolicy, RetryStats};
use tower_test::mock;

const OPENAI_CHAT: &str = "https://api.openai.com/v1/chat/completions";
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const CHAT_CONTENT: &[u8] =
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";

/// A response body fed frame by frame from the test.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

fn sse() -> (Response<ChannelBody>, mpsc::UnboundedSender<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .body(ChannelBody(rx))
        .unwrap();
    (response, tx)
}

fn json() -> Response<ChannelBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Bytes::from_static(br#"{"choices":[]}"#)).unwrap();
    Response::builder()
        .header("content-type", "application/json")
        .body(ChannelBody(rx))
        .unwrap()
}

fn request(stream: bool) -> Request<Full<Bytes>> {
    Request::post(OPENAI_CHAT)
        .header("content-type", "application/json")
        .body(Full::from(format!(r#"{{"model":"m","stream":{stream}}}"#)))
        .unwrap()
}

/// A stream's head within 10 s, its first content within 20 s, a whole
/// answer within the SDKs' 600 s; 100 ms between attempts.
fn limits() -> tower_llm_retry::RetryPolicyBuilder {
    RetryPolicy::builder()
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .attempt_timeout(Duration::from_secs(600))
        .stream_head_timeout(Duration::from_secs(10))
        .first_content_timeout(Duration::from_secs(20))
}

type Handle = mock::Handle<Request<ReplayBody>, Response<ChannelBody>>;

type Service = tower_llm_retry::Retry<
    tower_llm_classify::Classify<mock::Mock<Request<ReplayBody>, Response<ChannelBody>>>,
>;

fn service(policy: RetryPolicy) -> (Service, Handle) {
    let (mock, handle) = mock::pair::<Request<ReplayBody>, Response<ChannelBody>>();
    let service = RetryLayer::new(policy).layer(ClassifyLayer::new().layer(mock));
    (service, handle)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_without_a_head_within_the_stream_head_timeout_is_tried_again() {
    let (service, mut handle) = service(limits().build().unwrap());
    let call = tokio::spawn(service.oneshot(request(true)));
    let started = Instant::now();
    let (_, silent) = handle.next_request().await.unwrap();
    let (_, answered) = handle.next_request().await.unwrap();
    let waited = started.elapsed();
    // The paused clock moves from timer to timer: the second attempt came
    // after the stream head timeout and the 100 ms backoff, long before the
    // 600 s attempt timeout.
    assert_eq!(waited, Duration::from_millis(10_100));
    drop(silent);
    let (response, tx) = sse();
    answered.send_response(response);
    tx.send(Bytes::from_static(CHAT_CONTENT)).unwrap();
    let response = call.await.unwrap().unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_whole_answer_may_take_longer_than_the_stream_head_timeout_for_its_head() {
    let (service, mut handle) = service(limits().build().unwrap());
    let call = tokio::spawn(service.oneshot(request(false)));
    let (_, send) = handle.next_request().await.unwrap();
    // A long generation: the head comes when it ends.
    tokio::time::sleep(Duration::from_secs(120)).await;
    send.send_response(json());
    let response = call.await.unwrap().unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_with_only_keep_alives_until_the_first_content_timeout_is_tried_again() {
    let (service, mut handle) = service(limits().build().unwrap());
    let call = tokio::spawn(service.oneshot(request(true)));
    let started = Instant::now();
    let (_, send) = handle.next_request().await.unwrap();
    // The head at once (so the stream head timeout is met), then only
    // keep-alives, every 5 s.
    let (response, tx) = sse();
    send.send_response(response);
    let keep_alive = tokio::spawn(async move {
        while tx.send(Bytes::from_static(KEEP_ALIVE)).is_ok() {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let (_, answered) = handle.next_request().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(20_100));
    let (response, tx) = sse();
    answered.send_response(response);
    tx.send(Bytes::from_static(CHAT_CONTENT)).unwrap();
    let response = call.await.unwrap().unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
    keep_alive.abort();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_policy_that_leaves_silence_to_a_fallback_returns_the_timeout_after_one_attempt() {
    let (service, mut handle) = service(limits().retry_on_silence(false).build().unwrap());
    let call = tokio::spawn(service.oneshot(request(true)));
    let (_, _silent) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.classification().phase(), Phase::BeforeHeaders);
    let stats = RetryStats::of(error.extensions());
    assert_eq!(stats.attempts, 1);
    assert_eq!(stats.gave_up, Some(GiveUp::Silent));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_policy_that_leaves_silence_to_a_fallback_still_retries_a_target_that_answers() {
    let (service, mut handle) = service(limits().retry_on_silence(false).build().unwrap());
    let call = tokio::spawn(service.oneshot(request(true)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(
        Response::builder()
            .status(503)
            .body(ChannelBody(mpsc::unbounded_channel().1))
            .unwrap(),
    );
    let (_, answered) = handle.next_request().await.unwrap();
    let (response, tx) = sse();
    answered.send_response(response);
    tx.send(Bytes::from_static(CHAT_CONTENT)).unwrap();
    let response = call.await.unwrap().unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
}
