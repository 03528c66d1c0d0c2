#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The transcript through `ClassifyLayer`: kept only when asked (a request
//! marked `CaptureTranscript`, or the layer option), published in the
//! response's extensions and in a failed body's error, up to date after
//! each frame, and for every real stream fixture the text the caller's SDK
//! shows.

mod support;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio_test::task;
use tower::ServiceExt;
use tower_llm_classify::stream::{
    CaptureTranscript, Dialect, NotContinuable, ResponseBody, StreamTranscript,
};
use tower_llm_classify::{ClassifyLayer, ErrorKind, LlmError, Phase};

use support::{sdk_text, stream_fixtures};

/// A body of these frames (each an `Ok` chunk or an I/O error), always
/// ready.
#[derive(Debug)]
struct Frames(VecDeque<Result<Bytes, io::Error>>);

impl Frames {
    fn of(chunks: &[&[u8]]) -> Frames {
        Frames(
            chunks
                .iter()
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect(),
        )
    }

    fn then_cut(mut self) -> Frames {
        self.0
            .push_back(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")));
        self
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|frame| frame.map(Frame::data)))
    }
}

const OPENAI_CHAT: &str = "https://api.openai.com/v1/chat/completions";

const ROLE: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1795435200,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const HELLO: &[u8] =
    b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello, \"}}]}\n\n";
const WORLD: &[u8] =
    b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"wor\"}}]}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

fn request(uri: &str, capture: bool) -> Request<Full<Bytes>> {
    let mut request = Request::post(uri)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true}"#,
        )))
        .unwrap();
    if capture {
        request.extensions_mut().insert(CaptureTranscript);
    }
    request
}

/// The layer's answer to `request` when the upstream answers with `body`
/// as `content_type`.
async fn answer<B>(
    layer: ClassifyLayer,
    request: Request<Full<Bytes>>,
    content_type: &str,
    body: B,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower_llm_classify::BoxError>,
{
    let body = std::sync::Mutex::new(Some(body));
    let content_type = http::HeaderValue::from_str(content_type).unwrap();
    let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body.lock().unwrap().take().unwrap();
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("content-type", content_type.clone());
        async move { Ok::<_, io::Error>(response) }
    });
    tower::ServiceBuilder::new()
        .layer(layer)
        .service(upstream)
        .oneshot(request)
        .await
        .unwrap()
}

