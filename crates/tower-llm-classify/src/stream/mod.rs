//! Streams: in-band errors, abnormal ends and keep-alives in SSE and NDJSON
//! response bodies.
//!
//! A 200 response can still fail: Anthropic sends `event: error` with
//! `overloaded_error` (anthropic-sdk-python #1918), OpenAI chat sends
//! `data: {"error": …}`, the Responses API `event: error` then
//! `response.failed` (openai/codex #43337), Ollama an `{"error": …}` NDJSON
//! line (ollama's `server/routes.go`); connections drop mid-body
//! (openai-python #2065); streams end without their terminal event; a stall
//! keeps answering keep-alive pings (livekit/agents #6171). [`ResponseBody`]
//! passes the bytes through untouched (but for events the caller's SDK
//! would raise on when the stream fails: a malformed event, and an error
//! event that a continuation may replace; see its docs), recognises all of these, turns them
//! into a classified [`LlmError`](crate::LlmError) body error, and reports
//! the final outcome to an [`OutcomeHook`]. Asked to, it keeps a
//! [`Transcript`] of what the stream delivered (for a layer that continues
//! a broken answer), and [`error_event`] writes a failure as the caller's
//! dialect carries it in a stream.
//!
//! # How a stream ends
//!
//! A stream is complete when its terminal event came (`data: [DONE]`,
//! `message_stop`, `response.completed`, `"done": true`), or when the
//! answer's finish was delivered and the connection then closed cleanly:
//! an OpenAI chat chunk with a `finish_reason` (and, when the chunks'
//! `"usage": null` announced one, the usage chunk after it), an Anthropic
//! `message_delta` with a `stop_reason`. The caller has the whole answer
//! then; failing it would throw that away. A stream that ends without its
//! finish is [`StreamIncomplete`](crate::ErrorKind::StreamIncomplete), as a
//! connection cut mid-answer is, and so is one that ends inside an event.
//!
//! # Malformed events
//!
//! A `data:` line that the caller's SDK parses as JSON (every event of
//! OpenAI's dialects, Anthropic's six Messages events, every Ollama line)
//! and that is not JSON makes the official SDKs raise (openai-python's and
//! anthropic-python's `Stream` call `sse.json()` on it). Such an event
//! fails the stream cleanly rather than being skipped: a skipped event may
//! have carried text, and a hole in an answer is worse than an error that
//! a continuation can repair (the failure happens where the text stops,
//! and the [`Transcript`] says what the caller holds). So:
//!
//! - the frame that completes the malformed event is *not* passed on
//!   (the events before it in that frame go with it), and the body fails
//!   with [`StreamIncomplete`](crate::ErrorKind::StreamIncomplete),
//!   message "a malformed event in the stream";
//! - what the scan reports — the failure's phase, [`ScanEvent::content`],
//!   the transcript — is what the frames passed on delivered (a frame
//!   already handed up is not taken back, so [`StreamProgress`] may have
//!   seen content the caller's SDK never dispatched);
//! - an event is malformed when its data, trimmed, is not opened and closed
//!   by the brackets of a JSON object or array (what a cut, interleaved or
//!   garbled event looks like), or, with a transcript, when the walk of it
//!   finds an object that does not close where it should. A full JSON
//!   validation of every event would cost more than the rest of the scan.
//!   An SSE event whose data spans several `data:` lines (which the SDKs
//!   join) is not judged, empty data is left alone, and nothing after the
//!   terminal event is judged.
//!
//! The event's bytes may have begun in a frame already passed on (an event
//! split across reads): that part has reached the caller, unfinished.

mod body;
mod error_event;
mod keep_first;
mod outcome;
mod progress;
pub(crate) mod scanner;
mod transcript;

pub use body::ResponseBody;
pub use error_event::error_event;
pub use keep_first::KeepFirst;
pub(crate) use outcome::OutcomeGuard;
pub use outcome::{OnOutcome, OutcomeHook, StreamOutcome};
pub use progress::StreamProgress;
pub use scanner::{EventScanner, ScanEvent};
pub use transcript::{CaptureTranscript, NotContinuable, StreamTranscript, TokenUsage, Transcript};

/// The wire protocol of a response stream, which says what is content, what
/// is a keep-alive and how a complete stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// OpenAI Chat Completions (and every OpenAI-compatible server): SSE
    /// `data:` chunks ending with `data: [DONE]`.
    OpenAiChat,
    /// OpenAI Responses API: typed SSE events ending with
    /// `response.completed` or `response.incomplete`; `error` and
    /// `response.failed` are failures.
    OpenAiResponses,
    /// Anthropic Messages: `message_start`, `content_block_delta`, `ping`, …,
    /// ending with `message_stop`; `event: error` is a failure.
    Anthropic,
    /// Ollama's native API: NDJSON lines ending with `"done": true`; an
    /// `{"error": …}` line is a failure.
    OllamaNdjson,
    /// Any other SSE stream: errors are recognised, no terminal event is
    /// required, and every `data:` event counts as content.
    Generic,
}

impl Dialect {
    /// The dialect a request path implies.
    pub fn from_path(path: &str) -> Dialect {
        if path.ends_with("/chat/completions") || path.ends_with("/completions") {
            Dialect::OpenAiChat
        } else if path.ends_with("/responses") {
            Dialect::OpenAiResponses
        } else if path.ends_with("/messages") {
            Dialect::Anthropic
        } else if path.starts_with("/api/chat") || path.starts_with("/api/generate") {
            Dialect::OllamaNdjson
        } else {
            Dialect::Generic
        }
    }

    /// Whether a complete stream ends with a terminal event, so that a stream
    /// ending without one (and without the answer's finish, see
    /// [How a stream ends](self#how-a-stream-ends)) is
    /// [`StreamIncomplete`](crate::ErrorKind::StreamIncomplete).
    pub const fn has_terminal_event(self) -> bool {
        !matches!(self, Dialect::Generic)
    }
}

/// How a response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// Server-sent events (`text/event-stream`).
    Sse,
    /// Newline-delimited JSON (`application/x-ndjson`), as Ollama streams.
    Ndjson,
}

impl Framing {
    /// The framing a response `content-type` announces, if it is a stream.
    pub fn from_content_type(headers: &http::HeaderMap) -> Option<Framing> {
        Self::from_header_value(headers.get(http::header::CONTENT_TYPE)?)
    }

    /// The framing a `content-type` value announces, if it is a stream.
    ///
    /// The media type's essence (before any parameter, in any case, spaces
    /// and tabs around it ignored) says it; a value with bytes other than
    /// visible ASCII announces nothing.
    pub fn from_header_value(value: &http::HeaderValue) -> Option<Framing> {
        let bytes = value.as_bytes();
        let end = crate::bytes::find(bytes, b';').unwrap_or(bytes.len());
        let essence = bytes[..end].trim_ascii();
        // The length settles a plain `application/json` at once, and a
        // plain comparison the usual lower-case spelling.
        let is = |name: &[u8]| essence == name || essence.eq_ignore_ascii_case(name);
        let framing = match essence.len() {
            17 if is(b"text/event-stream") => Framing::Sse,
            17 if is(b"application/jsonl") => Framing::Ndjson,
            20 if is(b"application/x-ndjson") || is(b"application/json-seq") => Framing::Ndjson,
            _ => return None,
        };
        value.to_str().ok()?;
        Some(framing)
    }
}
