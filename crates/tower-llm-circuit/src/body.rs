//! The response body: records the call's outcome when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_llm_classify::Classified;
use tower_llm_classify::stream::{EventScanner, StreamProgress};

use crate::future::PermitGuard;

pin_project! {
    /// The inner body; when it ends (or fails, or is dropped), the call's
    /// outcome goes to its breaker: a stream's mid-stream error counts as a
    /// failure of the target; a body dropped before its end is not counted
    /// when its caller went away, and counts as the failure the layer above
    /// named when that layer ended it (the retry layer's attempt timeout or
    /// deadline, an error its first-content guard read; see
    /// [`AttemptEnd`](tower_llm_classify::AttemptEnd)).
    pub struct CircuitBody<B> {
        #[pin]
        inner: B,
        guard: Option<PermitGuard>,
        first_content: FirstContent,
    }
}

/// How the body learns that the answer's content has started, while a
/// first-content limit times it.
#[derive(Debug)]
pub(crate) enum FirstContent {
    /// Nothing to time: no limit, or the content has started.
    NotTimed,
    /// A whole answer: its first data is content.
    FirstData,
    /// A stream Classify scans below: its [`StreamProgress`] says, read
    /// after each data frame (the stream is read once).
    Progress(StreamProgress),
    /// A stream nobody below scans (no Classify, or its stream scanning
    /// off): read here, until the first content event. Boxed: only such
    /// streams pay for the scanner.
    Scan(Box<EventScanner>),
}

impl FirstContent {
    /// After a data frame: whether the content started with it (`true`
    /// once).
    fn started(&mut self, data: &[u8]) -> bool {
        let started = match self {
            FirstContent::NotTimed => return false,
            FirstContent::FirstData => true,
            FirstContent::Progress(progress) => progress.content_seen(),
            FirstContent::Scan(scanner) => {
                scanner.feed(data);
                scanner.content_seen()
            }
        };
        if started {
            *self = FirstContent::NotTimed;
        }
        started
    }
}

impl<B> CircuitBody<B> {
    pub(crate) fn new(inner: B, guard: Option<PermitGuard>, first_content: FirstContent) -> Self {
        CircuitBody {
            inner,
            guard,
            first_content,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::fmt::Debug for CircuitBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBody")
            .field("pending_outcome", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for CircuitBody<B>
where
    B: Body,
    B::Error: Classified,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.first_content.started(data.chunk())
                    && let Some(guard) = this.guard.as_mut()
                {
                    guard.first_data();
                }
                // The last frame: a reader may not poll again.
                if this.inner.is_end_stream()
                    && let Some(guard) = this.guard.take()
                {
                    guard.succeeded();
                }
            }
            Poll::Ready(None) => {
                if let Some(guard) = this.guard.take() {
                    guard.succeeded();
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(guard) = this.guard.take() {
                    guard.failed(&error.classification());
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
