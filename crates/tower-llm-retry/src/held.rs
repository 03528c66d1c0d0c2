//! [`HeldResponse`]: the first-content guard's hold on a response, until
//! nothing that goes wrong can have reached the caller.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::Body;
use tower_llm_classify::stream::{Dialect, EventScanner, Framing, StreamProgress};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase, Provider, RequestMeta};

use crate::body::RetryBody;
use crate::read_ahead::ReadAhead;
use crate::template::Template;

/// The most a guarded stream may send before its first content (pings,
/// comments, role chunks), in bytes of data plus a fixed charge per frame,
/// before it is handed over unguarded.
const GUARD_READ_AHEAD_LIMIT: usize = 64 * 1024;

/// What a frame read ahead costs besides its data (queue entry, framing).
const FRAME_CHARGE: usize = 64;

/// The most a whole (non-streamed) JSON answer is held back for, in bytes
/// of data plus the per-frame charge: LLM answers are kilobytes, so past
/// this the response is not one and is handed over as it is.
const WHOLE_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Frames read ahead in one poll before yielding to the runtime.
const FRAMES_PER_POLL: usize = 32;

/// How the guard tells that a held response may be handed over.
pub(crate) enum Watch {
    /// A stream Classify scans below: the [`StreamProgress`] it put in the
    /// response's extensions says when content or an in-band error went
    /// by, so the stream is scanned once, there.
    Progress(StreamProgress),
    /// A stream nobody below scans (no Classify, or Classify with stream
    /// scanning off): the guard scans it itself. Boxed: rarely needed, and
    /// the largest thing the guard would otherwise hold inline.
    Scanner(Box<EventScanner>),
    /// A whole JSON answer: held to its end, so a body cut midway is
    /// retried too.
    WholeAnswer,
}

impl Watch {
    /// The watch a successful response needs, from its `content-type`
    /// (read once): a stream until its first content, a whole JSON answer
    /// to its end; `None` for any other body (audio, files), which passes
    /// as it comes.
    pub(crate) fn for_response(head: &http::response::Parts, template: &Template) -> Option<Watch> {
        let content_type = head.headers.get(http::header::CONTENT_TYPE)?;
        // The usual answer first: a JSON document is not a stream.
        if is_json(content_type) {
            return Some(Watch::WholeAnswer);
        }
        let framing = Framing::from_header_value(content_type)?;
        Some(match head.extensions.get::<StreamProgress>() {
            Some(progress) => Watch::Progress(progress.clone()),
            None => Watch::Scanner(Box::new(scanner_for(template.meta(), framing))),
        })
    }
}

/// A response held back until nothing that goes wrong can have reached the
/// caller: a stream until its first content event, a whole JSON answer
/// until its end.
pub(crate) struct HeldResponse<R> {
    head: Option<http::response::Parts>,
    body: Option<Pin<Box<R>>>,
    read_ahead: ReadAhead,
    charged: usize,
    watch: Watch,
}

