//! What the circuit crate's benches share: an upstream that answers at
//! once, so that what is timed is the layer in front of it.

use std::future::{Ready, ready};
use std::hint::black_box;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tower::Service;
use tower_llm_classify::LlmError;

/// Answers every request at once, empty, with `headers`.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    pub(crate) headers: &'static [(&'static str, &'static str)],
}

impl Upstream {
    /// An answer with no header at all.
    #[allow(dead_code)] // not every bench uses it
    pub(crate) const BARE: Upstream = Upstream { headers: &[] };
}

impl<B> Service<Request<B>> for Upstream {
    type Response = Response<Full<Bytes>>;
    type Error = LlmError;
    type Future = Ready<Result<Self::Response, LlmError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), LlmError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        drop(black_box(request));
        let mut response = Response::new(Full::new(Bytes::new()));
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        ready(Ok(response))
    }
}
