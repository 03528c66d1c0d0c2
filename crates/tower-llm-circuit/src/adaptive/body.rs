//! The response body: frees the call's room when the body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_llm_classify::Classified;

use super::permit::LimitPermit;

pin_project! {
    /// The inner body; the call keeps its room under the key's adaptive
    /// limit until the body ends, fails or is dropped, so a stream counts
    /// as in flight for as long as it streams. A clean end may raise the
    /// limit; an overloaded error inside the stream counts as a shed
    /// answer.
    pub struct LimitBody<B> {
        #[pin]
        inner: B,
        permit: Option<LimitPermit>,
    }
}

impl<B> LimitBody<B> {
    pub(crate) fn new(inner: B, permit: Option<LimitPermit>) -> Self {
        LimitBody { inner, permit }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::fmt::Debug for LimitBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitBody")
            .field("holds_room", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for LimitBody<B>
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
            Poll::Ready(Some(Ok(_))) => {
                // The last frame: a reader may not poll again.
                if this.permit.is_some()
                    && this.inner.is_end_stream()
                    && let Some(permit) = this.permit.take()
                {
                    permit.succeeded();
                }
            }
            Poll::Ready(None) => {
                if let Some(permit) = this.permit.take() {
                    permit.succeeded();
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(permit) = this.permit.take() {
                    permit.failed(&error.classification());
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