impl<R> HeldResponse<R>
where
    R: Body<Data = Bytes>,
    R::Error: Into<LlmError>,
{
    /// Holds `head` and `body` back until `watch` says they may go.
    pub(crate) fn new(head: http::response::Parts, body: R, watch: Watch) -> Self {
        HeldResponse {
            head: Some(head),
            body: Some(Box::pin(body)),
            read_ahead: ReadAhead::Empty,
            charged: 0,
            watch,
        }
    }

    /// The response, its frames read ahead in front of the rest of its
    /// body; `None` if it was handed over already.
    pub(crate) fn hand_over(&mut self) -> Option<Response<RetryBody<R>>> {
        let (head, body) = (self.head.take()?, self.body.take()?);
        let read_ahead = std::mem::take(&mut self.read_ahead);
        Some(Response::from_parts(
            head,
            RetryBody::with_read_ahead(body, read_ahead),
        ))
    }

    /// Reads frames until the first content event (for a whole answer:
    /// the end) (`Ok`), an error before it (`Err`), the end of the body, or
    /// the read-ahead limit (`Ok`).
    pub(crate) fn poll_content(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(Err(LlmError::local(
                ErrorKind::Unknown,
                "retry guard polled after hand-over",
            )));
        };
        for _ in 0..FRAMES_PER_POLL {
            // Classify found an in-band error in the last frame: this read
            // returns it, classified (it is queued: the read does not
            // wait), through the circuit between, which counts it as it
            // would the same failure sent as a status.
            if let Watch::Progress(progress) = &self.watch
                && progress.failed()
            {
                return Poll::Ready(Err(match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Err(error)) => error.into(),
                    _ => unreturned_error(),
                }));
            }
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                // Ended without content: hand over what there is.
                None => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(error.into())),
                Some(Ok(frame)) => frame,
            };
            if let Some(data) = frame.data_ref() {
                if let Watch::Scanner(scanner) = &mut self.watch {
                    scanner.feed(data);
                }
                self.charged += data.len();
            }
            self.charged += FRAME_CHARGE;
            self.read_ahead.push_back(frame);
            // Hold back until content, but not without bound: a stream of
            // keep-alives alone is handed over past the limit (Classify's
            // idle timeout still applies to it).
            let may_go = match &mut self.watch {
                Watch::WholeAnswer => self.charged >= WHOLE_BODY_LIMIT,
                // An in-band error, even in the same frame as the first
                // content: nothing has reached the caller, so the attempt
                // can still be replayed. The next read returns it.
                Watch::Progress(progress) if progress.failed() => continue,
                Watch::Progress(progress) => {
                    progress.content_seen() || self.charged >= GUARD_READ_AHEAD_LIMIT
                }
                Watch::Scanner(scanner) => {
                    if let Some(c) = scanner.take_error() {
                        // One more read lets a layer below that scans the
                        // stream without publishing its progress hand over
                        // the error it found in the same frame (it is
                        // queued: this read does not wait), so a breaker
                        // between counts it. What the read returns is
                        // dropped with the attempt.
                        let _ = body.as_mut().poll_frame(cx);
                        return Poll::Ready(Err(LlmError::new(c.with_phase(Phase::AfterHeaders))));
                    }
                    scanner.content_seen() || self.charged >= GUARD_READ_AHEAD_LIMIT
                }
            };
            // A body at its end has nothing more to hold back: a whole
            // answer in one frame is not read a second time.
            if may_go || body.is_end_stream() {
                return Poll::Ready(Ok(()));
            }
        }
        // Many frames at once: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The layer below said it found an in-band error, then did not return it.
fn unreturned_error() -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::Unknown)
            .with_phase(Phase::AfterHeaders)
            .with_message(
                "the stream reported an in-band error before its first content but did not return it",
            ),
    )
}

/// Whether a `content-type` is a JSON document (`application/json`,
/// `…+json`).
fn is_json(content_type: &HeaderValue) -> bool {
    const JSON: &[u8] = b"application/json";
    // The usual value, compared without parsing.
    if content_type.as_bytes().eq_ignore_ascii_case(JSON) {
        return true;
    }
    content_type
        .to_str()
        .ok()
        .map(|v| v.split(';').next().unwrap_or(v).trim())
        .is_some_and(|essence| {
            essence.as_bytes().eq_ignore_ascii_case(JSON)
                || essence
                    .get(essence.len().saturating_sub(5)..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
        })
}

/// A scanner for the stream a request asked for.
fn scanner_for(meta: Option<&RequestMeta>, framing: Framing) -> EventScanner {
    let (dialect, provider) = match meta {
        Some(meta) => (meta.dialect, meta.provider),
        None => (Dialect::Generic, Provider::Unknown),
    };
    EventScanner::new(framing, dialect, provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_in_any_case_with_parameters() {
        for value in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=utf-8",
            "application/problem+json",
            "application/vnd.api+JSON; x=1",
        ] {
            assert!(is_json(&HeaderValue::from_static(value)), "{value}");
        }
        for value in [
            "text/event-stream",
            "application/x-ndjson",
            "application/json-seq",
            "application/jsonl",
            "text/plain",
            "json",
            "",
        ] {
            assert!(!is_json(&HeaderValue::from_static(value)), "{value}");
        }
        let not_visible_ascii = HeaderValue::from_bytes(b"application/json; x=\xff").unwrap();
        assert!(!is_json(&not_visible_ascii), "a value that is not text");
    }
}
