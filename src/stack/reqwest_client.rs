//! A reqwest client as a service of `http` requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_llm_retry::ReplayBody;
use tower_service::Service;

/// A reqwest client as a service of `http` requests, so it can sit under
/// the stack (feature `reqwest`). Errors stay `reqwest::Error`s, which the
/// classify layer reads (connect, timeout, reset).
///
/// ```
/// use tower_llm::stack::{LlmStack, ReqwestClient};
///
/// let client = ReqwestClient::new(reqwest::Client::new());
/// let stack = LlmStack::sdk_default()
///     .target("openai", client, |t| t.base_url("https://api.openai.com".parse().unwrap()))
///     .build()
///     .unwrap();
/// # let _ = stack;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReqwestClient(reqwest::Client);

impl ReqwestClient {
    /// Wraps `client` (its pool, TLS and timeouts are kept).
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestClient(client)
    }

    /// The client inside.
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.0
    }
}

impl Service<Request<ReplayBody>> for ReqwestClient {
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        // reqwest queues inside its pool; it has no readiness to report.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReplayBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, reqwest::Body::wrap(body));
        let client = self.0.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            client.execute(request).await.map(Response::from)
        })
    }
}
