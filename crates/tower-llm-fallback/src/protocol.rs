//! [`Protocol`]: the API family a target speaks, and a request asks for.

/// The API family a target speaks: which request bodies and paths it
/// understands under its base URL.
///
/// A target speaks [`OpenAi`](Protocol::OpenAi) unless told otherwise
/// ([`Target::protocol`](crate::Target::protocol)). A request that carries
/// a `Protocol` in its extensions goes only to the targets that speak it
/// (a gateway's `POST /v1/messages` to Anthropic-protocol targets, its
/// OpenAI endpoints to the others); a request without one goes to every
/// target of its route, as it always did. The extension is set by the
/// program that makes the request (a gateway, from the endpoint it
/// serves), never read from anything the caller wrote.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower::ServiceExt;
/// use tower_llm_fallback::{Fallback, FallbackReport, Protocol, Target};
/// use tower_llm_testkit::Simulator;
///
/// let openai = Simulator::start().await?;
/// let anthropic = Simulator::start().await?;
/// let client = hyper_util::client::legacy::Client::builder(
///     hyper_util::rt::TokioExecutor::new(),
/// )
/// .build_http();
/// let fallback = Fallback::builder()
///     .target(Target::new("openai", client.clone()).base_url(format!("{}/v1", openai.base_url()).parse()?))
///     .target(
///         Target::new("claude", client)
///             .base_url(format!("{}/v1", anthropic.base_url()).parse()?)
///             .protocol(Protocol::Anthropic),
///     )
///     .build()?;
///
/// let mut request = http::Request::post("/messages")
///     .body(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[]}"#.to_owned())?;
/// request.extensions_mut().insert(Protocol::Anthropic);
/// let response = fallback.oneshot(request).await?;
/// let report = response.extensions().get::<FallbackReport>().unwrap();
/// assert_eq!(report.served_by.as_deref(), Some("claude"));
/// assert!(openai.requests().is_empty());
///
/// // No target of a route speaks it: nothing is sent, the error says why.
/// let openai_only = Fallback::builder()
///     .target(Target::new("openai", client_again()).base_url(format!("{}/v1", openai.base_url()).parse()?))
///     .build()?;
/// let mut request = http::Request::post("/messages").body(String::from("{}"))?;
/// request.extensions_mut().insert(Protocol::Anthropic);
/// let error = openai_only.oneshot(request).await.unwrap_err();
/// assert_eq!(error.kind(), tower_llm_classify::ErrorKind::NotFound);
/// assert!(openai.requests().is_empty());
/// # fn client_again() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Full<bytes::Bytes>> {
/// #     hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
/// # }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// OpenAI's API and every OpenAI-compatible server (`/chat/completions`,
    /// `/completions`, `/embeddings`, `/responses` under the base URL).
    #[default]
    OpenAi,
    /// Anthropic's native Messages API (`/messages` under the base URL,
    /// the key in `x-api-key`, an `anthropic-version` header).
    Anthropic,
}

impl Protocol {
    /// The protocol's name, as a configuration file writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Anthropic => "anthropic",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::OpenAi => "the OpenAI API",
            Protocol::Anthropic => "the Anthropic Messages API",
        })
    }
}
