//! The first-content guard, pinned with `tower_test::mock`: it reads what
//! Classify's scan below found (`StreamProgress`) instead of scanning the
//! stream again, takes the in-band error Classify returns, scans the stream
//! itself only when nothing below does, and reads a whole answer no further
//! than its end. Also: the last attempt allowed is sent the request itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_llm_classify::{BoxError, Classification, ClassifyLayer, ErrorKind, LlmError, Phase};
use tower_llm_retry::{Backoff, GiveUp, ReplayBody, RetryLayer, RetryPolicy, RetryStats};
use tower_test::mock;

const OPENAI_CHAT: &str = "https://api.openai.com/v1/chat/completions";
const ANTHROPIC: &str = "https://api.anthropic.com/v1/messages";

const CHAT_ROLE_ONLY: &[u8] =
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const CHAT_CONTENT: &[u8] =
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
const CHAT_DONE: &[u8] = b"data: [DONE]\n\n";
const MESSAGE_START: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"role\":\"assistant\",\"content\":[]}}\n\n";
const TEXT_DELTA: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
const MESSAGE_STOP: &[u8] = b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
const OVERLOADED_EVENT: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

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

/// A streamed 200 and the sender that feeds its body.
fn sse(request_id: &str) -> (Response<ChannelBody>, mpsc::UnboundedSender<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .header("x-request-id", request_id)
        .body(ChannelBody(rx))
        .unwrap();
    (response, tx)
}

