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
use super::{EventScanner, StreamOutcome, StreamProgress};
use crate::classification::Phase;
use crate::error::BoxError;
use crate::{Classification, ErrorKind, LlmError, Provider};

pin_project! {
    /// The body of a successful response, passed through untouched.
    ///
    /// For SSE and NDJSON streams it scans every frame for in-band errors,
    /// content and the terminal event; for any body it turns a broken
    /// connection into a classified error and notices a gRPC error status in
    /// the trailers. The first failure becomes an [`LlmError`] body error (after
    /// the frame that carried it has been passed on), and the final outcome is
    /// reported once to the request's [`OutcomeHook`](super::OutcomeHook).
    ///
    /// With an idle timeout, a stream that delivers no *content* for that long
    /// fails with [`Timeout`](ErrorKind::Timeout): keep-alives (`ping`, SSE
    /// comments, role-only deltas) do not reset the timer, since per-read
    /// timeouts never fire while keep-alives flow (livekit/agents #6171).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        // Boxed: only streams pay for the scanner; plain bodies stay small
        // (every move of the response copies the body).
        scanner: Option<Box<EventScanner>>,
        idle: Option<Idle>,
        guard: OutcomeGuard,
        provider: Provider,
        request_id: Option<HeaderValue>,
        state: State,
        plain_content: bool,
        // What the scan found, for the layers above (streams only).
        progress: Option<StreamProgress>,
    }
}

#[derive(Debug)]
struct Idle {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

#[derive(Debug)]
enum State {
    Streaming,
    Failing(Option<LlmError>),
    Done,
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(
        inner: B,
        scanner: Option<EventScanner>,
        idle_timeout: Option<Duration>,
        guard: OutcomeGuard,
        provider: Provider,
        request_id: Option<HeaderValue>,
    ) -> Self {
        let idle = idle_timeout.map(|timeout| Idle {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        });
        ResponseBody {
            inner,
            scanner: scanner.map(Box::new),
            idle,
            guard,
            provider,
            request_id,
            state: State::Streaming,
            plain_content: false,
            progress: None,
        }
    }

