//! Time to first content, read once: with Classify below, the circuit
//! reads Classify's `StreamProgress` after each frame instead of scanning
//! the stream again; without it (no Classify, or its stream scanning off)
//! it scans the stream itself. `tower_test::mock` upstreams, paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceExt};
use tower_llm_circuit::{CircuitConfig, CircuitLayer, KeySnapshot, WindowKind};
use tower_llm_classify::ClassifyLayer;
use tower_llm_classify::stream::StreamProgress;
use tower_test::mock;

const ROLE: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
const CONTENT: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

/// A body the test feeds frame by frame; it ends when the sender is dropped.
struct Fed(mpsc::UnboundedReceiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|data| Ok(Frame::data(data))))
    }
}

fn fed() -> (mpsc::UnboundedSender<Bytes>, Fed) {
    let (frames, receiver) = mpsc::unbounded_channel();
    (frames, Fed(receiver))
}

fn event_stream<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

/// Every call whose content starts later than 5 s is slow; one slow call
/// is enough to say so in the window.
fn layer() -> CircuitLayer {
    CircuitLayer::new(
        CircuitConfig::builder()
            .window(WindowKind::Count(10))
            .minimum_calls(10)
            .consecutive_failures(None)
            .slow_calls(Duration::from_secs(600), 100.0)
            .slow_first_content(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
}

fn stream_request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::from(
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        ))
        .unwrap()
}

fn only_key(layer: &CircuitLayer) -> KeySnapshot {
    let mut keys = layer.handle().snapshot();
    assert_eq!(keys.len(), 1);
    keys.remove(0)
}

/// Feeds the answer's frames, each after its wait, then `[DONE]` and its
/// end, reading the caller's body frame by frame as a caller would.
async fn read_through<B>(
    response: Response<B>,
    frames: mpsc::UnboundedSender<Bytes>,
    plan: &[(Duration, &'static [u8])],
) where
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut body = response.into_body();
    for (wait, frame) in plan.iter().chain([&(Duration::ZERO, DONE)]) {
        tokio::time::advance(*wait).await;
        frames.send(Bytes::from_static(frame)).unwrap();
        let _ = body.frame().await.unwrap().unwrap();
    }
    drop(frames);
    assert!(body.frame().await.is_none());
}

/// A `StreamProgress` as Classify publishes it, and the body whose reading
/// makes Classify's scan see the first content: the test decides when.
async fn classify_progress() -> (
    StreamProgress,
    impl Body<Data = Bytes, Error = tower_llm_classify::LlmError> + Unpin,
) {
    let (upstream, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    handle.allow(1);
    let call = ClassifyLayer::new()
        .layer(upstream)
        .oneshot(stream_request());
    let answer = async {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(event_stream(Full::from(CONTENT)));
    };
    let (response, ()) = tokio::join!(call, answer);
    let response = response.unwrap();
    let progress = response.extensions().get::<StreamProgress>().cloned();
    (
        progress.expect("Classify publishes its progress"),
        response.into_body(),
    )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn first_content_is_read_from_classify_progress_not_rescanned() {
    let layer = layer();
    let (progress, mut scanned_by_classify) = classify_progress().await;
    let (upstream, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<Fed>>();
    handle.allow(1);
    let mut service = layer.layer(upstream);
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .unwrap();
    let call = service.call(stream_request());
    let (frames, body) = fed();
    let (_, send) = handle.next_request().await.unwrap();
    let mut answer = event_stream(body);
    answer.extensions_mut().insert(progress.clone());
    send.send_response(answer);
    let response = call.await.unwrap();

    let mut body = response.into_body();
    // A content event in the bytes after 1 s; Classify has not said so.
    tokio::time::advance(Duration::from_secs(1)).await;
    frames.send(Bytes::from_static(CONTENT)).unwrap();
    let _ = body.frame().await.unwrap().unwrap();
    // Classify says so at 8 s, with the next frame.
    tokio::time::advance(Duration::from_secs(7)).await;
    let _ = scanned_by_classify.frame().await.unwrap().unwrap();
    assert!(progress.content_seen());
    frames.send(Bytes::from_static(KEEP_ALIVE)).unwrap();
    let _ = body.frame().await.unwrap().unwrap();
    drop(frames);
    assert!(body.frame().await.is_none());

    // The content started when Classify said, not when the bytes did: had
    // the circuit scanned the stream itself, it would have seen it at 1 s.
    let key = only_key(&layer);
    assert_eq!((key.totals.calls, key.totals.slow), (1, 1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_classify_below_a_stream_is_timed_to_its_first_content_event() {
    let layer = layer();
    let (upstream, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<Fed>>();
    handle.allow(2);
    let service = layer.layer(ClassifyLayer::new().layer(upstream));
    // The content 8 s after the head is slow; 1 s after it is not (the
    // count of slow calls stays at one).
    for (gap, slow) in [(Duration::from_secs(8), 1), (Duration::from_secs(1), 1)] {
        let call = service.clone().oneshot(stream_request());
        let (frames, body) = fed();
        let answer = async {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(event_stream(body));
        };
        let (response, ()) = tokio::join!(call, answer);
        let response = response.unwrap();
        assert!(response.extensions().get::<StreamProgress>().is_some());
        // The role chunk at once (not content), the content `gap` later.
        read_through(response, frames, &[(Duration::ZERO, ROLE), (gap, CONTENT)]).await;
        assert_eq!(only_key(&layer).totals.slow, slow);
    }
    assert_eq!(only_key(&layer).totals.calls, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_classify_stream_scanning_off_the_circuit_scans_the_stream_itself() {
    let layer = layer();
    let (upstream, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<Fed>>();
    handle.allow(1);
    let service = layer.layer(ClassifyLayer::new().scan_streams(false).layer(upstream));
    let call = service.oneshot(stream_request());
    let (frames, body) = fed();
    let answer = async {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(event_stream(body));
    };
    let (response, ()) = tokio::join!(call, answer);
    let response = response.unwrap();
    assert!(response.extensions().get::<StreamProgress>().is_none());
    // The role chunk at once is data but not content: the content 8 s
    // later makes the call slow only if the stream is read for events.
    read_through(
        response,
        frames,
        &[(Duration::ZERO, ROLE), (Duration::from_secs(8), CONTENT)],
    )
    .await;
    let key = only_key(&layer);
    assert_eq!((key.totals.calls, key.totals.slow), (1, 1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_classify_below_the_circuit_scans_the_stream_itself() {
    let layer = layer();
    let (upstream, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<Fed>>();
    handle.allow(2);
    let service = layer.layer(upstream);
    // The content 8 s after the head is slow; 1 s after it is not (the
    // count of slow calls stays at one).
    for (gap, slow) in [(Duration::from_secs(8), 1), (Duration::from_secs(1), 1)] {
        let call = service.clone().oneshot(stream_request());
        let (frames, body) = fed();
        let answer = async {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(event_stream(body));
        };
        let (response, ()) = tokio::join!(call, answer);
        read_through(
            response.unwrap(),
            frames,
            &[
                (Duration::ZERO, KEEP_ALIVE),
                (Duration::ZERO, ROLE),
                (gap, CONTENT),
            ],
        )
        .await;
        assert_eq!(only_key(&layer).totals.slow, slow);
    }
}
