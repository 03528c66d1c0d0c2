//! [`ResponseBody`]: the classified response body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::outcome::OutcomeGuard;
use super::{EventScanner, KeepFirst, StreamOutcome, StreamProgress, StreamTranscript};
use crate::classification::Phase;
use crate::error::BoxError;
use crate::{Classification, ErrorKind, LlmError, Provider};

pin_project! {
    /// The body of a successful response, passed through untouched.
    ///
    /// For SSE and NDJSON streams it scans every frame for in-band errors,
    /// content and the terminal event; for any body it turns a broken
    /// connection into a classified error and notices a gRPC error status in
    /// the trailers. The first failure becomes an [`LlmError`] body error
    /// (after the frame that carried it, or its part before the failure,
    /// has been passed on: see below), and the final outcome is reported
    /// once to the request's [`OutcomeHook`](super::OutcomeHook).
    ///
    /// Two things are not passed on, so that the body fails instead of
    /// handing the caller's SDK what it would raise on:
    ///
    /// - the frame that completes a malformed event (see the
    ///   [module docs](super#malformed-events));
    /// - when the scan keeps a [`Transcript`](super::Transcript) (a layer
    ///   above may continue the answer), an in-band error event (OpenAI's
    ///   `data: {"error": …}`, Anthropic's `event: error`, Ollama's
    ///   `{"error": …}` line) and the rest of its frame. The complete
    ///   events before it in that frame are passed on (the frame is cut
    ///   where the error event starts), so the caller holds exactly the
    ///   good content the transcript records, and a continuation spliced in
    ///   after it reads as one answer; the caller's SDK never sees an error
    ///   it would raise on before the rest of the answer comes. An error
    ///   event that began in a frame already passed on (split across reads)
    ///   has that part delivered, unfinished: the SDK does not dispatch an
    ///   event before its end, and the transcript's
    ///   [`last_event_end`](super::Transcript::last_event_end) says so.
    ///
    /// Without a transcript an error event is passed on as today, then the
    /// body fails: nothing will continue the answer, the event is the
    /// provider's own account of the failure, and a caller reading the
    /// stream with the provider's SDK raises on it as it would without
    /// tower-llm. (Layers in between, such as the retry layer holding the
    /// frames before the first content, see every frame.) When the scan
    /// keeps a transcript, every body error carries its
    /// [`StreamTranscript`] in its extensions.
    ///
    /// Cutting a frame needs a data type that can keep its first bytes:
    /// hence `B::Data:` [`KeepFirst`](super::KeepFirst) (implemented for
    /// [`Bytes`](bytes::Bytes), which every hyper, reqwest and axum body
    /// hands out and which is cut without a copy, and the other common
    /// buffers).
    ///
    /// With an idle timeout, a stream that has delivered content and then
    /// delivers no more *content* for that long fails with
    /// [`Timeout`](ErrorKind::Timeout): keep-alives (`ping`, SSE comments,
    /// role-only deltas) do not reset the timer, since per-read timeouts
    /// never fire while keep-alives flow (livekit/agents #6171). The timer
    /// starts at the first content event, not at the head: a reasoning
    /// model may think for minutes before its first token, and silence
    /// after content has started is the clearest sign of a stall. Before
    /// the first content, the layers around the call bound the wait (the
    /// retry layer's stream head, first-content and attempt timeouts).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        // Boxed: only streams pay for what scanning them needs; a whole
        // body stays small, and every layer above copies it with each
        // move of the response (a `ResponseBody<Full<Bytes>>` is 88
        // bytes; with the stream's state inline it was 160).
        scan: Option<Box<Scan>>,
        guard: OutcomeGuard,
        provider: Provider,
        state: State,
        plain_content: bool,
    }
}

/// What scanning a stream needs, kept out of line (see [`ResponseBody`]).
#[derive(Debug)]
struct Scan {
    scanner: EventScanner,
    idle: Option<Idle>,
    // The request id of the head, for a failure found in the body.
    request_id: Option<HeaderValue>,
    // What the scan found, for the layers above.
    progress: StreamProgress,
}

