//! Reading a request body once, to send it again: what the retry layer and
//! the fallback both need before their first attempt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::Body;
use pin_project_lite::pin_project;

use crate::{BoxError, ErrorKind, LlmError, Phase};

pin_project! {
    /// Reads a body to its end, at most `limit` bytes. A body of one frame
    /// (the usual `Full<Bytes>`) is kept without a copy or an allocation.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use http_body_util::Full;
    /// use tower_llm_classify::replay::ReadBody;
    ///
    /// let bytes = ReadBody::new(Full::<bytes::Bytes>::from("{}"), 1024).await.unwrap();
    /// assert_eq!(&bytes[..], b"{}");
    /// let error = ReadBody::new(Full::<bytes::Bytes>::from("{}"), 1).await.unwrap_err();
    /// assert_eq!(error.kind(), tower_llm_classify::ErrorKind::PayloadTooLarge);
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ReadBody<B> {
        #[pin]
        body: B,
        first: Option<Bytes>,
        rest: Option<Vec<u8>>,
        limit: usize,
    }
}

impl<B> ReadBody<B> {
    /// Reads `body`, refusing more than `limit` bytes.
    pub fn new(body: B, limit: usize) -> Self {
        ReadBody {
            body,
            first: None,
            rest: None,
            limit,
        }
    }
}

impl<B> Future for ReadBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// The bytes, or a local error: payload too large, or the body's own
    /// error, classified.
    type Output = Result<Bytes, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match ready!(this.body.as_mut().poll_frame(cx)) {
                None => {
                    return Poll::Ready(Ok(match this.rest.take() {
                        Some(mut all) => {
                            // Kept for the whole request (every attempt
                            // sends it): no room left over from growing.
                            if all.capacity() - all.len() > all.len() / 8 {
                                all.shrink_to_fit();
                            }
                            Bytes::from(all)
                        }
                        None => this.first.take().unwrap_or_default(),
                    }));
                }
                Some(Err(error)) => {
                    let mut error = LlmError::from_source(error);
                    let c = error.classification().clone().with_phase(Phase::Local);
                    *error.classification_mut() = c;
                    return Poll::Ready(Err(error));
                }
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue; // trailers are not replayed
                    };
                    let len = this.first.as_ref().map_or(0, Bytes::len)
                        + this.rest.as_ref().map_or(0, Vec::len)
                        + data.remaining();
                    if len > *this.limit {
                        let message = format!(
                            "the request body is larger than the {} bytes kept to send it again",
                            this.limit
                        );
                        return Poll::Ready(Err(LlmError::local(
                            ErrorKind::PayloadTooLarge,
                            &message,
                        )));
                    }
                    let chunk = data.copy_to_bytes(data.remaining());
                    match (this.first.as_ref(), this.rest.as_mut()) {
                        (None, None) => *this.first = Some(chunk),
                        (Some(_), None) => {
                            // Room for what the body says is still to come
                            // (a declared length: no growing), within the
                            // limit.
                            let coming = usize::try_from(this.body.size_hint().lower())
                                .unwrap_or(usize::MAX);
                            let room = len.saturating_add(coming).min(*this.limit).max(len);
                            let mut all = Vec::with_capacity(room);
                            all.extend_from_slice(&this.first.take().unwrap_or_default());
                            all.extend_from_slice(&chunk);
                            *this.rest = Some(all);
                        }
                        (_, Some(all)) => all.extend_from_slice(&chunk),
                    }
                }
            }
        }
    }
}

/// How an outer layer that keeps the caller's request makes an attempt's
/// head again, so that a retry layer below it need not keep a copy of its
/// own: the retry sends the request it was given as its first attempt
/// (no copy) and asks for the head of each further one (a copy only when
/// an attempt fails). Found in the request's extensions.
///
/// `Fallback` sets it, when asked to (`LlmStack` does), on the request for
/// a target another may follow: it keeps the caller's request for that one
/// anyway, so without it a request was copied twice before its first
/// attempt (once by the fallback, once by the retry). The remade head must
/// be the one the retry was given, so it is set only where nothing stands
/// between the two layers.
///
/// ```
/// use std::sync::Arc;
/// use tower_llm_classify::replay::Remake;
///
/// let (caller, ()) = http::Request::post("https://api.openai.com/v1/chat/completions")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let caller = Arc::new(caller);
/// let remake = Remake::new(move || {
///     let mut head = http::Request::new(()).into_parts().0;
///     head.method = caller.method.clone();
///     head.uri = caller.uri.clone();
///     Some(head)
/// });
/// let head = remake.head().unwrap();
/// assert_eq!(head.uri.path(), "/v1/chat/completions");
/// ```
#[derive(Clone)]
pub struct Remake(std::sync::Arc<dyn RemakeHead>);

/// What makes a request's head again for a [`Remake`]: a closure
/// ([`Remake::new`]), or a value the outer layer keeps anyway, shared
/// ([`Remake::shared`]: no allocation of its own). `None` when it cannot
/// (the retry then ends with a failure rather than send another request).
pub trait RemakeHead: Send + Sync {
    /// A new head, the same as the first.
    fn head(&self) -> Option<http::request::Parts>;
}

/// A closure as a [`RemakeHead`].
struct MadeBy<F>(F);

impl<F> RemakeHead for MadeBy<F>
where
    F: Fn() -> Option<http::request::Parts> + Send + Sync,
{
    fn head(&self) -> Option<http::request::Parts> {
        (self.0)()
    }
}

impl Remake {
    /// Makes heads with `make`.
    pub fn new(make: impl Fn() -> Option<http::request::Parts> + Send + Sync + 'static) -> Self {
        Remake(std::sync::Arc::new(MadeBy(make)))
    }

    /// Makes heads with `head`, shared with whoever else holds it.
    pub fn shared(head: std::sync::Arc<dyn RemakeHead>) -> Self {
        Remake(head)
    }

    /// A new head, the same as the first.
    pub fn head(&self) -> Option<http::request::Parts> {
        self.0.head()
    }
}

impl std::fmt::Debug for Remake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remake(..)")
    }
}
