//! The response body: a failure after content reached the caller is a
//! stream-incomplete error, never a silent switch of provider.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_llm_classify::{ErrorKind, LlmError, Phase};

pin_project! {
    /// The served target's body. A mid-stream failure comes out as an
    /// [`LlmError`] of kind stream-incomplete, the original in its source
    /// chain: the answer the caller holds is cut, and no other provider
    /// will finish it.
    pub struct FallbackBody<B> {
        #[pin]
        inner: B,
        data_sent: bool,
    }
}

impl<B> FallbackBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        FallbackBody {
            inner,
            data_sent: false,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::fmt::Debug for FallbackBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackBody").finish_non_exhaustive()
    }
}

impl<B> Body for FallbackBody<B>
where
    B: Body,
    B::Error: Into<LlmError>,
{
    type Data = B::Data;
    type Error = LlmError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, LlmError>>> {
        self.project().inner.poll_frame(cx).map(|frame| {
            frame.map(|result| {
                result.map_err(|error| {
                    let error: LlmError = error.into();
                    let c = error.classification().clone();
                    let message = format!(
                        "the answer was cut after content reached the caller ({})",
                        c.kind()
                    );
                    let incomplete = c
                        .with_kind(ErrorKind::StreamIncomplete)
                        .with_phase(Phase::MidStream)
                        .with_message(&message);
                    LlmError::new(incomplete).with_source(error)
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
