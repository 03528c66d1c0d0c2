#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins the contract of `ClassifyLayer` against `tower_test::mock`: readiness
//! and its wake-ups, errors and bodies passed back without loss, the bounded
//! error-body read, `RequestMeta`, the outcome hook (exactly once: failed,
//! completed or abandoned), in-band stream errors, the idle timeout on a
//! paused clock, and layering twice.

use std::error::Error as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};
use tower::ServiceBuilder;
use tower_llm_classify::stream::{OutcomeHook, ResponseBody, StreamOutcome, StreamProgress};
use tower_llm_classify::{
    BoxError, ClassifyLayer, ErrorKind, LlmError, Phase, Provider, RequestMeta,
};
use tower_test::mock;

type Req = Request<Full<Bytes>>;

// ---------------------------------------------------------------------------
// Test bodies, outcome recorder, one-call driver.
// ---------------------------------------------------------------------------

type Feed = mpsc::UnboundedSender<Result<Frame<Bytes>, io::Error>>;

/// A body fed from a channel: pending while the channel is empty and open,
/// ended when every sender is gone. `is_end_stream` stays false, as for a
/// chunked hyper body.
#[derive(Debug)]
struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Frame<Bytes>, io::Error>>,
}

impl ChannelBody {
    fn new() -> (Feed, ChannelBody) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, ChannelBody { rx })
    }

    /// A body of these data frames, then its end.
    fn of(chunks: &[&[u8]]) -> ChannelBody {
        let (feed, body) = ChannelBody::new();
        for chunk in chunks {
            send(&feed, chunk);
        }
        body
    }
}

fn send(feed: &Feed, chunk: &[u8]) {
    feed.send(Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .unwrap();
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx)
    }
}

/// A body that always has another 7-byte frame ready, counting its polls.
#[derive(Debug)]
struct EndlessBody {
    polls: Arc<AtomicUsize>,
}

impl Body for EndlessBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"0123456")))))
    }
}

/// An outcome as the hook saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Completed,
    Failed(ErrorKind, Phase),
    Abandoned { content_seen: bool },
}

type Outcomes = Arc<Mutex<Vec<Seen>>>;

fn recorder() -> (OutcomeHook, Outcomes) {
    let outcomes = Outcomes::default();
    let sink = outcomes.clone();
    let hook = OutcomeHook::new(move |outcome: StreamOutcome<'_>| {
        let seen = match outcome {
            StreamOutcome::Completed => Seen::Completed,
            StreamOutcome::Failed(c) => Seen::Failed(c.kind(), c.phase()),
            StreamOutcome::Abandoned { content_seen } => Seen::Abandoned { content_seen },
            other => panic!("unexpected outcome {other:?}"),
        };
        sink.lock().unwrap().push(seen);
    });
    (hook, outcomes)
}

fn seen(outcomes: &Outcomes) -> Vec<Seen> {
    outcomes.lock().unwrap().clone()
}

fn request(uri: &str) -> Req {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true}"#,
        )))
        .unwrap()
}

fn hooked(uri: &str) -> (Req, Outcomes) {
    let (hook, outcomes) = recorder();
    let mut request = request(uri);
    request.extensions_mut().insert(hook);
    (request, outcomes)
}

fn response<B>(status: u16, headers: &[(&str, &str)], body: B) -> Response<B> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap()
}

fn sse<B>(headers: &[(&str, &str)], body: B) -> Response<B> {
    let mut response = response(200, headers, body);
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

type Outcome<B> = Result<Response<ResponseBody<B>>, LlmError>;

/// Calls the layer over a mock once: returns what the inner service received
/// and what the layer made of `answer`.
fn call_once<B>(layer: ClassifyLayer, request: Req, answer: Response<B>) -> (Req, Outcome<B>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut service, mut handle) = mock::spawn_layer(layer);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request));
    assert_pending!(future.poll());
    let (received, respond) = assert_ready!(handle.poll_request()).unwrap();
    respond.send_response(answer);
    assert!(future.is_woken());
    (received, assert_ready!(future.poll()))
}

/// One poll of a body's next frame.
type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

fn poll_frame<B: Body>(body: &mut task::Spawn<B>) -> Polled<B> {
    body.enter(|cx, body| body.poll_frame(cx))
}

