//! [`ReadyUpstream`]: an in-process upstream that answers at once.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tower_service::Service;

/// A service that answers every request at once, in the caller's task,
/// with a 200, fixed headers and a fixed body: the upstream of a
/// benchmark that times the layers in front of it and nothing else (no
/// socket, no task, nothing allocated but the answer). The request is
/// dropped through [`black_box`], so building it is not optimised away.
/// `E` is the error type the layers above expect (it is never returned).
///
/// ```
/// use std::convert::Infallible;
///
/// use http::Request;
/// use http_body_util::BodyExt;
/// use tower_llm_testkit::ReadyUpstream;
/// use tower_service::Service;
///
/// const JSON: ReadyUpstream<Infallible> =
///     ReadyUpstream::new(b"{}", &[("content-type", "application/json")]);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut upstream = JSON;
/// let answer = upstream.call(Request::new(())).await.unwrap();
/// assert_eq!(answer.headers()["content-type"], "application/json");
/// assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "{}");
/// # }
/// ```
pub struct ReadyUpstream<E = Infallible> {
    body: &'static [u8],
    headers: &'static [(&'static str, &'static str)],
    error: PhantomData<fn() -> E>,
}

impl<E> ReadyUpstream<E> {
    /// An empty answer with no header.
    pub const EMPTY: Self = Self::new(b"", &[]);

    /// Answers `body` with `headers` (names in lower case, as
    /// `HeaderName::from_static` takes them).
    pub const fn new(
        body: &'static [u8],
        headers: &'static [(&'static str, &'static str)],
    ) -> Self {
        ReadyUpstream {
            body,
            headers,
            error: PhantomData,
        }
    }
}

impl<E> Clone for ReadyUpstream<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ReadyUpstream<E> {}

impl<E> fmt::Debug for ReadyUpstream<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyUpstream")
            .field("body", &self.body.len())
            .field("headers", &self.headers)
            .finish()
    }
}

impl<B, E> Service<Request<B>> for ReadyUpstream<E> {
    type Response = Response<Full<Bytes>>;
    type Error = E;
    type Future = Ready<Result<Self::Response, E>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        drop(black_box(request));
        let mut response = Response::new(Full::new(Bytes::from_static(self.body)));
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        ready(Ok(response))
    }
}