/// The idle timer: armed at the first content event, then moved on
/// lazily. A content frame only notes the time; when the timer fires
/// early (content came since it was set), it is set again for the last
/// content's deadline. A frame costs a clock read, not a timer update.
#[derive(Debug)]
struct Idle {
    timeout: Duration,
    /// When the last content event came; `None` before the first.
    last_content: Option<Instant>,
    /// Fires no later than `timeout` after the last content; `None` until
    /// the first content (created then, so a stream without content never
    /// allocates it).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Idle {
    /// A content event came now.
    fn content(&mut self) {
        let now = Instant::now();
        self.last_content = Some(now);
        if self.sleep.is_none() {
            self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline_after(
                now,
                self.timeout,
            ))));
        }
    }

    /// Whether the stream has been without content for `timeout` since
    /// its last content (never before the first).
    fn expired(&self) -> bool {
        self.last_content
            .is_some_and(|last| Instant::now() >= deadline_after(last, self.timeout))
    }

    /// Whether the timer has run out while the stream is pending (if not,
    /// it wakes the task when it does).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(sleep), Some(last)) = (self.sleep.as_mut(), self.last_content) else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        let deadline = deadline_after(last, self.timeout);
        if deadline <= Instant::now() {
            return true;
        }
        // Content came since the timer was set: wait for its deadline.
        sleep.as_mut().reset(deadline);
        sleep.as_mut().poll(cx).is_ready()
    }
}

#[derive(Debug)]
enum State {
    Streaming,
    Failing(Option<LlmError>),
    Done,
}

impl<B> ResponseBody<B> {
    /// A whole (not streamed) body: passed through, its end reported.
    pub(crate) fn new(inner: B, guard: OutcomeGuard, provider: Provider) -> Self {
        ResponseBody {
            inner,
            scan: None,
            guard,
            provider,
            state: State::Streaming,
            plain_content: false,
        }
    }

    /// A stream, scanned by `scanner`; what the scan finds is published to
    /// `progress` (a clone of the one in the response's extensions), and
    /// `request_id` (the head's) is added to a failure found in the body.
    pub(crate) fn scanned(
        inner: B,
        scanner: EventScanner,
        idle_timeout: Option<Duration>,
        guard: OutcomeGuard,
        provider: Provider,
        request_id: Option<HeaderValue>,
        progress: StreamProgress,
    ) -> Self {
        let idle = idle_timeout.map(|timeout| Idle {
            timeout,
            last_content: None,
            sleep: None,
        });
        let scan = Scan {
            scanner,
            idle,
            request_id,
            progress,
        };
        ResponseBody {
            scan: Some(Box::new(scan)),
            ..Self::new(inner, guard, provider)
        }
    }

    /// A body that only passes `inner` through (for tests and for bodies
    /// built outside the layer).
    pub fn passthrough(inner: B) -> Self {
        Self::new(inner, OutcomeGuard::new(None), Provider::Unknown)
    }

    /// Whether content has reached the caller: a content event of a stream,
    /// or any data of a plain body.
    pub fn content_seen(&self) -> bool {
        match &self.scan {
            Some(scan) => scan.scanner.content_seen(),
            None => self.plain_content,
        }
    }

    /// The stream scanner, when the body is an SSE or NDJSON stream.
    pub fn scanner(&self) -> Option<&EventScanner> {
        self.scan.as_deref().map(|scan| &scan.scanner)
    }