/// Polls the next frame, which must be ready data.
fn next_data<B: Body<Data = Bytes>>(body: &mut task::Spawn<B>) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    match poll_frame(body) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
        other => panic!("expected a data frame, got {other:?}"),
    }
}

/// Polls the next frame, which must be a ready error.
fn next_error<B: Body<Data = Bytes>>(body: &mut task::Spawn<B>) -> B::Error {
    match poll_frame(body) {
        Poll::Ready(Some(Err(error))) => error,
        Poll::Ready(Some(Ok(_))) => panic!("expected an error, got a frame"),
        Poll::Ready(None) => panic!("expected an error, got the end"),
        Poll::Pending => panic!("expected an error, got pending"),
    }
}

fn assert_ended<B: Body>(body: &mut task::Spawn<B>) {
    assert!(matches!(poll_frame(body), Poll::Ready(None)));
}

const OPENAI_CHAT: &str = "https://api.openai.com/v1/chat/completions";
const ANTHROPIC: &str = "https://api.anthropic.com/v1/messages";

const CHAT_CONTENT: &[u8] =
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
const CHAT_ROLE_ONLY: &[u8] =
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const CHAT_DONE: &[u8] = b"data: [DONE]\n\n";

const MESSAGE_START: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"role\":\"assistant\",\"content\":[]}}\n\n";
const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";
const TEXT_DELTA: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
const OVERLOADED_EVENT: &[u8] = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
const MESSAGE_STOP: &[u8] = b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[test]
fn a_scanned_stream_goes_out_without_the_upstreams_length() {
    // A buffering proxy's length would frame a stream that may end with
    // an error event the upstream never sent: a server framing by it would
    // cut the caller's answer short or abort it.
    let body = Full::new(Bytes::from_static(CHAT_CONTENT));
    let declared = CHAT_CONTENT.len().to_string();
    let (_, outcome) = call_once(
        ClassifyLayer::new(),
        request(OPENAI_CHAT),
        sse(&[("content-length", &declared)], body),
    );
    let response = outcome.unwrap();
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.body().size_hint().exact(), None);
    // A whole answer keeps its length: nothing is added to it.
    let (_, outcome) = call_once(
        ClassifyLayer::new(),
        request(OPENAI_CHAT),
        response_with_length(),
    );
    let response = outcome.unwrap();
    assert_eq!(response.headers()["content-length"], "2");
    assert_eq!(response.body().size_hint().exact(), Some(2));
}

fn response_with_length() -> Response<Full<Bytes>> {
    response(
        200,
        &[
            ("content-type", "application/json"),
            ("content-length", "2"),
        ],
        Full::new(Bytes::from_static(b"{}")),
    )
}