    /// Publishes what the scan finds to `progress` (a clone of the one in
    /// the response's extensions).
    pub(crate) fn with_progress(mut self, progress: StreamProgress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// A body that only passes `inner` through (for tests and for bodies
    /// built outside the layer).
    pub fn passthrough(inner: B) -> Self {
        Self::new(
            inner,
            None,
            None,
            OutcomeGuard::new(None),
            Provider::Unknown,
            None,
        )
    }

    /// Whether content has reached the caller: a content event of a stream,
    /// or any data of a plain body.
    pub fn content_seen(&self) -> bool {
        match &self.scanner {
            Some(scanner) => scanner.content_seen(),
            None => self.plain_content,
        }
    }

    /// The stream scanner, when the body is an SSE or NDJSON stream.
    pub fn scanner(&self) -> Option<&EventScanner> {
        self.scanner.as_deref()
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

/// `timeout` from now, or a date too far away to come when that overflows
/// (`Duration::MAX` means "never"), as `tokio::time::sleep` does.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// About thirty years: tokio's own stand-in for "never".
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

fn idle_timeout(
    timeout: Duration,
    provider: Provider,
    content_seen: bool,
    request_id: &Option<HeaderValue>,
) -> Classification {
    let classification = Classification::new(ErrorKind::Timeout)
        .with_provider(provider)
        .with_phase(phase(content_seen))
        .with_message(&format!("no content from the stream for {timeout:?}"));
    with_head(classification, request_id)
}

/// Adds what the response head told us to a failure found in its body.
fn with_head(mut c: Classification, request_id: &Option<HeaderValue>) -> Classification {
    if c.request_id().is_none()
        && let Some(id) = request_id.as_ref().and_then(|v| v.to_str().ok())
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

impl<B> Body for ResponseBody<B>
where
    B: Body,
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
        let content_seen = match &this.scanner {
            Some(scanner) => scanner.content_seen(),
            None => *this.plain_content,
        };
        let polled = match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => {
                if let Some(idle) = this.idle.as_mut()
                    && idle.sleep.as_mut().poll(cx).is_ready()
                {
                    let classification =
                        idle_timeout(idle.timeout, *this.provider, content_seen, this.request_id);
                    this.guard.report(StreamOutcome::Failed(&classification));
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(LlmError::new(classification))));
                }
                return Poll::Pending;
            }
            Poll::Ready(polled) => polled,
        };
        match polled {
            None => {
                let end = this.scanner.as_deref_mut().and_then(EventScanner::finish);
                let end = end.map(|c| with_head(c, this.request_id));
                *this.state = State::Done;
                match end {
                    Some(classification) => {
                        this.guard.report(StreamOutcome::Failed(&classification));
                        Poll::Ready(Some(Err(LlmError::new(classification))))
                    }
                    None => {
                        this.guard.report(StreamOutcome::Completed);
                        Poll::Ready(None)
                    }
                }
            }
            Some(Err(error)) => {
                let mut error = LlmError::from_source(error);
                if !error.kind().is_local() && error.classification().phase() != Phase::MidStream {
                    let c = error.classification_mut();
                    *c = with_head(
                        c.clone()
                            .with_phase(phase(content_seen))
                            .with_provider(*this.provider),
                        this.request_id,
                    );
                }
                this.guard
                    .report(StreamOutcome::Failed(error.classification()));
                *this.state = State::Done;
                Poll::Ready(Some(Err(error)))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    match this.scanner.as_deref_mut() {
                        Some(scanner) => {
                            let event = feed(scanner, data);
                            if event.content {
                                this.guard.content_seen();
                                if let Some(progress) = this.progress.as_ref() {
                                    progress.set_content();
                                }
                                if let Some(idle) = this.idle.as_mut() {
                                    idle.sleep.as_mut().reset(deadline_after(idle.timeout));
                                }
                            } else if let Some(idle) = this.idle.as_mut()
                                && !event.failed
                                && Instant::now() >= idle.sleep.deadline()
                            {
                                // Keep-alives that are always ready must not
                                // hide a stall: check the deadline on them too.
                                let classification = idle_timeout(
                                    idle.timeout,
                                    *this.provider,
                                    scanner.content_seen(),
                                    this.request_id,
                                );
                                this.guard.report(StreamOutcome::Failed(&classification));
                                *this.state = State::Failing(Some(LlmError::new(classification)));
                                return Poll::Ready(Some(Ok(frame)));
                            }
                            if event.failed
                                && let Some(classification) = scanner.take_error()
                            {
                                if let Some(progress) = this.progress.as_ref() {
                                    progress.set_failed();
                                }
                                let classification = with_head(classification, this.request_id);
                                this.guard.report(StreamOutcome::Failed(&classification));
                                *this.state = State::Failing(Some(LlmError::new(classification)));
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
                    let classification = classification.with_provider(*this.provider);
                    this.guard.report(StreamOutcome::Failed(&classification));
                }
                if this.inner.is_end_stream() {
                    // hyper stops polling once the body says it ended
                    // (tower-http #687): settle the outcome now.
                    let end = this.scanner.as_deref_mut().and_then(EventScanner::finish);
                    match end.map(|c| with_head(c, this.request_id)) {
                        Some(classification) => {
                            this.guard.report(StreamOutcome::Failed(&classification));
                            *this.state = State::Failing(Some(LlmError::new(classification)));
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
        self.inner.size_hint()
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
    for slice in &slices[..filled] {
        let e = scanner.feed(slice);
        event.content |= e.content;
        event.keep_alive |= e.keep_alive;
        event.failed |= e.failed;
    }
    event
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("scanner", &self.scanner)
            .field("provider", &self.provider)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