    /// The transcript of what the stream delivered, when the scan keeps
    /// one (the same one the response's extensions carry).
    pub fn transcript(&self) -> Option<&StreamTranscript> {
        self.scanner().and_then(EventScanner::transcript)
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body. The outcome is reported as abandoned.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// `timeout` after `start`, or a date too far away to come when that
/// overflows (`Duration::MAX` means "never"), as `tokio::time::sleep` does.
fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

/// About thirty years: tokio's own stand-in for "never".
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

fn idle_timeout(
    timeout: Duration,
    provider: Provider,
    content_seen: bool,
    request_id: Option<&HeaderValue>,
) -> Classification {
    let classification = Classification::new(ErrorKind::Timeout)
        .with_provider(provider)
        .with_phase(phase(content_seen))
        .with_message(&format!("no content from the stream for {timeout:?}"));
    with_head(classification, request_id)
}

/// Adds what the response head told us to a failure found in its body.
fn with_head(mut c: Classification, request_id: Option<&HeaderValue>) -> Classification {
    if c.request_id().is_none()
        && let Some(id) = request_id.and_then(|v| v.to_str().ok())
    {
        c = c.with_request_id(id);
    }
    c
}

fn phase(content_seen: bool) -> Phase {
    if content_seen {
        Phase::MidStream
    } else {
        Phase::AfterHeaders
    }
}

/// A failure the scan of a frame found.
struct Found {
    classification: Classification,
    /// What of the frame is passed on before the failure.
    pass: Pass,
}

/// What of a frame that failed the stream reaches the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// The whole frame.
    Frame,
    /// Nothing: the frame completes a malformed event, or an error event
    /// began in an earlier frame.
    Nothing,
    /// Its first bytes: the complete events before an error event.
    Prefix(usize),
}

impl Scan {
    /// The body error for a failure of this stream: the transcript, if
    /// one is kept, rides along in its extensions.
    fn error(&self, classification: Classification) -> LlmError {
        let mut error = LlmError::new(classification);
        if let Some(transcript) = self.scanner.transcript() {
            error.extensions_mut().insert(transcript.clone());
        }
        error
    }

    /// How the stream failed by ending where it did (without its terminal
    /// event), if it did.
    fn finish(&mut self) -> Option<Classification> {
        let end = self.scanner.finish()?;
        Some(with_head(end, self.request_id.as_ref()))
    }

    /// Whether the idle timer has run out while the stream is pending (and
    /// if not, the timer wakes the task when it does).
    fn stalled(&mut self, cx: &mut Context<'_>, provider: Provider) -> Option<Classification> {
        let idle = self.idle.as_mut()?;
        if !idle.poll_expired(cx) {
            return None;
        }
        let content_seen = self.scanner.content_seen();
        Some(idle_timeout(
            idle.timeout,
            provider,
            content_seen,
            self.request_id.as_ref(),
        ))
    }

