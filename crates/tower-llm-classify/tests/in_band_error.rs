#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! An in-band error event (OpenAI's `data: {"error": …}`, Anthropic's
//! `event: error`, Ollama's `{"error": …}` line) when a transcript is kept:
//! the event never reaches the caller, the good content before it does
//! (also from the frame the event shares), and the body ends with the
//! typed error. Without a transcript the event is passed on, then the
//! body fails, as before.

mod support;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use tower::ServiceExt;
use tower_llm_classify::stream::{CaptureTranscript, Dialect, StreamTranscript, Transcript};
use tower_llm_classify::{ClassifyLayer, ErrorKind, LlmError, Phase};

use support::{sdk_text, sse_events, stream_fixtures};

/// A body of these frames, always ready.
#[derive(Debug)]
struct Frames(VecDeque<Bytes>);

impl Frames {
    fn of(frames: &[&[u8]]) -> Frames {
        Frames(frames.iter().map(|f| Bytes::copy_from_slice(f)).collect())
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
    }
}

const OPENAI_CHAT: &str = "https://api.openai.com/v1/chat/completions";
const ANTHROPIC: &str = "https://api.anthropic.com/v1/messages";
const OLLAMA: &str = "http://localhost:11434/api/chat";

const ROLE: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1795435200,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const HELLO: &[u8] =
    b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello, \"}}]}\n\n";
const WORLD: &[u8] =
    b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"wor\"}}]}\n\n";
const OPENAI_ERROR: &[u8] = b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n";

const MESSAGE_START: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const TEXT_DELTA: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Here is \"}}\n\n";
const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";
const ANTHROPIC_ERROR: &[u8] = b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";

const ONCE: &[u8] = b"{\"model\":\"llama3.2\",\"created_at\":\"2026-11-23T12:00:01.102Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Once\"},\"done\":false}\n";
const UPON: &[u8] = b"{\"model\":\"llama3.2\",\"created_at\":\"2026-11-23T12:00:01.131Z\",\"message\":{\"role\":\"assistant\",\"content\":\" upon\"},\"done\":false}\n";
const OLLAMA_ERROR: &[u8] =
    b"{\"error\":\"an error was encountered while running the model: unexpected EOF\"}\n";

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

/// What the caller of a stream answering `uri` with `frames` reads: the
/// bytes, in the frames it is handed, and the body's error.
struct Read {
    frames: Vec<Bytes>,
    error: Option<LlmError>,
}

impl Read {
    fn bytes(&self) -> Vec<u8> {
        self.frames.concat()
    }

    fn error(&self) -> &LlmError {
        self.error.as_ref().expect("the body failed")
    }

    fn transcript(&self) -> Transcript {
        self.error()
            .extensions()
            .get::<StreamTranscript>()
            .expect("the error carries the transcript")
            .snapshot()
    }
}

async fn read_stream(uri: &str, capture: bool, content_type: &'static str, frames: Frames) -> Read {
    let frames = std::sync::Mutex::new(Some(frames));
    let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(frames.lock().unwrap().take().unwrap());
        response
            .headers_mut()
            .insert("content-type", http::HeaderValue::from_static(content_type));
        async move { Ok::<_, io::Error>(response) }
    });
    let response = tower::ServiceBuilder::new()
        .layer(ClassifyLayer::new())
        .service(upstream)
        .oneshot(request(uri, capture))
        .await
        .unwrap();
    let mut body = std::pin::pin!(response.into_body());
    let mut read = Read {
        frames: Vec::new(),
        error: None,
    };
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        match frame {
            Ok(frame) => read.frames.push(frame.into_data().unwrap()),
            Err(error) => {
                assert!(read.error.is_none(), "one error");
                read.error = Some(error);
            }
        }
    }
    assert!(body.is_end_stream());
    read
}

fn sse(frames: &[&[u8]]) -> (&'static str, Frames) {
    ("text/event-stream", Frames::of(frames))
}

