//! Bodies: the request body replayed on every attempt, and the response
//! body that hands back what the first-content guard read ahead.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The request body every attempt sends: the caller's body, read once into
/// `Bytes` and cloned by reference count per attempt.
#[derive(Clone, Debug, Default)]
pub struct ReplayBody {
    data: Option<Bytes>,
}

impl ReplayBody {
    pub(crate) fn new(data: Bytes) -> Self {
        ReplayBody {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// The bytes this body sends.
    pub fn bytes(&self) -> Bytes {
        self.data.clone().unwrap_or_default()
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Knows whether content has reached the reader of a response body: the
/// first-content guard reads a stream until this says so.
///
/// Implemented for `tower-llm-classify`'s [`ResponseBody`], whose event
/// scanner tells content events from keep-alives, role chunks and pings.
/// Other bodies count any data as content.
///
/// [`ResponseBody`]: tower_llm_classify::stream::ResponseBody
pub trait ContentProgress {
    /// Whether a content event (or, for a plain body, any data) has been read.
    fn content_seen(&self) -> bool;
}

impl<B> ContentProgress for tower_llm_classify::stream::ResponseBody<B> {
    fn content_seen(&self) -> bool {
        tower_llm_classify::stream::ResponseBody::content_seen(self)
    }
}

/// Plain bodies: data is content.
macro_rules! data_is_content {
    ($($ty:ty),*) => {$(
        impl ContentProgress for $ty {
            fn content_seen(&self) -> bool {
                true
            }
        }
    )*};
}

data_is_content!(
    http_body_util::Full<Bytes>,
    http_body_util::Empty<Bytes>,
    String,
    Bytes
);

pin_project! {
    /// The response body the retry layer returns: the inner body, after the
    /// frames the first-content guard read ahead (if any).
    #[derive(Debug)]
    pub struct RetryBody<B> {
        read_ahead: VecDeque<Frame<Bytes>>,
        #[pin]
        inner: B,
    }
}

impl<B> RetryBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        RetryBody {
            read_ahead: VecDeque::new(),
            inner,
        }
    }

    pub(crate) fn with_read_ahead(inner: B, read_ahead: VecDeque<Frame<Bytes>>) -> Self {
        RetryBody { read_ahead, inner }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, dropping any frame read ahead and not yet returned.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(frame) = this.read_ahead.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read_ahead.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .read_ahead
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(ahead));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(ahead));
        }
        hint
    }
}

impl<B: ContentProgress> ContentProgress for RetryBody<B> {
    fn content_seen(&self) -> bool {
        self.inner.content_seen()
    }
}
