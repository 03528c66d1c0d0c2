#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins that a transcript's text is the concatenation of the content
//! deltas the caller's SDK decodes (serde_json, the way the official SDKs
//! read events), however the stream is cut into frames: inside a UTF-8
//! character, inside an escape (`\"`, `\u00e9`, a surrogate pair), inside
//! a line ending — for every real stream fixture, and for generated
//! streams of escapes, multi-byte text and trailing white space, read by
//! the scanner alone and through `ClassifyLayer`'s body; and that keeping
//! the transcript changes nothing the scanner says of those streams.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use tower::{Layer, Service};
use tower_llm_classify::stream::{CaptureTranscript, Dialect, EventScanner, StreamTranscript};
use tower_llm_classify::{ClassifyLayer, Provider};

use support::{StreamFixture, sdk_text, stream_fixtures, synthetic_stream};

/// `stream` cut at `cuts` (indexes into its length).
fn cut(stream: &[u8], cuts: &[Index]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for to in at {
        chunks.push(Bytes::copy_from_slice(&stream[from..to]));
        from = to;
    }
    chunks.push(Bytes::copy_from_slice(&stream[from..]));
    chunks
}

/// The transcript's text after the scanner alone read `chunks`.
fn scanned_text(fixture_like: (&str, Dialect, Provider), chunks: &[Bytes]) -> String {
    let (content_type, dialect, provider) = fixture_like;
    let framing = tower_llm_classify::stream::Framing::from_header_value(
        &http::HeaderValue::from_str(content_type).unwrap(),
    )
    .unwrap();
    let mut scanner = EventScanner::new(framing, dialect, provider).capture_transcript();
    for chunk in chunks {
        scanner.feed(chunk);
    }
    scanner.finish();
    scanner.transcript().unwrap().snapshot().text().to_owned()
}

/// Everything the scanner says of `chunks`: per-chunk flags, the failure,
/// the counts, the end.
fn verdict(mut scanner: EventScanner, chunks: &[Bytes]) -> String {
    let events: Vec<_> = chunks.iter().map(|chunk| scanner.feed(chunk)).collect();
    let error = scanner.error().cloned();
    let counts = (
        scanner.content_events(),
        scanner.content_seen(),
        scanner.is_terminated(),
    );
    let end = scanner.finish();
    format!(
        "{events:?} {error:?} {counts:?} {end:?} {}",
        scanner.finish_seen()
    )
}

/// A body of these frames, always ready.
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

fn now<F: std::future::Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("always ready"),
    }
}

/// The transcript's text after `chunks` went through `ClassifyLayer` as a
/// streamed body read to its end.
fn layered_text(url: &str, content_type: &str, chunks: Vec<Bytes>) -> String {
    let content_type = http::HeaderValue::from_str(content_type).unwrap();
    let mut frames = Some(Frames(chunks.into()));
    let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(frames.take().unwrap());
        response
            .headers_mut()
            .insert("content-type", content_type.clone());
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut service = ClassifyLayer::new().layer(upstream);
    let mut request = Request::post(url)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true}"#,
        )))
        .unwrap();
    request.extensions_mut().insert(CaptureTranscript);
    now(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
    let response = now(service.call(request)).unwrap();
    let transcript = response
        .extensions()
        .get::<StreamTranscript>()
        .cloned()
        .unwrap();
    let mut body = response.into_body();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(_))) = Pin::new(&mut body).poll_frame(&mut cx) {}
    transcript.snapshot().text().to_owned()
}

/// The fixtures whose dialect a transcript reads, and their SDK text.
fn fixtures() -> Vec<(StreamFixture, String)> {
    stream_fixtures()
        .into_iter()
        .filter(|f| {
            matches!(
                f.dialect(),
                Dialect::OpenAiChat | Dialect::Anthropic | Dialect::OllamaNdjson
            )
        })
        .map(|f| {
            let text = sdk_text(f.dialect(), &f.body);
            (f, text)
        })
        .collect()
}

