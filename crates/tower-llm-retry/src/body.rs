//! Bodies: the request body replayed on every attempt, and the response
//! body that hands back what the first-content guard read ahead.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::read_ahead::ReadAhead;

/// The request body every attempt sends: the caller's body, read once and
/// cloned by reference count per attempt. It is `http_body_util::Full`, so
/// the layers below (Classify reads the `model` from it) and any client
/// take it as they are.
pub type ReplayBody = http_body_util::Full<Bytes>;

pin_project! {
    /// The response body the retry layer returns: the inner body, after the
    /// frames the first-content guard read ahead (if it held the stream back).
    pub struct RetryBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain { #[pin] inner: B },
        // A guarded answer (a stream, a whole JSON answer): its body was
        // pinned in a box while read ahead.
        Replaying { read_ahead: ReadAhead, inner: Pin<Box<B>> },
    }
}

impl<B> RetryBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        RetryBody {
            kind: Kind::Plain { inner },
        }
    }

    pub(crate) fn with_read_ahead(inner: Pin<Box<B>>, read_ahead: ReadAhead) -> Self {
        RetryBody {
            kind: Kind::Replaying { read_ahead, inner },
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        match &self.kind {
            Kind::Plain { inner } => inner,
            Kind::Replaying { inner, .. } => inner,
        }
    }

    /// Whether frames read ahead by the guard are still to be returned.
    pub fn has_read_ahead(&self) -> bool {
        matches!(&self.kind, Kind::Replaying { read_ahead, .. } if !read_ahead.is_empty())
    }
}

impl<B> std::fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBody")
            .field("read_ahead", &self.has_read_ahead())
            .finish_non_exhaustive()
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
        match self.project().kind.project() {
            KindProj::Plain { inner } => inner.poll_frame(cx),
            KindProj::Replaying { read_ahead, inner } => match read_ahead.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => inner.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { inner } => inner.is_end_stream(),
            Kind::Replaying { read_ahead, inner } => read_ahead.is_empty() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { inner } => inner.size_hint(),
            Kind::Replaying { read_ahead, inner } => {
                let ahead = read_ahead.data_len();
                let inner = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(ahead));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(ahead));
                }
                hint
            }
        }
    }
}
