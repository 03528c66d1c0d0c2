//! The response body: records the call's outcome when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_llm_classify::Classified;
use tower_llm_classify::stream::EventScanner;

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
        data_seen: bool,
        // For a stream timed to its first content: tells content events
        // from keep-alives and role chunks (only until the first one).
        scanner: Option<Box<EventScanner>>,
    }
}

impl<B> CircuitBody<B> {
    pub(crate) fn new(
        inner: B,
        guard: Option<PermitGuard>,
        scanner: Option<Box<EventScanner>>,
    ) -> Self {
        CircuitBody {
            inner,
            guard,
            data_seen: false,
            scanner,
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
        if !*this.data_seen
            && let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let first_content = match this.scanner.as_mut() {
                Some(scanner) => {
                    scanner.feed(data.chunk());
                    scanner.content_seen()
                }
                None => true,
            };
            if first_content {
                *this.data_seen = true;
                *this.scanner = None;
                if let Some(guard) = this.guard.as_mut() {
                    guard.first_data();
                }
            }
        }
        match &polled {
            // Ended, or the last frame (a reader may not poll again).
            Poll::Ready(None) => {
                if let Some(guard) = this.guard.take() {
                    guard.succeeded();
                }
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                if let Some(guard) = this.guard.take() {
                    guard.succeeded();
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(guard) = this.guard.take() {
                    guard.failed(&error.classification());
                }
            }
            _ => {}
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