/// Text pieces a provider streams: words, white space at either end,
/// quotes and backslashes, control characters, accents, CJK and emoji
/// (outside the basic plane: a surrogate pair when escaped).
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "Hello",
                " world",
                ", ",
                "\n",
                "\n\n",
                "\t",
                " ",
                "  ",
                "\"quoted\"",
                "C:\\tmp\\",
                "a/b",
                "\u{8}\u{c}\r",
                "\u{1}",
                "é",
                "ñandú ",
                "日本語",
                "😀",
                "👩‍💻",
                "\u{2028}",
                "",
            ][..]
        )
        .prop_map(str::to_owned),
        "\\PC{0,12}",
    ]
}

const SYNTHETIC: [(Dialect, &str, &str); 3] = [
    (
        Dialect::OpenAiChat,
        "text/event-stream",
        "https://api.openai.com/v1/chat/completions",
    ),
    (
        Dialect::Anthropic,
        "text/event-stream",
        "https://api.anthropic.com/v1/messages",
    ),
    (
        Dialect::OllamaNdjson,
        "application/x-ndjson",
        "http://localhost:11434/api/chat",
    ),
];

proptest! {
    #[test]
    fn the_transcript_of_any_chunking_of_a_fixture_stream_is_its_sdk_text(
        which in any::<Index>(),
        cuts in proptest::collection::vec(any::<Index>(), 0..12),
        through_the_layer in any::<bool>(),
    ) {
        let fixtures = fixtures();
        let (fixture, expected) = &fixtures[which.index(fixtures.len())];
        let chunks = cut(fixture.body.as_bytes(), &cuts);
        let content_type = &fixture.headers["content-type"];
        let text = if through_the_layer {
            layered_text(&fixture.url, content_type, chunks)
        } else {
            scanned_text((content_type, fixture.dialect(), fixture.provider), &chunks)
        };
        prop_assert_eq!(&text, expected, "{}", fixture.name);
    }

    #[test]
    fn the_transcript_of_any_chunking_of_escaped_and_multibyte_text_is_its_sdk_text(
        which in 0..SYNTHETIC.len(),
        pieces in proptest::collection::vec(piece(), 1..24),
        cuts in proptest::collection::vec(any::<Index>(), 0..24),
        through_the_layer in any::<bool>(),
    ) {
        let (dialect, content_type, url) = SYNTHETIC[which];
        let stream = synthetic_stream(dialect, &pieces);
        let expected = sdk_text(dialect, &stream);
        prop_assert_eq!(&expected, &pieces.concat());
        let chunks = cut(stream.as_bytes(), &cuts);
        let text = if through_the_layer {
            layered_text(url, content_type, chunks)
        } else {
            scanned_text((content_type, dialect, Provider::Unknown), &chunks)
        };
        prop_assert_eq!(text, expected);
    }

    #[test]
    fn keeping_a_transcript_changes_nothing_the_scanner_says_of_a_stream(
        which in any::<Index>(),
        synthetic in proptest::option::of((0..SYNTHETIC.len(), proptest::collection::vec(piece(), 1..24))),
        cuts in proptest::collection::vec(any::<Index>(), 0..24),
    ) {
        let fixtures = fixtures();
        let (stream, content_type, dialect, provider) = match &synthetic {
            Some((which, pieces)) => {
                let (dialect, content_type, _) = SYNTHETIC[*which];
                (synthetic_stream(dialect, pieces), content_type, dialect, Provider::Unknown)
            }
            None => {
                let (fixture, _) = &fixtures[which.index(fixtures.len())];
                let content_type = fixture.headers["content-type"].as_str();
                (fixture.body.clone(), content_type, fixture.dialect(), fixture.provider)
            }
        };
        let framing = tower_llm_classify::stream::Framing::from_header_value(
            &http::HeaderValue::from_str(content_type).unwrap(),
        )
        .unwrap();
        let chunks = cut(stream.as_bytes(), &cuts);
        let plain = verdict(EventScanner::new(framing, dialect, provider), &chunks);
        let kept = verdict(
            EventScanner::new(framing, dialect, provider).capture_transcript(),
            &chunks,
        );
        prop_assert_eq!(plain, kept);
    }
}
