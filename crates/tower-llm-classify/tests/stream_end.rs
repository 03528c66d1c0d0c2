#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! How a stream ends through `ClassifyLayer`: an answer whose finish was
//! delivered is complete without its terminal event, one without its
//! finish is not; a malformed event fails the stream, the frame that
//! completes it is withheld, and what the layer reports is what was
//! handed on.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use tokio_test::task;
use tower::ServiceExt;
use tower_llm_classify::stream::{
    CaptureTranscript, OutcomeHook, ResponseBody, StreamOutcome, StreamProgress, StreamTranscript,
};
use tower_llm_classify::{ClassifyLayer, ErrorKind, LlmError, Phase};

use support::stream_fixtures;

/// A body of these frames, always ready, then its end.
#[derive(Debug)]
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// How the layer's outcome hook saw the call end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Completed,
    Failed(ErrorKind, Phase),
    Other,
}

struct Call {
    response: Response<ResponseBody<Frames>>,
    outcomes: Arc<Mutex<Vec<Seen>>>,
}

async fn call(url: &str, content_type: &str, chunks: &[&[u8]]) -> Call {
    let frames = Frames(chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect());
    let frames = Mutex::new(Some(frames));
    let content_type = http::HeaderValue::from_str(content_type).unwrap();
    let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(frames.lock().unwrap().take().unwrap());
        response
            .headers_mut()
            .insert("content-type", content_type.clone());
        async move { Ok::<_, std::io::Error>(response) }
    });
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let sink = outcomes.clone();
    let mut request = Request::post(url)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true}"#,
        )))
        .unwrap();
    request
        .extensions_mut()
        .insert(OutcomeHook::new(move |outcome: StreamOutcome<'_>| {
            sink.lock().unwrap().push(match outcome {
                StreamOutcome::Completed => Seen::Completed,
                StreamOutcome::Failed(c) => Seen::Failed(c.kind(), c.phase()),
                _ => Seen::Other,
            });
        }));
    request.extensions_mut().insert(CaptureTranscript);
    let response = tower::ServiceBuilder::new()
        .layer(ClassifyLayer::new())
        .service(upstream)
        .oneshot(request)
        .await
        .unwrap();
    Call { response, outcomes }
}

/// Every frame of the body, then its error if it failed.
fn read_all<B: Body<Data = Bytes>>(body: B) -> (Vec<Bytes>, Option<B::Error>) {
    let mut body = task::spawn(body);
    let mut frames = Vec::new();
    loop {
        match body.enter(|cx, body| body.poll_frame(cx)) {
            Poll::Ready(Some(Ok(frame))) => frames.push(frame.into_data().ok().unwrap()),
            Poll::Ready(Some(Err(error))) => return (frames, Some(error)),
            Poll::Ready(None) => return (frames, None),
            Poll::Pending => panic!("the frames are always ready"),
        }
    }
}

fn fixture_body(name: &str) -> String {
    stream_fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
        .body
}

const OPENAI_CHAT: &str = "https://api.openai.com/v1/chat/completions";
const ANTHROPIC: &str = "https://api.anthropic.com/v1/messages";
const OLLAMA: &str = "http://localhost:11434/api/chat";
const SSE: &str = "text/event-stream";