// ---------------------------------------------------------------------------
// Readiness.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn poll_ready_propagates_inner_readiness_and_registers_waker() {
    let (mut service, mut handle) =
        mock::spawn_layer::<Req, Response<Full<Bytes>>, _>(ClassifyLayer::new());
    handle.allow(0);
    assert_pending!(service.poll_ready());
    assert!(!service.is_woken());

    handle.allow(1);
    assert!(
        service.is_woken(),
        "the inner wake-up must reach the caller"
    );
    assert_ready_ok!(service.poll_ready());

    // The admission was spent by the call: readiness is asked again.
    let _future = service.call(request(OPENAI_CHAT));
    assert_pending!(service.poll_ready());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_readiness_error_becomes_classified_llm_error() {
    let (mut service, mut handle) =
        mock::spawn_layer::<Req, Response<Full<Bytes>>, _>(ClassifyLayer::new());
    handle.send_error(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    let error = assert_ready_err!(service.poll_ready());
    assert_eq!(error.kind(), ErrorKind::Connect);
    assert_eq!(error.classification().phase(), Phase::Connect);
    assert!(error.retryable());
    // The source comes back as it was, not as a string.
    let source = error.source().unwrap().downcast_ref::<io::Error>().unwrap();
    assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
}

// ---------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn success_passes_body_bytes_through_untouched() {
    // An Anthropic stream cut at awkward places: inside an event, inside a
    // UTF-8 character, between `\r` and `\n`; with a comment and an empty frame.
    let stream: &[u8] = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\r\n\r\n\
        : keep-alive\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"h\u{e9}llo \u{1f30d}\"}}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        .as_bytes();
    let utf8_cut = stream.iter().position(|b| *b >= 0x80).unwrap() + 1;
    let frames: Vec<&[u8]> = vec![
        &stream[..37],
        &stream[37..38],
        &[],
        &stream[38..utf8_cut],
        &stream[utf8_cut..stream.len() - 3],
        &stream[stream.len() - 3..],
    ];
    assert_eq!(frames.concat(), stream);

    let answer = sse(&[("request-id", "req_1")], ChannelBody::of(&frames));
    let (_, result) = call_once(ClassifyLayer::new(), request(ANTHROPIC), answer);
    let response = result.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["request-id"], "req_1");
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        received.push(frame.unwrap().into_data().unwrap());
    }
    let sent: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
    assert_eq!(received, sent, "frames pass one for one, byte for byte");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn error_status_becomes_llm_error_with_head_and_body() {
    let body = Bytes::from_static(
        br#"{"error":{"message":"Rate limit reached for gpt-4o on tokens per min (TPM).","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
    );
    let answer = response(
        429,
        &[
            ("content-type", "application/json"),
            ("retry-after-ms", "1500"),
            ("x-request-id", "req_abc"),
        ],
        Full::new(body.clone()),
    );
    let (_, result) = call_once(ClassifyLayer::new(), request(OPENAI_CHAT), answer);
    let error = result.unwrap_err();

    let c = error.classification();
    assert_eq!(c.kind(), ErrorKind::RateLimited);
    assert!(c.retryable());
    assert_eq!(c.phase(), Phase::AfterHeaders);
    assert_eq!(c.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(c.provider(), Provider::OpenAi);
    assert_eq!(c.code(), Some("rate_limit_exceeded"));
    assert_eq!(c.request_id(), Some("req_abc"));
    assert_eq!(c.retry_after(), Some(Duration::from_millis(1500)));

    let head = error.response_head().unwrap();
    assert_eq!(head.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(head.headers["x-request-id"], "req_abc");
    assert_eq!(error.body(), &body);
    assert!(!error.body_truncated());

    let upstream = error.into_upstream_response().unwrap();
    assert_eq!(upstream.status(), 429);
    assert_eq!(upstream.body(), &body);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn error_body_is_truncated_at_the_limit_and_marked() {
    let answer = response(
        500,
        &[],
        ChannelBody::of(&[b"abcd", b"efgh", b"ijkl", b"mnop"]),
    );
    let layer = ClassifyLayer::new().error_body_limit(10);
    let (_, result) = call_once(layer, request(OPENAI_CHAT), answer);
    let error = result.unwrap_err();
    assert_eq!(error.body().as_ref(), b"abcdefghij");
    assert_eq!(error.body().len(), 10);
    assert!(error.body_truncated());
    // The status still classifies a cut body.
    assert_eq!(error.kind(), ErrorKind::ServerError);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn error_body_read_stops_at_the_limit_without_draining_an_endless_body() {
    let polls = Arc::new(AtomicUsize::new(0));
    let answer = response(
        503,
        &[],
        EndlessBody {
            polls: polls.clone(),
        },
    );
    let layer = ClassifyLayer::new().error_body_limit(100);
    // call_once polls the future once after the head: it must complete then.
    let (_, result) = call_once(layer, request(OPENAI_CHAT), answer);
    let error = result.unwrap_err();
    assert_eq!(error.body().len(), 100);
    assert!(error.body_truncated());
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    // 15 frames of 7 bytes hold the first 100; not one frame more is read.
    assert_eq!(polls.load(Ordering::SeqCst), 15);
}

// ---------------------------------------------------------------------------
// RequestMeta and the provider.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn request_meta_is_inserted_once_and_an_existing_one_is_respected() {
    // Without one: computed from the URI and the (unconsumed) body.
    let json: &[u8] = br#"{"model":"gpt-4o","messages":[],"stream":true}"#;
    let plain = Request::post(OPENAI_CHAT)
        .body(Full::new(Bytes::from_static(json)))
        .unwrap();
    let expected = RequestMeta::from_request(plain.uri(), plain.headers(), Some(json));
    assert_eq!(expected.provider, Provider::OpenAi);
    assert_eq!(expected.model.as_deref(), Some("gpt-4o"));
    assert!(expected.stream);
    let answer = response(200, &[], Full::new(Bytes::new()));
    let (received, _) = call_once(ClassifyLayer::new(), plain, answer);
    assert_eq!(received.extensions().get::<RequestMeta>(), Some(&expected));
    let body = received.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body.as_ref(),
        json,
        "peeking at the body must not consume it"
    );

    // With one already attached (say, by the retry layer): kept as it is, and
    // its provider is the one the classification uses.
    let mut request = request(OPENAI_CHAT);
    let theirs = RequestMeta::with_provider(
        Provider::Mistral,
        request.uri(),
        &HeaderMap::new(),
        Some(br#"{"model":"mistral-large-latest"}"#),
    );
    request.extensions_mut().insert(theirs.clone());
    let answer = response(500, &[], Full::new(Bytes::new()));
    let (received, result) = call_once(ClassifyLayer::new(), request, answer);
    assert_eq!(received.extensions().get::<RequestMeta>(), Some(&theirs));
    assert_eq!(
        result.unwrap_err().classification().provider(),
        Provider::Mistral
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn explicit_provider_overrides_detection() {
    // Behind a gateway the URI looks like any OpenAI-compatible host.
    let uri = "http://llm-gateway.internal/v1/chat/completions";
    assert_eq!(
        Provider::detect(&uri.parse().unwrap()),
        Provider::OpenAiCompatible
    );
    let layer = ClassifyLayer::new().provider(Provider::Anthropic);
    let overloaded = || {
        response(
            529,
            &[("request-id", "req_011")],
            Full::new(Bytes::from_static(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )),
        )
    };

    let (received, result) = call_once(layer, request(uri), overloaded());
    assert_eq!(
        received.extensions().get::<RequestMeta>().unwrap().provider,
        Provider::Anthropic
    );
    let error = result.unwrap_err();
    assert_eq!(error.classification().provider(), Provider::Anthropic);
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert_eq!(error.classification().request_id(), Some("req_011"));

    // The configured provider also wins over a RequestMeta that detected one.
    let mut request = request(uri);
    let detected = RequestMeta::from_request(request.uri(), request.headers(), None);
    request.extensions_mut().insert(detected);
    let (_, result) = call_once(layer, request, overloaded());
    assert_eq!(
        result.unwrap_err().classification().provider(),
        Provider::Anthropic
    );
}

// ---------------------------------------------------------------------------
// The outcome hook.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn outcome_hook_reports_failed_once_for_error_status() {
    let (request, outcomes) = hooked(OPENAI_CHAT);
    let answer = response(503, &[], Full::new(Bytes::from_static(b"upstream down")));
    let (received, result) = call_once(ClassifyLayer::new(), request, answer);
    assert!(
        received.extensions().get::<OutcomeHook>().is_none(),
        "the hook is the layer's to call, not the inner service's"
    );
    let error = result.unwrap_err();
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::Overloaded, Phase::AfterHeaders)]
    );
    drop(error);
    assert_eq!(seen(&outcomes).len(), 1, "reported exactly once");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn outcome_hook_reports_completed_at_end_of_a_clean_stream() {
    let (request, outcomes) = hooked(OPENAI_CHAT);
    let answer = sse(
        &[],
        ChannelBody::of(&[CHAT_ROLE_ONLY, CHAT_CONTENT, CHAT_DONE]),
    );
    let (_, result) = call_once(ClassifyLayer::new(), request, answer);
    let mut body = task::spawn(result.unwrap().into_body());
    assert_eq!(seen(&outcomes), [], "nothing is known before the body ends");

    assert_eq!(next_data(&mut body), CHAT_ROLE_ONLY);
    assert_eq!(next_data(&mut body), CHAT_CONTENT);
    assert_eq!(next_data(&mut body), CHAT_DONE);
    assert_eq!(seen(&outcomes), []);
    assert_ended(&mut body);
    assert_eq!(seen(&outcomes), [Seen::Completed]);
    assert!(body.is_end_stream());

    drop(body);
    assert_eq!(seen(&outcomes), [Seen::Completed], "reported exactly once");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn outcome_hook_reports_failed_for_an_in_band_error_and_the_error_comes_after_the_frame_that_carried_it()
 {
    let (request, outcomes) = hooked(ANTHROPIC);
    let first = [MESSAGE_START, TEXT_DELTA].concat();
    let answer = sse(
        &[("request-id", "req_stream_1")],
        ChannelBody::of(&[&first, OVERLOADED_EVENT, MESSAGE_STOP]),
    );
    let (_, result) = call_once(ClassifyLayer::new(), request, answer);
    let mut body = task::spawn(result.unwrap().into_body());

    assert_eq!(next_data(&mut body), first);
    assert_eq!(seen(&outcomes), []);
    // The caller gets the error event's bytes, as the provider sent them...
    assert_eq!(next_data(&mut body), OVERLOADED_EVENT);
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::Overloaded, Phase::MidStream)]
    );
    // ...then the classified error, then the end.
    let error = next_error(&mut body);
    let c = error.classification();
    assert_eq!(c.kind(), ErrorKind::Overloaded);
    assert_eq!(c.phase(), Phase::MidStream);
    assert!(!c.retryable(), "content reached the caller: never replay");
    assert_eq!(c.provider(), Provider::Anthropic);
    assert_eq!(c.code(), Some("overloaded_error"));
    assert_eq!(c.request_id(), Some("req_stream_1"));
    assert_ended(&mut body);
    drop(body);
    assert_eq!(seen(&outcomes).len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_publishes_its_first_content_in_the_response_extensions() {
    let answer = sse(
        &[],
        ChannelBody::of(&[CHAT_ROLE_ONLY, CHAT_CONTENT, CHAT_DONE]),
    );
    let (_, result) = call_once(ClassifyLayer::new(), request(OPENAI_CHAT), answer);
    let response = result.unwrap();
    let progress = response
        .extensions()
        .get::<StreamProgress>()
        .cloned()
        .expect("a scanned stream carries its progress");
    let mut body = task::spawn(response.into_body());

    assert_eq!(next_data(&mut body), CHAT_ROLE_ONLY);
    assert!(!progress.content_seen(), "a role chunk is not content");
    assert_eq!(next_data(&mut body), CHAT_CONTENT);
    assert!(progress.content_seen(), "set before the frame is handed up");
    assert!(!progress.failed());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_publishes_an_in_band_error_before_the_frame_that_carried_it() {
    let answer = sse(
        &[],
        ChannelBody::of(&[MESSAGE_START, PING, OVERLOADED_EVENT]),
    );
    let (_, result) = call_once(ClassifyLayer::new(), request(ANTHROPIC), answer);
    let response = result.unwrap();
    let progress = response
        .extensions()
        .get::<StreamProgress>()
        .cloned()
        .unwrap();
    let mut body = task::spawn(response.into_body());

    assert_eq!(next_data(&mut body), MESSAGE_START);
    assert_eq!(next_data(&mut body), PING);
    assert!(
        !progress.content_seen() && !progress.failed(),
        "keep-alives are neither"
    );
    assert_eq!(next_data(&mut body), OVERLOADED_EVENT);
    assert!(progress.failed());
    assert!(!progress.content_seen());
    assert_eq!(next_error(&mut body).kind(), ErrorKind::Overloaded);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_whole_answer_carries_no_stream_progress() {
    let answer = response(
        200,
        &[("content-type", "application/json")],
        Full::new(Bytes::from_static(b"{}")),
    );
    let (_, result) = call_once(ClassifyLayer::new(), request(OPENAI_CHAT), answer);
    assert!(
        result
            .unwrap()
            .extensions()
            .get::<StreamProgress>()
            .is_none()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_response_future_reports_abandoned() {
    let (mut service, mut handle) =
        mock::spawn_layer::<Req, Response<Full<Bytes>>, _>(ClassifyLayer::new());
    let (request, outcomes) = hooked(OPENAI_CHAT);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request));
    assert_pending!(future.poll());
    let (_, respond) = assert_ready!(handle.poll_request()).unwrap();

    drop(future);
    assert_eq!(
        seen(&outcomes),
        [Seen::Abandoned {
            content_seen: false
        }]
    );
    respond.send_response(response(500, &[], Full::new(Bytes::new())));
    assert_eq!(seen(&outcomes).len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_body_midway_reports_abandoned_with_content_seen() {
    // Dropped after keep-alives only: nothing reached the caller.
    let (request, outcomes) = hooked(ANTHROPIC);
    let (feed, stream) = ChannelBody::new();
    send(&feed, MESSAGE_START);
    send(&feed, PING);
    let (_, result) = call_once(ClassifyLayer::new(), request, sse(&[], stream));
    let mut body = task::spawn(result.unwrap().into_body());
    next_data(&mut body);
    next_data(&mut body);
    assert_pending!(poll_frame(&mut body));
    assert!(!body.content_seen());
    drop(body);
    assert_eq!(
        seen(&outcomes),
        [Seen::Abandoned {
            content_seen: false
        }]
    );

    // Dropped after a content event.
    let (request, outcomes) = hooked(ANTHROPIC);
    let (feed, stream) = ChannelBody::new();
    send(&feed, MESSAGE_START);
    send(&feed, TEXT_DELTA);
    let (_, result) = call_once(ClassifyLayer::new(), request, sse(&[], stream));
    let mut body = task::spawn(result.unwrap().into_body());
    next_data(&mut body);
    next_data(&mut body);
    assert!(body.content_seen());
    drop(body);
    assert_eq!(seen(&outcomes), [Seen::Abandoned { content_seen: true }]);
}

// ---------------------------------------------------------------------------
// Streams: idle timeout and terminal events.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_idle_timer_waits_for_the_first_content_however_long_it_takes() {
    // A reasoning model: 20 s of pings and silence before its first token,
    // four idle timeouts' worth. The head-to-first-content wait is the
    // retry layer's to bound.
    let (request, outcomes) = hooked(ANTHROPIC);
    let layer = ClassifyLayer::new().stream_idle_timeout(Duration::from_secs(5));
    let (feed, stream) = ChannelBody::new();
    send(&feed, MESSAGE_START);
    let (_, result) = call_once(layer, request, sse(&[], stream));
    let mut body = task::spawn(result.unwrap().into_body());
    assert_eq!(next_data(&mut body), MESSAGE_START);
    assert_pending!(poll_frame(&mut body));
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(6)).await;
        send(&feed, PING);
        assert_eq!(next_data(&mut body), PING);
        assert_pending!(poll_frame(&mut body));
    }
    tokio::time::advance(Duration::from_secs(8)).await;
    assert!(!body.is_woken());
    assert_pending!(poll_frame(&mut body));

    send(&feed, TEXT_DELTA);
    assert_eq!(next_data(&mut body), TEXT_DELTA);
    assert_pending!(poll_frame(&mut body));
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(!body.is_woken());
    send(&feed, MESSAGE_STOP);
    assert_eq!(next_data(&mut body), MESSAGE_STOP);
    drop(feed);
    assert_ended(&mut body);
    assert_eq!(seen(&outcomes), [Seen::Completed]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_timeout_fires_after_content_when_only_pings_flow() {
    let (request, outcomes) = hooked(ANTHROPIC);
    let layer = ClassifyLayer::new().stream_idle_timeout(Duration::from_secs(5));
    let (feed, stream) = ChannelBody::new();
    send(&feed, MESSAGE_START);
    send(&feed, TEXT_DELTA);
    let (_, result) = call_once(layer, request, sse(&[("request-id", "req_idle")], stream));
    let mut body = task::spawn(result.unwrap().into_body());
    assert_eq!(next_data(&mut body), MESSAGE_START);
    assert_eq!(next_data(&mut body), TEXT_DELTA);
    assert_pending!(poll_frame(&mut body));

    // Pings at 2 s and 4 s are passed on but do not reset the timer.
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(2)).await;
        send(&feed, PING);
        assert_eq!(next_data(&mut body), PING);
        assert_pending!(poll_frame(&mut body));
    }
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(!body.is_woken());
    assert_pending!(poll_frame(&mut body));

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(body.is_woken(), "the timer wakes the reader by itself");
    let error = next_error(&mut body);
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.classification().phase(), Phase::MidStream);
    assert_eq!(error.classification().provider(), Provider::Anthropic);
    assert_eq!(error.classification().request_id(), Some("req_idle"));
    assert!(!error.retryable(), "content had reached the caller");
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::Timeout, Phase::MidStream)]
    );
    assert_ended(&mut body);
    drop(feed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pings_always_ready_after_content_do_not_hide_a_stall() {
    // Every poll finds a ping waiting: the timer is never polled pending,
    // so the deadline is checked on the pings themselves.
    let (request, outcomes) = hooked(ANTHROPIC);
    let layer = ClassifyLayer::new().stream_idle_timeout(Duration::from_secs(5));
    let (feed, stream) = ChannelBody::new();
    send(&feed, TEXT_DELTA);
    let (_, result) = call_once(layer, request, sse(&[], stream));
    let mut body = task::spawn(result.unwrap().into_body());
    assert_eq!(next_data(&mut body), TEXT_DELTA);
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(1)).await;
        send(&feed, PING);
        assert_eq!(next_data(&mut body), PING);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    send(&feed, PING);
    // The ping that came at the deadline is passed on, then the failure.
    assert_eq!(next_data(&mut body), PING);
    let error = next_error(&mut body);
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::Timeout, Phase::MidStream)]
    );
    drop(feed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_timeout_is_reset_by_content() {
    let (request, outcomes) = hooked(ANTHROPIC);
    let layer = ClassifyLayer::new().stream_idle_timeout(Duration::from_secs(30));
    let (feed, stream) = ChannelBody::new();
    send(&feed, MESSAGE_START);
    let (_, result) = call_once(layer, request, sse(&[], stream));
    let mut body = task::spawn(result.unwrap().into_body());
    next_data(&mut body);
    assert_pending!(poll_frame(&mut body));

    // The first content at 20 s, the next at 45 s.
    for wait in [20, 25] {
        tokio::time::advance(Duration::from_secs(wait)).await;
        send(&feed, TEXT_DELTA);
        assert_eq!(next_data(&mut body), TEXT_DELTA);
        assert_pending!(poll_frame(&mut body));
    }

    // 60 s since the start, 40 s since the first content, 15 s since the
    // last: still alive (the timer set at the first content came and was
    // moved on to the last content's deadline).
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_pending!(poll_frame(&mut body));
    assert_eq!(seen(&outcomes), []);

    // 29 s since the last content, then 30 s.
    tokio::time::advance(Duration::from_secs(14)).await;
    assert!(!body.is_woken());
    assert_pending!(poll_frame(&mut body));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(body.is_woken());
    let error = next_error(&mut body);
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.classification().phase(), Phase::MidStream);
    assert!(!error.retryable());
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::Timeout, Phase::MidStream)]
    );
    drop(feed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_idle_timeout_of_duration_max_never_fires_and_never_panics() {
    let (request, outcomes) = hooked(ANTHROPIC);
    let layer = ClassifyLayer::new().stream_idle_timeout(Duration::MAX);
    let (feed, stream) = ChannelBody::new();
    send(&feed, MESSAGE_START);
    let (_, result) = call_once(layer, request, sse(&[], stream));
    let mut body = task::spawn(result.unwrap().into_body());
    next_data(&mut body);
    // Content resets the timer: `now + Duration::MAX` must not overflow.
    send(&feed, TEXT_DELTA);
    assert_eq!(next_data(&mut body), TEXT_DELTA);
    tokio::time::advance(Duration::from_secs(365 * 86_400)).await;
    send(&feed, PING);
    assert_eq!(next_data(&mut body), PING);
    assert_pending!(poll_frame(&mut body));
    assert_eq!(seen(&outcomes), []);
    drop(feed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stream_without_terminal_event_is_incomplete_unless_require_terminal_event_is_off() {
    // Required (the default): the end without `[DONE]` is a failure.
    let (request, outcomes) = hooked(OPENAI_CHAT);
    let answer = sse(
        &[("x-request-id", "req_cut")],
        ChannelBody::of(&[CHAT_CONTENT]),
    );
    let (_, result) = call_once(ClassifyLayer::new(), request, answer);
    let mut body = task::spawn(result.unwrap().into_body());
    assert_eq!(next_data(&mut body), CHAT_CONTENT);
    let error = next_error(&mut body);
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    assert_eq!(error.classification().phase(), Phase::MidStream);
    assert_eq!(error.classification().request_id(), Some("req_cut"));
    assert!(!error.retryable());
    assert_ended(&mut body);
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::StreamIncomplete, Phase::MidStream)]
    );

    // Not required: the same stream completes.
    let (request, outcomes) = hooked(OPENAI_CHAT);
    let answer = sse(&[], ChannelBody::of(&[CHAT_CONTENT]));
    let layer = ClassifyLayer::new().require_terminal_event(false);
    let (_, result) = call_once(layer, request, answer);
    let mut body = task::spawn(result.unwrap().into_body());
    assert_eq!(next_data(&mut body), CHAT_CONTENT);
    assert_ended(&mut body);
    assert_eq!(seen(&outcomes), [Seen::Completed]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn require_terminal_event_off_still_tells_keep_alives_from_content() {
    // A role-only delta is not content in OpenAI's dialect, whether or not the
    // terminal event is required: an error after it was never seen by the
    // caller, so it may be retried.
    let error_chunk: &[u8] =
        b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n";
    for require in [true, false] {
        let layer = ClassifyLayer::new().require_terminal_event(require);
        let answer = sse(&[], ChannelBody::of(&[CHAT_ROLE_ONLY, error_chunk]));
        let (_, result) = call_once(layer, request(OPENAI_CHAT), answer);
        let mut body = task::spawn(result.unwrap().into_body());
        next_data(&mut body);
        assert!(!body.content_seen(), "require_terminal_event({require})");
        next_data(&mut body);
        let error = next_error(&mut body);
        assert_eq!(error.kind(), ErrorKind::ServerError);
        assert_eq!(
            error.classification().phase(),
            Phase::AfterHeaders,
            "require_terminal_event({require})"
        );
        assert!(error.retryable(), "require_terminal_event({require})");
    }
}

// ---------------------------------------------------------------------------
// Service errors and composition.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn service_error_from_io_is_classified_with_provider_set() {
    let (mut service, mut handle) =
        mock::spawn_layer::<Req, Response<Full<Bytes>>, _>(ClassifyLayer::new());
    let (request, outcomes) = hooked(ANTHROPIC);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request));
    let (_, respond) = assert_ready!(handle.poll_request()).unwrap();
    respond.send_error(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset by peer",
    ));
    let error = assert_ready_err!(future.poll());

    let c = error.classification();
    assert_eq!(c.kind(), ErrorKind::Transport);
    assert_eq!(c.phase(), Phase::BeforeHeaders);
    assert!(c.retryable());
    assert_eq!(c.provider(), Provider::Anthropic);
    assert!(error.response_head().is_none());
    let source = error.source().unwrap().downcast_ref::<io::Error>().unwrap();
    assert_eq!(source.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::Transport, Phase::BeforeHeaders)]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn layer_is_cheap_to_clone_and_layering_twice_works() {
    fn is_copy<T: Copy + Send + Sync + 'static>(_: &T) {}
    let layer = ClassifyLayer::new().error_body_limit(8);
    is_copy(&layer);
    let twice = |mock| {
        ServiceBuilder::new()
            .layer(layer)
            .layer(layer)
            .service(mock)
    };

    // An error status: classified by the inner layer, passed through by the
    // outer one unchanged, reported once.
    let (mut service, mut handle) = mock::spawn_with::<Req, Response<Full<Bytes>>, _, _>(twice);
    let (request, outcomes) = hooked(ANTHROPIC);
    handle.allow(2);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request));
    let (received, respond) = assert_ready!(handle.poll_request()).unwrap();
    assert_eq!(
        received.extensions().get::<RequestMeta>().unwrap().provider,
        Provider::Anthropic
    );
    respond.send_response(response(
        529,
        &[("request-id", "req_2x")],
        Full::new(Bytes::from_static(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )),
    ));
    let error = assert_ready_err!(future.poll());
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert_eq!(error.classification().request_id(), Some("req_2x"));
    assert_eq!(error.body().len(), 8);
    assert!(error.body_truncated());
    assert_eq!(
        seen(&outcomes),
        [Seen::Failed(ErrorKind::Overloaded, Phase::AfterHeaders)]
    );

    // A clean stream through both layers: bytes intact, completed once.
    let (request, outcomes) = hooked(OPENAI_CHAT);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request));
    let (_, respond) = assert_ready!(handle.poll_request()).unwrap();
    respond.send_response(sse(
        &[],
        Full::new(Bytes::from([CHAT_CONTENT, CHAT_DONE].concat())),
    ));
    let response = assert_ready_ok!(future.poll());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, [CHAT_CONTENT, CHAT_DONE].concat());
    assert_eq!(seen(&outcomes), [Seen::Completed]);
}
