//! [`HeldResponse`]: the first-content guard's hold on a response, until
//! nothing that goes wrong can have reached the caller.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use tower_llm_classify::stream::{Dialect, EventScanner, Framing};
use tower_llm_classify::{BoxError, ErrorKind, LlmError, Phase, Provider, RequestMeta};

use crate::body::{ReplayBody, RetryBody};

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

/// A response held back until nothing that goes wrong can have reached the
/// caller: a stream until its first content event, a whole JSON answer
/// until its end.
pub(crate) struct HeldResponse<R> {
    head: Option<http::response::Parts>,
    body: Option<Pin<Box<R>>>,
    read_ahead: VecDeque<Frame<Bytes>>,
    charged: usize,
    /// `None`: a whole answer, held to its end.
    scanner: Option<EventScanner>,
}

impl<R> HeldResponse<R>
where
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
{
    /// Holds `head` and `body` back; `scanner` finds a stream's first
    /// content (`None`: a whole answer, held to its end).
    pub(crate) fn new(head: http::response::Parts, body: R, scanner: Option<EventScanner>) -> Self {
        HeldResponse {
            head: Some(head),
            body: Some(Box::pin(body)),
            read_ahead: VecDeque::new(),
            charged: 0,
            scanner,
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
            match ready!(body.as_mut().poll_frame(cx)) {
                // Ended without content: hand over what there is.
                None => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(LlmError::from_source(error))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if let Some(scanner) = self.scanner.as_mut() {
                            scanner.feed(data);
                        }
                        self.charged += data.len();
                    }
                    self.charged += FRAME_CHARGE;
                    self.read_ahead.push_back(frame);
                    let Some(scanner) = self.scanner.as_mut() else {
                        if self.charged >= WHOLE_BODY_LIMIT {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    };
                    // An in-band error, even in the same read as the first
                    // content: nothing has reached the caller, so the
                    // attempt can still be replayed.
                    if let Some(c) = scanner.take_error() {
                        // One more read lets Classify's body, below the
                        // circuit, hand over the error it found in the same
                        // frame (it is queued: this read does not wait), so
                        // the breaker counts it as it would the same failure
                        // sent as a status. What the read returns is dropped
                        // with the attempt.
                        let _ = body.as_mut().poll_frame(cx);
                        return Poll::Ready(Err(LlmError::new(c.with_phase(Phase::AfterHeaders))));
                    }
                    // Hold back until content, but not without bound: a
                    // stream of keep-alives alone is handed over past the
                    // limit (Classify's idle timeout still applies to it).
                    if scanner.content_seen() || self.charged >= GUARD_READ_AHEAD_LIMIT {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
        // Many frames at once: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Whether a response is a JSON document (`application/json`, `…+json`).
pub(crate) fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim())
        .is_some_and(|essence| {
            essence.eq_ignore_ascii_case("application/json")
                || essence
                    .get(essence.len().saturating_sub(5)..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"))
        })
}

/// A scanner for the stream a request asked for.
pub(crate) fn scanner_for(
    template: Option<&Request<ReplayBody>>,
    framing: Framing,
) -> EventScanner {
    let (dialect, provider) = match template {
        Some(t) => match t.extensions().get::<RequestMeta>() {
            Some(meta) => (meta.dialect, meta.provider),
            None => (
                Dialect::from_path(t.uri().path()),
                Provider::detect(t.uri()),
            ),
        },
        None => (Dialect::Generic, Provider::Unknown),
    };
    EventScanner::new(framing, dialect, provider)
}