fn request(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::from(r#"{"model":"m","stream":true}"#))
        .unwrap()
}

/// What a layer between the retry layer and Classify saw of the body (a
/// circuit breaker sits there and counts what passes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Frame,
    Error(ErrorKind),
    End,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// What the probe does to what passes.
#[derive(Clone, Copy)]
enum Probe {
    PassThrough,
    /// Data frames go up as SSE comments: a guard scanning the bytes
    /// itself would never see content in them.
    HideData,
    /// A body error goes up as the end of the body.
    SwallowErrors,
}

struct ProbeBody<B> {
    inner: Pin<Box<B>>,
    log: Log,
    probe: Probe,
}

impl<B> Body for ProbeBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = LlmError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, LlmError>>> {
        let this = self.get_mut();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        let mut log = this.log.lock().unwrap();
        Poll::Ready(match polled {
            Some(Ok(frame)) => {
                log.push(Seen::Frame);
                match this.probe {
                    Probe::HideData if frame.is_data() => {
                        Some(Ok(Frame::data(Bytes::from_static(b": hidden\n\n"))))
                    }
                    _ => Some(Ok(frame)),
                }
            }
            Some(Err(error)) => {
                let error = LlmError::from_source(error);
                log.push(Seen::Error(error.kind()));
                match this.probe {
                    Probe::SwallowErrors => None,
                    _ => Some(Err(error)),
                }
            }
            None => {
                log.push(Seen::End);
                None
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// `inner` with its response bodies probed.
fn probed<S, B>(
    inner: S,
    probe: Probe,
) -> (
    impl Service<Request<ReplayBody>, Response = Response<ProbeBody<B>>, Error = S::Error> + Clone,
    Log,
)
where
    S: Service<Request<ReplayBody>, Response = Response<B>> + Clone,
    B: Body<Data = Bytes>,
{
    let log = Log::default();
    let seen = Arc::clone(&log);
    let service = ServiceBuilder::new()
        .map_response(move |response: Response<B>| {
            response.map(|body| ProbeBody {
                inner: Box::pin(body),
                log: Arc::clone(&seen),
                probe,
            })
        })
        .service(inner);
    (service, log)
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn guard_reads_first_content_from_classify_progress_without_its_own_scan() {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<ChannelBody>>();
    // Above Classify, every data frame is an SSE comment: only what
    // Classify's scan published can tell the guard that content went by.
    let (probe, log) = probed(ClassifyLayer::new().layer(mock), Probe::HideData);
    let service = RetryLayer::new(RetryPolicy::sdk_default()).layer(probe);
    let mut call = task::spawn(service.oneshot(request(OPENAI_CHAT)));
    assert_pending!(call.poll());
    let (_, send) = handle.next_request().await.unwrap();
    let (response, tx) = sse("req-1");
    send.send_response(response);
    assert_pending!(call.poll());

    tx.send(Bytes::from_static(CHAT_ROLE_ONLY)).unwrap();
    assert!(call.is_woken());
    assert_pending!(call.poll(), "a role chunk is not content");
    tx.send(Bytes::from_static(CHAT_CONTENT)).unwrap();
    let response = assert_ready_ok!(call.poll(), "handed over at the first content");

    assert_eq!(seen(&log), [Seen::Frame, Seen::Frame]);
    assert_eq!(RetryStats::of(response.extensions()).attempts, 1);
    assert!(response.body().has_read_ahead());
    // The stream was still open: the guard did not wait for its end.
    tx.send(Bytes::from_static(CHAT_DONE)).unwrap();
    drop(tx);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b": hidden\n\n: hidden\n\n: hidden\n\n");
}

/// One attempt of an Anthropic stream whose overload event comes before
/// any content, through `probe` over Classify: the call's error and what
/// the layer between saw.
async fn overloaded_before_content(probe: Probe, request_id: &str) -> (LlmError, Log) {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<ChannelBody>>();
    let (probe, log) = probed(ClassifyLayer::new().layer(mock), probe);
    let one_attempt = RetryPolicy::builder().max_attempts(1).build().unwrap();
    let service = RetryLayer::new(one_attempt).layer(probe);
    let mut call = task::spawn(service.oneshot(request(ANTHROPIC)));
    assert_pending!(call.poll());
    let (_, send) = handle.next_request().await.unwrap();
    let (response, tx) = sse(request_id);
    send.send_response(response);
    tx.send(Bytes::from_static(MESSAGE_START)).unwrap();
    tx.send(Bytes::from_static(OVERLOADED_EVENT)).unwrap();

    let error = match assert_ready!(call.poll()) {
        Ok(_) => panic!("a stream that failed before content was handed over"),
        Err(error) => error,
    };
    (error, log)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn guard_returns_the_in_band_error_classify_read_and_the_layer_between_sees_it() {
    let (error, log) = overloaded_before_content(Probe::PassThrough, "req-42").await;
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert_eq!(
        error.classification().phase(),
        Phase::AfterHeaders,
        "nothing reached the caller: replayable"
    );
    // Classify's error, with the head it read; the guard made none of its own.
    assert_eq!(error.classification().request_id(), Some("req-42"));
    // The error went through the layer between (where a circuit breaker
    // counts it), after the frame that carried it.
    assert_eq!(
        seen(&log),
        [Seen::Frame, Seen::Frame, Seen::Error(ErrorKind::Overloaded)]
    );
    let stats = RetryStats::of(error.extensions());
    assert_eq!(stats.attempts, 1);
    assert_eq!(stats.gave_up, Some(GiveUp::AttemptsExhausted));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_in_band_error_classify_reported_before_content_is_replayed_into_a_clean_stream() {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<ChannelBody>>();
    let (probe, log) = probed(ClassifyLayer::new().layer(mock), Probe::PassThrough);
    let service = RetryLayer::new(quick_retries()).layer(probe);
    let upstream = async move {
        let (_, send) = handle.next_request().await.unwrap();
        let (response, failing) = sse("req-1");
        send.send_response(response);
        failing.send(Bytes::from_static(MESSAGE_START)).unwrap();
        failing.send(Bytes::from_static(OVERLOADED_EVENT)).unwrap();
        let (_, send) = handle.next_request().await.unwrap();
        let (response, healthy) = sse("req-2");
        send.send_response(response);
        healthy.send(Bytes::from_static(MESSAGE_START)).unwrap();
        healthy.send(Bytes::from_static(TEXT_DELTA)).unwrap();
        (failing, healthy)
    };
    let (response, (_failing, healthy)) =
        tokio::join!(service.oneshot(request(ANTHROPIC)), upstream);
    let response = response.unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
    healthy.send(Bytes::from_static(MESSAGE_STOP)).unwrap();
    drop(healthy);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, [MESSAGE_START, TEXT_DELTA, MESSAGE_STOP].concat());
    assert_eq!(
        seen(&log)[..3],
        [Seen::Frame, Seen::Frame, Seen::Error(ErrorKind::Overloaded)]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_classify_below_the_guard_scans_the_stream_itself() {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<ChannelBody>>();
    let service = RetryLayer::new(RetryPolicy::sdk_default()).layer(mock);
    let mut call = task::spawn(service.oneshot(request(OPENAI_CHAT)));
    assert_pending!(call.poll());
    let (_, send) = handle.next_request().await.unwrap();
    let (response, tx) = sse("req-1");
    send.send_response(response);

    tx.send(Bytes::from_static(CHAT_ROLE_ONLY)).unwrap();
    assert_pending!(call.poll(), "a role chunk is not content");
    tx.send(Bytes::from_static(CHAT_CONTENT)).unwrap();
    let response = assert_ready_ok!(call.poll(), "handed over at the first content");
    drop(tx);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, [CHAT_ROLE_ONLY, CHAT_CONTENT].concat());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_classify_not_scanning_streams_the_guard_scans_the_stream_itself() {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<ChannelBody>>();
    let classify = ClassifyLayer::new().scan_streams(false).layer(mock);
    let service = RetryLayer::new(RetryPolicy::sdk_default()).layer(classify);
    let mut call = task::spawn(service.oneshot(request(OPENAI_CHAT)));
    assert_pending!(call.poll());
    let (_, send) = handle.next_request().await.unwrap();
    let (response, tx) = sse("req-1");
    send.send_response(response);

    tx.send(Bytes::from_static(CHAT_ROLE_ONLY)).unwrap();
    assert_pending!(call.poll(), "a role chunk is not content");
    tx.send(Bytes::from_static(CHAT_CONTENT)).unwrap();
    assert_ready_ok!(call.poll(), "handed over at the first content");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_classify_below_an_error_as_the_first_event_is_retried_by_the_guard_s_own_scan() {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<ChannelBody>>();
    let service = RetryLayer::new(quick_retries()).layer(mock);
    let upstream = async move {
        let (_, send) = handle.next_request().await.unwrap();
        let (response, failing) = sse("req-1");
        send.send_response(response);
        failing.send(Bytes::from_static(MESSAGE_START)).unwrap();
        failing.send(Bytes::from_static(OVERLOADED_EVENT)).unwrap();
        let (_, send) = handle.next_request().await.unwrap();
        let (response, healthy) = sse("req-2");
        send.send_response(response);
        healthy.send(Bytes::from_static(MESSAGE_START)).unwrap();
        healthy.send(Bytes::from_static(TEXT_DELTA)).unwrap();
        (failing, healthy)
    };
    let (response, senders) = tokio::join!(service.oneshot(request(ANTHROPIC)), upstream);
    let response = response.unwrap();
    assert_eq!(RetryStats::of(response.extensions()).attempts, 2);
    drop(senders);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, [MESSAGE_START, TEXT_DELTA].concat());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_that_reported_an_error_it_did_not_return_is_not_handed_over() {
    // The layer between turns the error Classify returns into the end of
    // the body: the progress said it failed, the body says it ended.
    let (error, log) = overloaded_before_content(Probe::SwallowErrors, "req-1").await;
    assert_eq!(error.classification().phase(), Phase::AfterHeaders);
    assert_eq!(error.kind(), ErrorKind::Unknown);
    assert_eq!(
        seen(&log),
        [Seen::Frame, Seen::Frame, Seen::Error(ErrorKind::Overloaded)]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_whole_answer_that_ends_with_its_first_frame_is_handed_over_without_another_read() {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<Full<Bytes>>>();
    let (probe, log) = probed(mock, Probe::PassThrough);
    let service = RetryLayer::new(RetryPolicy::sdk_default()).layer(probe);
    let mut call = task::spawn(service.oneshot(request(OPENAI_CHAT)));
    assert_pending!(call.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::from(r#"{"choices":[]}"#))
            .unwrap(),
    );
    let response = assert_ready_ok!(call.poll());
    // Held to its end, which its one frame reached: not read past it.
    assert_eq!(seen(&log), [Seen::Frame]);
    assert!(response.body().has_read_ahead());
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], br#"{"choices":[]}"#);
}

/// An extension that counts its copies.
#[derive(Debug)]
struct Copies(Arc<AtomicUsize>);

impl Clone for Copies {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::Relaxed);
        Copies(Arc::clone(&self.0))
    }
}

/// Calls with `policy`, failing every one of `attempts` but the last; the
/// copies made of the request (every attempt is checked to carry it all).
async fn copies_of_the_request(policy: RetryPolicy, attempts: usize) -> usize {
    let (mock, mut handle) = mock::pair::<Request<ReplayBody>, Response<Full<Bytes>>>();
    let service = RetryLayer::new(policy).layer(mock);
    let copies = Arc::new(AtomicUsize::new(0));
    let mut request = request(OPENAI_CHAT);
    request.extensions_mut().insert(Copies(Arc::clone(&copies)));
    let upstream = async move {
        for attempt in 1..=attempts {
            let (request, send) = handle.next_request().await.unwrap();
            assert!(request.extensions().get::<Copies>().is_some());
            assert_eq!(request.headers()["content-type"], "application/json");
            assert_eq!(
                request.into_body().collect().await.unwrap().to_bytes(),
                r#"{"model":"m","stream":true}"#
            );
            if attempt < attempts {
                send.send_error(LlmError::new(
                    Classification::new(ErrorKind::Overloaded).with_phase(Phase::BeforeHeaders),
                ));
            } else {
                send.send_response(Response::new(Full::from("ok")));
            }
        }
    };
    let (response, ()) = tokio::join!(service.oneshot(request), upstream);
    assert_eq!(
        RetryStats::of(response.unwrap().extensions()).attempts as usize,
        attempts
    );
    copies.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_last_attempt_allowed_is_sent_the_request_itself_not_a_copy() {
    let one_attempt = RetryPolicy::builder().max_attempts(1).build().unwrap();
    assert_eq!(copies_of_the_request(one_attempt, 1).await, 0);
    let two_attempts = RetryPolicy::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .build()
        .unwrap();
    // The first attempt is sent a copy, the second (the last) the request.
    assert_eq!(copies_of_the_request(two_attempts, 2).await, 1);
}