/// Whether the caller's SDK, reading these bytes of a stream of
/// `dialect`, is handed an error event: an SSE event dispatched (ended by
/// its blank line) named `error` or whose JSON has an `error` or is of
/// type `error`; an NDJSON line ended by its newline with an `error`.
fn sdk_sees_an_error(dialect: Dialect, bytes: &[u8]) -> bool {
    let is_error = |data: &str| {
        serde_json::from_str::<serde_json::Value>(data).is_ok_and(|value| {
            value.get("error").is_some_and(|e| !e.is_null()) || value["type"] == "error"
        })
    };
    let text = std::str::from_utf8(bytes).unwrap();
    match dialect {
        Dialect::OllamaNdjson => text
            .split_inclusive('\n')
            .any(|line| line.ends_with('\n') && is_error(line)),
        _ => sse_events(text)
            .iter()
            .any(|(name, data)| name.as_deref() == Some("error") || is_error(data)),
    }
}

/// Where the first error event of `body` starts, if it has one: the end
/// of the event (SSE) or line (NDJSON) before it.
fn error_event_start(dialect: Dialect, body: &str) -> Option<usize> {
    let separator = match dialect {
        Dialect::OllamaNdjson => "\n",
        _ => "\n\n",
    };
    let mut start = 0;
    for (at, _) in body.match_indices(separator) {
        let end = at + separator.len();
        if sdk_sees_an_error(dialect, &body.as_bytes()[start..end]) {
            return Some(start);
        }
        start = end;
    }
    None
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_a_transcript_an_openai_error_event_after_content_is_withheld_and_the_body_fails_typed()
 {
    let (content_type, frames) = sse(&[ROLE, HELLO, OPENAI_ERROR]);
    let read = read_stream(OPENAI_CHAT, true, content_type, frames).await;
    assert_eq!(read.bytes(), [ROLE, HELLO].concat());
    assert_eq!(read.error().kind(), ErrorKind::ServerError);
    assert_eq!(read.error().classification().phase(), Phase::MidStream);
    let t = read.transcript();
    assert_eq!(t.text(), "Hello, ");
    assert_eq!(t.bytes(), read.bytes().len() as u64);
    assert_eq!(
        t.last_event_end(),
        t.bytes(),
        "the caller holds whole events"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_openai_error_event_sharing_a_frame_with_content_is_cut_off_and_the_content_delivered() {
    let shared = [HELLO, WORLD, OPENAI_ERROR].concat();
    let (content_type, frames) = sse(&[ROLE, &shared]);
    let read = read_stream(OPENAI_CHAT, true, content_type, frames).await;
    assert_eq!(read.frames, [ROLE, &[HELLO, WORLD].concat()[..]]);
    assert_eq!(read.error().kind(), ErrorKind::ServerError);
    let t = read.transcript();
    assert_eq!(t.text(), "Hello, wor");
    assert_eq!(t.bytes(), read.bytes().len() as u64);
    assert_eq!(t.last_event_end(), t.bytes());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_anthropic_error_event_after_content_is_withheld_alone_or_sharing_a_frame() {
    let (content_type, frames) = sse(&[MESSAGE_START, TEXT_DELTA, ANTHROPIC_ERROR]);
    let read = read_stream(ANTHROPIC, true, content_type, frames).await;
    assert_eq!(read.bytes(), [MESSAGE_START, TEXT_DELTA].concat());
    assert_eq!(read.error().kind(), ErrorKind::Overloaded);
    assert_eq!(read.error().classification().phase(), Phase::MidStream);
    assert_eq!(read.transcript().text(), "Here is ");

    let shared = [TEXT_DELTA, PING, ANTHROPIC_ERROR].concat();
    let (content_type, frames) = sse(&[MESSAGE_START, &shared]);
    let read = read_stream(ANTHROPIC, true, content_type, frames).await;
    assert_eq!(
        read.frames,
        [MESSAGE_START, &[TEXT_DELTA, PING].concat()[..]]
    );
    assert_eq!(read.error().kind(), ErrorKind::Overloaded);
    let t = read.transcript();
    assert_eq!(t.text(), "Here is ");
    assert_eq!(t.bytes(), read.bytes().len() as u64);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_ollama_error_line_after_content_is_withheld_alone_or_sharing_a_frame() {
    let ndjson = "application/x-ndjson";
    let read = read_stream(
        OLLAMA,
        true,
        ndjson,
        Frames::of(&[ONCE, UPON, OLLAMA_ERROR]),
    )
    .await;
    assert_eq!(read.bytes(), [ONCE, UPON].concat());
    assert_eq!(read.error().kind(), ErrorKind::ServerError);
    assert_eq!(read.transcript().text(), "Once upon");

    let shared = [UPON, OLLAMA_ERROR].concat();
    let read = read_stream(OLLAMA, true, ndjson, Frames::of(&[ONCE, &shared])).await;
    assert_eq!(read.frames, [ONCE, UPON]);
    assert_eq!(read.error().kind(), ErrorKind::ServerError);
    let t = read.transcript();
    assert_eq!(t.text(), "Once upon");
    assert_eq!(t.bytes(), read.bytes().len() as u64);
    assert_eq!(t.last_event_end(), t.bytes());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_error_event_alone_before_content_is_withheld_and_stays_retryable() {
    let (content_type, frames) = sse(&[ROLE, OPENAI_ERROR]);
    let read = read_stream(OPENAI_CHAT, true, content_type, frames).await;
    assert_eq!(read.bytes(), ROLE);
    assert_eq!(read.error().classification().phase(), Phase::AfterHeaders);
    assert!(read.error().retryable());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_a_transcript_the_error_event_is_passed_on_then_the_body_fails() {
    let shared = [WORLD, OPENAI_ERROR].concat();
    let (content_type, frames) = sse(&[ROLE, HELLO, &shared]);
    let read = read_stream(OPENAI_CHAT, false, content_type, frames).await;
    assert_eq!(read.bytes(), [ROLE, HELLO, WORLD, OPENAI_ERROR].concat());
    assert_eq!(read.error().kind(), ErrorKind::ServerError);
    assert!(
        read.error()
            .extensions()
            .get::<StreamTranscript>()
            .is_none()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_error_event_split_across_frames_has_its_second_frame_withheld() {
    // The caller holds the start of the event, which its SDK does not
    // dispatch; the transcript says the caller holds part of an event.
    let (start, end) = ANTHROPIC_ERROR.split_at(20);
    let first = [TEXT_DELTA, start].concat();
    let (content_type, frames) = sse(&[MESSAGE_START, &first, end]);
    let read = read_stream(ANTHROPIC, true, content_type, frames).await;
    assert_eq!(read.frames, [MESSAGE_START, &first[..]]);
    assert!(!sdk_sees_an_error(Dialect::Anthropic, &read.bytes()));
    let t = read.transcript();
    assert_eq!(t.bytes(), read.bytes().len() as u64);
    assert_eq!(t.bytes() - t.last_event_end(), start.len() as u64);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn for_every_fixture_with_an_error_event_and_every_cut_in_two_the_caller_gets_what_came_before_it_and_never_the_event()
 {
    let mut after_content = 0;
    for fixture in stream_fixtures() {
        let dialect = fixture.dialect();
        if !matches!(
            dialect,
            Dialect::OpenAiChat | Dialect::Anthropic | Dialect::OllamaNdjson
        ) {
            continue;
        }
        let Some(error_start) = error_event_start(dialect, &fixture.body) else {
            continue;
        };
        let body = fixture.body.as_bytes();
        let content_type: &'static str = match dialect {
            Dialect::OllamaNdjson => "application/x-ndjson",
            _ => "text/event-stream",
        };
        for cut in 0..=body.len() {
            let frames = Frames::of(&[&body[..cut], &body[cut..]]);
            let read = read_stream(&fixture.url, true, content_type, frames).await;
            let name = format!("{} cut at {cut}", fixture.name);
            let error = read.error.as_ref().unwrap_or_else(|| panic!("{name}"));
            assert_ne!(error.kind(), ErrorKind::StreamIncomplete, "{name}");
            let bytes = read.bytes();
            assert!(!sdk_sees_an_error(dialect, &bytes), "{name}");
            // Everything before the event; and, when the event began in
            // the first frame but was not complete there, that frame.
            assert!(
                bytes == body[..error_start] || (cut > error_start && bytes == body[..cut]),
                "{name}: {} bytes",
                bytes.len()
            );
            let t = read.transcript();
            assert_eq!(t.bytes(), bytes.len() as u64, "{name}");
            assert_eq!(t.last_event_end(), error_start as u64, "{name}");
            assert_eq!(
                t.text(),
                sdk_text(dialect, &fixture.body[..error_start]),
                "{name}"
            );
        }
        after_content += usize::from(!sdk_text(dialect, &fixture.body[..error_start]).is_empty());
    }
    assert!(
        after_content >= 3,
        "only {after_content} fixtures fail after content"
    );
}