/// The events of an SSE body, each with its blank line.
fn events(body: &str) -> Vec<String> {
    body.split_inclusive("\n\n").map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------
// Complete is complete.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_openai_stream_that_delivered_its_finish_and_usage_is_complete_without_done() {
    let body = fixture_body("openai__stream_clean_done_with_usage.toml");
    let without_done = body.replace("data: [DONE]\n\n", "");
    let Call { response, outcomes } = call(OPENAI_CHAT, SSE, &[without_done.as_bytes()]).await;
    let (frames, error) = read_all(response.into_body());
    assert!(error.is_none(), "{error:?}");
    assert_eq!(frames.concat(), without_done.as_bytes());
    assert_eq!(*outcomes.lock().unwrap(), [Seen::Completed]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_openai_stream_cut_between_its_finish_and_the_usage_it_announced_is_incomplete() {
    // The chunks say `"usage": null`: a usage chunk follows the finish.
    let body = fixture_body("openai__stream_clean_done_with_usage.toml");
    let events = events(&body);
    let through_finish: String = events[..4].concat();
    assert!(through_finish.contains("\"finish_reason\":\"stop\""));
    let Call { response, outcomes } = call(OPENAI_CHAT, SSE, &[through_finish.as_bytes()]).await;
    let (_, error) = read_all(response.into_body());
    let error: LlmError = error.unwrap();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    assert_eq!(
        *outcomes.lock().unwrap(),
        [Seen::Failed(ErrorKind::StreamIncomplete, Phase::MidStream)]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_finish_without_usage_announced_is_complete_without_done() {
    for fixture in [
        "lm_studio__stream_clean_done.toml",
        "openai__stream_content_mentions_error_escaped.toml",
    ] {
        let body = fixture_body(fixture).replace("data: [DONE]\n\n", "");
        let Call { response, outcomes } = call(OPENAI_CHAT, SSE, &[body.as_bytes()]).await;
        let (_, error) = read_all(response.into_body());
        assert!(error.is_none(), "{fixture}: {error:?}");
        assert_eq!(*outcomes.lock().unwrap(), [Seen::Completed], "{fixture}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn content_after_a_finish_is_another_choice_still_running() {
    let first_done: &[u8] =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    let second_more: &[u8] =
        b"data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"still going\"},\"finish_reason\":null}]}\n\n";
    let Call { response, .. } = call(OPENAI_CHAT, SSE, &[first_done, second_more]).await;
    let (_, error) = read_all(response.into_body());
    assert_eq!(error.unwrap().kind(), ErrorKind::StreamIncomplete);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_anthropic_stream_that_delivered_its_stop_reason_is_complete_without_message_stop() {
    let body = fixture_body("anthropic__stream_clean.toml");
    let cut = body.replace(
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        "",
    );
    assert_ne!(cut, body);
    let Call { response, outcomes } = call(ANTHROPIC, SSE, &[cut.as_bytes()]).await;
    let (_, error) = read_all(response.into_body());
    assert!(error.is_none(), "{error:?}");
    assert_eq!(*outcomes.lock().unwrap(), [Seen::Completed]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_that_ends_without_its_finish_is_still_incomplete() {
    for (fixture, url) in [
        ("openai__stream_eof_without_done.toml", OPENAI_CHAT),
        (
            "lm_studio__stream_eof_without_finish_reason.toml",
            OPENAI_CHAT,
        ),
        ("anthropic__stream_eof_without_message_stop.toml", ANTHROPIC),
    ] {
        let body = fixture_body(fixture);
        let Call { response, outcomes } = call(url, SSE, &[body.as_bytes()]).await;
        let (_, error) = read_all(response.into_body());
        assert_eq!(
            error.unwrap().kind(),
            ErrorKind::StreamIncomplete,
            "{fixture}"
        );
        assert_eq!(
            *outcomes.lock().unwrap(),
            [Seen::Failed(ErrorKind::StreamIncomplete, Phase::MidStream)],
            "{fixture}"
        );
    }
}

// ---------------------------------------------------------------------------
// Malformed events.
// ---------------------------------------------------------------------------

const ROLE: &[u8] =
    b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const HELLO: &[u8] =
    b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n";
const MORE: &[u8] =
    b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\n\n";
const GARBLED: &[u8] =
    b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" wor\n\n";

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_malformed_event_fails_the_stream_and_the_frame_that_completes_it_is_withheld() {
    let withheld = [MORE, GARBLED].concat();
    let Call { response, outcomes } = call(OPENAI_CHAT, SSE, &[ROLE, HELLO, &withheld]).await;
    let transcript = response
        .extensions()
        .get::<StreamTranscript>()
        .cloned()
        .unwrap();
    let (frames, error) = read_all(response.into_body());
    assert_eq!(
        frames,
        [ROLE, HELLO],
        "the caller's SDK never sees the garbled event"
    );
    let error = error.unwrap();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    assert_eq!(error.classification().phase(), Phase::MidStream);
    assert!(
        error
            .classification()
            .message()
            .unwrap()
            .contains("malformed event")
    );
    assert!(!error.retryable());
    assert_eq!(
        *outcomes.lock().unwrap(),
        [Seen::Failed(ErrorKind::StreamIncomplete, Phase::MidStream)]
    );
    let t = transcript.snapshot();
    assert_eq!(
        t.text(),
        "Hello",
        "the withheld frame's text is not the caller's"
    );
    assert_eq!(t.bytes(), (ROLE.len() + HELLO.len()) as u64);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_malformed_first_frame_is_withheld_with_its_content_and_may_be_retried() {
    let first = [ROLE, HELLO, GARBLED].concat();
    let Call { response, outcomes } = call(OPENAI_CHAT, SSE, &[&first]).await;
    let progress = response
        .extensions()
        .get::<StreamProgress>()
        .cloned()
        .unwrap();
    let (frames, error) = read_all(response.into_body());
    assert!(frames.is_empty());
    let error = error.unwrap();
    assert_eq!(error.classification().phase(), Phase::AfterHeaders);
    assert!(error.retryable(), "no content reached the caller");
    assert!(!progress.content_seen());
    assert_eq!(
        *outcomes.lock().unwrap(),
        [Seen::Failed(
            ErrorKind::StreamIncomplete,
            Phase::AfterHeaders
        )]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_malformed_event_split_across_frames_fails_where_it_ends() {
    let (start, end) = GARBLED.split_at(20);
    let Call { response, .. } = call(OPENAI_CHAT, SSE, &[ROLE, HELLO, start, end, MORE]).await;
    let (frames, error) = read_all(response.into_body());
    assert_eq!(frames, [ROLE, HELLO, start]);
    assert!(
        error
            .unwrap()
            .classification()
            .message()
            .unwrap()
            .contains("malformed")
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn what_the_sdks_do_not_parse_is_not_malformed() {
    let cases: [(&str, &[&[u8]]); 4] = [
        // Several data lines: the SDK joins them into one JSON document.
        (
            OPENAI_CHAT,
            &[ROLE, b"data: {\"choices\":[{\"index\":0,\n", b"data: \"delta\":{\"content\":\"x\"}}]}\n\n", b"data: [DONE]\n\n"],
        ),
        // Empty data.
        (OPENAI_CHAT, &[ROLE, b"data:\n\n", HELLO, b"data: [DONE]\n\n"]),
        // Anthropic's SDKs skip `ping` and events they do not know.
        (
            ANTHROPIC,
            &[
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\n",
                b"event: ping\ndata: pong\n\n",
                b"event: vendor_note\ndata: hello\n\n",
                b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ],
        ),
        // Nothing after the terminal event.
        (OPENAI_CHAT, &[ROLE, HELLO, b"data: [DONE]\n\ndata: trailing junk\n\n"]),
    ];
    for (url, chunks) in cases {
        let Call { response, outcomes } = call(url, SSE, chunks).await;
        let (frames, error) = read_all(response.into_body());
        assert!(error.is_none(), "{chunks:?}: {error:?}");
        assert_eq!(frames.len(), chunks.len());
        assert_eq!(*outcomes.lock().unwrap(), [Seen::Completed]);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_malformed_ollama_line_fails_the_stream() {
    let line: &[u8] = b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n";
    let garbled: &[u8] = b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"cont\n";
    let Call { response, .. } = call(OLLAMA, "application/x-ndjson", &[line, garbled]).await;
    let (frames, error) = read_all(response.into_body());
    assert_eq!(frames, [line]);
    let error = error.unwrap();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    assert_eq!(error.classification().phase(), Phase::MidStream);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_event_cut_by_the_end_of_the_stream_is_judged_as_a_cut_not_as_malformed() {
    let (start, _) = HELLO.split_at(30);
    let Call { response, .. } = call(OPENAI_CHAT, SSE, &[ROLE, start]).await;
    let (_, error) = read_all(response.into_body());
    let error = error.unwrap();
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    assert_eq!(
        error.classification().message(),
        Some("the stream ended without its terminal event")
    );
}

/// A body of one frame whose data is two buffers chained (a `Buf` of
/// several slices, as a body that joins reads may hand out).
#[derive(Debug)]
struct ChainedFrame(Option<bytes::buf::Chain<Bytes, Bytes>>);

impl Body for ChainedFrame {
    type Data = bytes::buf::Chain<Bytes, Bytes>;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_frame_of_several_buffers_is_withheld_whole_with_the_content_of_its_first() {
    use bytes::Buf;
    let data = Bytes::from_static(HELLO).chain(Bytes::from_static(GARBLED));
    let body = Mutex::new(Some(ChainedFrame(Some(data))));
    let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(body.lock().unwrap().take().unwrap());
        response
            .headers_mut()
            .insert("content-type", http::HeaderValue::from_static(SSE));
        async move { Ok::<_, std::io::Error>(response) }
    });
    let request = Request::post(OPENAI_CHAT)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true}"#,
        )))
        .unwrap();
    let response = tower::ServiceBuilder::new()
        .layer(ClassifyLayer::new())
        .service(upstream)
        .oneshot(request)
        .await
        .unwrap();
    let progress = response
        .extensions()
        .get::<StreamProgress>()
        .cloned()
        .unwrap();
    let mut body = task::spawn(response.into_body());
    let error = match body.enter(|cx, body| body.poll_frame(cx)) {
        Poll::Ready(Some(Err(error))) => error,
        other => panic!(
            "expected the error first, got {:?}",
            other.map(|f| f.map(|f| f.map(|f| f.is_data())))
        ),
    };
    assert_eq!(error.classification().phase(), Phase::AfterHeaders);
    assert!(
        !progress.content_seen(),
        "the withheld frame's content is not the caller's"
    );
}
