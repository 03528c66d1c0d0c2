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
/// let client = ReqwestClient::without_redirects().unwrap();
/// // or your own, built with `.redirect(reqwest::redirect::Policy::none())`:
/// let client = ReqwestClient::new(
///     reqwest::Client::builder()
///         .redirect(reqwest::redirect::Policy::none())
///         .build()
///         .unwrap(),
/// );
/// let stack = LlmStack::sdk_default()
///     .target("openai", client, |t| t.base_url("https://api.openai.com/v1".parse().unwrap()))
///     .build()
///     .unwrap();
/// # let _ = stack;
/// ```
///
/// # Redirects
///
/// reqwest follows redirects by default and, on a redirect to another
/// host, strips only `authorization` and cookies: an `api-key` (Azure) or
/// `x-api-key` (Anthropic) would go to the new host. LLM APIs do not
/// redirect; build the client with `redirect(Policy::none())` (as
/// [`ReqwestClient::without_redirects`] does), so a redirect comes back as
/// a response instead.
#[derive(Clone, Debug)]
pub struct ReqwestClient(reqwest::Client);

impl ReqwestClient {
    /// A new reqwest client that does not follow redirects.
    pub fn without_redirects() -> Result<Self, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(ReqwestClient)
    }

    /// Wraps `client` (its pool, TLS and timeouts are kept). Build it
    /// with `redirect(reqwest::redirect::Policy::none())`: see
    /// [Redirects](#redirects).
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