fn next_data<B: Body<Data = Bytes>>(body: &mut task::Spawn<B>) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    match body.enter(|cx, body| body.poll_frame(cx)) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
        other => panic!("expected a data frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_transcript_is_kept_unless_asked() {
    let response = answer(
        ClassifyLayer::new(),
        request(OPENAI_CHAT, false),
        "text/event-stream",
        Frames::of(&[ROLE, HELLO, DONE]),
    )
    .await;
    assert!(response.extensions().get::<StreamTranscript>().is_none());
    assert!(response.body().transcript().is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_marked_capture_transcript_gets_one_in_its_response() {
    let response = answer(
        ClassifyLayer::new(),
        request(OPENAI_CHAT, true),
        "text/event-stream",
        Frames::of(&[ROLE, HELLO, WORLD, DONE]),
    )
    .await;
    let transcript = response
        .extensions()
        .get::<StreamTranscript>()
        .cloned()
        .expect("a marked request's stream carries its transcript");
    response.into_body().collect().await.unwrap();
    let t = transcript.snapshot();
    assert_eq!(t.text(), "Hello, wor");
    assert_eq!(t.id(), Some("chatcmpl-1"));
    assert_eq!(t.created(), Some(1_795_435_200));
    assert!(t.role_sent() && t.is_continuable());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_layer_option_keeps_a_transcript_of_every_stream() {
    let response = answer(
        ClassifyLayer::new().capture_transcripts(true),
        request(OPENAI_CHAT, false),
        "text/event-stream",
        Frames::of(&[ROLE, HELLO, DONE]),
    )
    .await;
    assert!(response.extensions().get::<StreamTranscript>().is_some());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_whole_answer_gets_no_transcript_even_when_asked() {
    let response = answer(
        ClassifyLayer::new().capture_transcripts(true),
        request(OPENAI_CHAT, true),
        "application/json",
        Full::new(Bytes::from_static(b"{\"choices\":[]}")),
    )
    .await;
    assert!(response.extensions().get::<StreamTranscript>().is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_transcript_says_what_each_frame_delivered_when_the_frame_is_handed_up() {
    let response = answer(
        ClassifyLayer::new(),
        request(OPENAI_CHAT, true),
        "text/event-stream",
        Frames::of(&[ROLE, HELLO, WORLD, DONE]),
    )
    .await;
    let transcript = response
        .extensions()
        .get::<StreamTranscript>()
        .cloned()
        .unwrap();
    let mut body = task::spawn(response.into_body());
    let mut delivered = 0;
    for (frame, text) in [(ROLE, ""), (HELLO, "Hello, "), (WORLD, "Hello, wor")] {
        assert_eq!(next_data(&mut body), frame);
        delivered += frame.len() as u64;
        transcript.read(|t| {
            assert_eq!(t.text(), text);
            assert_eq!(t.bytes(), delivered);
            assert_eq!(
                t.last_event_end(),
                delivered,
                "frames end on event boundaries"
            );
        });
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_cut_after_content_fails_with_its_transcript_in_the_error() {
    let (first, rest) = WORLD.split_at(30);
    let response = answer(
        ClassifyLayer::new(),
        request(OPENAI_CHAT, true),
        "text/event-stream",
        Frames::of(&[ROLE, HELLO, first]).then_cut(),
    )
    .await;
    let error: LlmError = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transport);
    assert_eq!(error.classification().phase(), Phase::MidStream);
    let transcript = error
        .extensions()
        .get::<StreamTranscript>()
        .expect("the failed body's error carries the transcript")
        .snapshot();
    assert_eq!(
        transcript.text(),
        "Hello, ",
        "the cut event is not the caller's"
    );
    assert_eq!(
        transcript.last_event_end(),
        (ROLE.len() + HELLO.len()) as u64
    );
    assert_eq!(
        transcript.bytes() - transcript.last_event_end(),
        first.len() as u64,
        "the caller holds part of an event"
    );
    assert!(!rest.is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_in_band_error_fails_with_the_transcript_of_what_came_before_it() {
    let error_chunk: &[u8] = b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n";
    let response = answer(
        ClassifyLayer::new(),
        request(OPENAI_CHAT, true),
        "text/event-stream",
        Frames::of(&[ROLE, HELLO, error_chunk]),
    )
    .await;
    let error = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ServerError);
    let t = error
        .extensions()
        .get::<StreamTranscript>()
        .unwrap()
        .snapshot();
    assert_eq!(t.text(), "Hello, ");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_tool_call_in_progress_is_reported_not_continuable() {
    let tool: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"ci\"}}]}}]}\n\n";
    let response = answer(
        ClassifyLayer::new(),
        request(OPENAI_CHAT, true),
        "text/event-stream",
        Frames::of(&[ROLE, tool]).then_cut(),
    )
    .await;
    let error = response.into_body().collect().await.unwrap_err();
    let t = error
        .extensions()
        .get::<StreamTranscript>()
        .unwrap()
        .snapshot();
    assert_eq!(t.not_continuable(), Some(NotContinuable::ToolCall));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_transcript_of_every_stream_fixture_is_the_text_its_sdk_shows() {
    let mut checked = 0;
    for fixture in stream_fixtures() {
        let dialect = fixture.dialect();
        if !matches!(
            dialect,
            Dialect::OpenAiChat | Dialect::Anthropic | Dialect::OllamaNdjson
        ) {
            continue;
        }
        let response = answer(
            ClassifyLayer::new().provider(fixture.provider),
            request(&fixture.url, true),
            &fixture.headers["content-type"],
            Full::new(Bytes::from(fixture.body.clone())),
        )
        .await;
        let transcript = response
            .extensions()
            .get::<StreamTranscript>()
            .cloned()
            .unwrap();
        let _ = response.into_body().collect().await;
        let expected = sdk_text(dialect, &fixture.body);
        assert_eq!(transcript.snapshot().text(), expected, "{}", fixture.name);
        checked += usize::from(!expected.is_empty());
    }
    assert!(checked >= 12, "only {checked} stream fixtures with text");
}