    /// Scans a frame's data; the failure it carried, if any, to be
    /// returned after the frame.
    fn scan_data<D: Buf>(
        &mut self,
        data: &D,
        guard: &mut OutcomeGuard,
        provider: Provider,
    ) -> Option<Found> {
        let event = feed(&mut self.scanner, data);
        if event.content {
            guard.content_seen();
            self.progress.set_content();
            if let Some(idle) = self.idle.as_mut() {
                idle.content();
            }
        } else if let Some(idle) = &self.idle
            && !event.failed
            && idle.expired()
        {
            // Keep-alives that are always ready must not hide a stall:
            // check the deadline on them too.
            let content_seen = self.scanner.content_seen();
            return Some(Found {
                classification: idle_timeout(
                    idle.timeout,
                    provider,
                    content_seen,
                    self.request_id.as_ref(),
                ),
                pass: Pass::Frame,
            });
        }
        if event.failed
            && let Some(classification) = self.scanner.take_error()
        {
            self.progress.set_failed();
            let pass = if event.malformed {
                Pass::Nothing
            } else if self.scanner.transcript().is_some() {
                // A continuation may follow: the error event is not
                // passed on, the complete events before it are.
                match self.scanner.frame_bytes_before_error() {
                    0 => Pass::Nothing,
                    n if n >= data.remaining() => Pass::Frame,
                    n => Pass::Prefix(n),
                }
            } else {
                Pass::Frame
            };
            return Some(Found {
                classification: with_head(classification, self.request_id.as_ref()),
                pass,
            });
        }
        None
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: KeepFirst,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = LlmError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.state {
            State::Streaming => {}
            State::Failing(error) => {
                let error = error.take();
                *this.state = State::Done;
                return Poll::Ready(error.map(Err));
            }
            State::Done => return Poll::Ready(None),
        }
        let provider = *this.provider;
        let content_seen = match this.scan.as_deref() {
            Some(scan) => scan.scanner.content_seen(),
            None => *this.plain_content,
        };
        let polled = match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => {
                if let Some(scan) = this.scan.as_deref_mut()
                    && let Some(classification) = scan.stalled(cx, provider)
                {
                    this.guard.report(StreamOutcome::Failed(&classification));
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(scan.error(classification))));
                }
                return Poll::Pending;
            }
            Poll::Ready(polled) => polled,
        };
        match polled {
            None => {
                *this.state = State::Done;
                if let Some(scan) = this.scan.as_deref_mut()
                    && let Some(classification) = scan.finish()
                {
                    this.guard.report(StreamOutcome::Failed(&classification));
                    return Poll::Ready(Some(Err(scan.error(classification))));
                }
                this.guard.report(StreamOutcome::Completed);
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                let mut error = LlmError::from_source(error);
                if !error.kind().is_local() && error.classification().phase() != Phase::MidStream {
                    let request_id = this.scan.as_deref().and_then(|s| s.request_id.as_ref());
                    let c = error.classification_mut();
                    *c = with_head(
                        c.clone()
                            .with_phase(phase(content_seen))
                            .with_provider(provider),
                        request_id,
                    );
                }
                if let Some(transcript) = this.scan.as_deref().and_then(|s| s.scanner.transcript())
                {
                    error.extensions_mut().insert(transcript.clone());
                }
                this.guard
                    .report(StreamOutcome::Failed(error.classification()));
                *this.state = State::Done;
                Poll::Ready(Some(Err(error)))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    match this.scan.as_deref_mut() {
                        Some(scan) => {
                            if let Some(found) = scan.scan_data(data, this.guard, provider) {
                                this.guard
                                    .report(StreamOutcome::Failed(&found.classification));
                                let error = scan.error(found.classification);
                                let frame = match found.pass {
                                    Pass::Frame => frame,
                                    Pass::Nothing => {
                                        // The caller's SDK would raise on it.
                                        *this.state = State::Done;
                                        return Poll::Ready(Some(Err(error)));
                                    }
                                    Pass::Prefix(len) => {
                                        frame.map_data(|data| data.keep_first(len))
                                    }
                                };
                                *this.state = State::Failing(Some(error));
                                return Poll::Ready(Some(Ok(frame)));
                            }
                        }
                        None => {
                            if data.has_remaining() {
                                *this.plain_content = true;
                                this.guard.content_seen();
                            }
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(classification) = crate::grpc::classify_grpc(trailers)
                {
                    // gRPC errors travel in trailers by design: tonic must
                    // still read them, so the body is not failed; the
                    // outcome is reported.
                    let classification = classification.with_provider(provider);
                    this.guard.report(StreamOutcome::Failed(&classification));
                }
                if this.inner.is_end_stream() {
                    // hyper stops polling once the body says it ended
                    // (tower-http #687): settle the outcome now.
                    let scan = this.scan.as_deref_mut();
                    match scan.and_then(|scan| Some((scan.finish()?, scan))) {
                        Some((classification, scan)) => {
                            this.guard.report(StreamOutcome::Failed(&classification));
                            *this.state = State::Failing(Some(scan.error(classification)));
                        }
                        None => {
                            this.guard.report(StreamOutcome::Completed);
                            *this.state = State::Done;
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Done => true,
            State::Failing(_) => false,
            State::Streaming => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.scan {
            // A scanned stream may end with an event the upstream never
            // sent, or withhold one it did: its length is not the
            // upstream's (see `scanned`, which drops the head's).
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

fn feed<D: Buf>(scanner: &mut EventScanner, data: &D) -> super::ScanEvent {
    let chunk = data.chunk();
    if chunk.len() == data.remaining() {
        return scanner.feed(chunk);
    }
    let mut slices = [std::io::IoSlice::new(&[]); 16];
    let filled = data.chunks_vectored(&mut slices);
    let mut event = super::ScanEvent::default();
    for (i, slice) in slices[..filled].iter().enumerate() {
        // One frame: what a malformed event withholds starts at its start.
        let e = scanner.feed_part(slice, i == 0);
        event.content |= e.content;
        event.keep_alive |= e.keep_alive;
        event.failed |= e.failed;
        event.malformed |= e.malformed;
    }
    if event.malformed {
        // The whole frame is withheld, its first parts too.
        event.content = false;
        event.keep_alive = false;
    }
    event
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("scanner", &self.scanner())
            .field("provider", &self.provider)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_whole_body_keeps_the_stream_state_out_of_line() {
        // Every layer above copies the body with each move of the
        // response: what only streams need stays behind one pointer.
        type Whole = http_body_util::Full<bytes::Bytes>;
        assert_eq!(std::mem::size_of::<ResponseBody<Whole>>(), 88);
    }
}
