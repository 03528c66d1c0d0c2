//! The contenders on our side of the table: a bare hyper client (no
//! resilience at all) and the tower-llm stack with its default preset.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_llm::LlmError;
use tower_llm::fallback::continuation::Continuation;
use tower_llm::retry::ReplayBody;
use tower_llm::stack::{LlmStack, Stack};

use crate::contender::{Call, Contender, Outcome, Setup, finish, read};

fn is_stream(body: &[u8]) -> bool {
    body.windows(13).any(|w| w == b"\"stream\":true")
}

/// A hyper-util client, nothing else (a timeout when the scenario sets one).
struct Bare {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
    timeout: Option<std::time::Duration>,
}

impl Contender for Bare {
    fn call(&self, body: Bytes) -> Call<'_> {
        Box::pin(async move {
            let stream = is_stream(&body);
            let request = Request::post(&self.url)
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("a valid request");
            let call = async {
                match self.client.request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        finish(status, read(response.into_body()).await, stream)
                    }
                    Err(_) => Outcome::Err {
                        status: None,
                        partial: String::new(),
                        cause: None,
                    },
                }
            };
            match self.timeout {
                Some(limit) => tokio::time::timeout(limit, call)
                    .await
                    .unwrap_or(Outcome::Err {
                        status: None,
                        partial: String::new(),
                        cause: None,
                    }),
                None => call.await,
            }
        })
    }
}

/// A bare hyper client.
pub(crate) fn bare(setup: &Setup) -> Box<dyn Contender> {
    Box::new(Bare {
        client: Client::builder(TokioExecutor::new()).build_http(),
        url: format!("{}/v1/chat/completions", setup.primary),
        timeout: setup.attempt_timeout,
    })
}

/// The tower-llm stack.
struct Ours {
    stack: Stack,
}

impl Contender for Ours {
    fn call(&self, body: Bytes) -> Call<'_> {
        Box::pin(async move {
            let stream = is_stream(&body);
            let request = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("a valid request");
            match self.stack.clone().oneshot(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // What broke the answer, as its error kind.
                    let body = response
                        .into_body()
                        .map_err(|error: LlmError| error.kind().as_str());
                    finish(status, read(body).await, stream)
                }
                Err(error) => Outcome::Err {
                    status: error.response_head().map(|h| h.status.as_u16()),
                    partial: String::new(),
                    cause: Some(error.kind().as_str().to_owned()),
                },
            }
        })
    }
}

/// `LlmStack::sdk_default()` over a hyper client: the primary, and the
/// backup as a fallback target when the scenario has one.
pub(crate) fn tower_llm(setup: &Setup) -> Box<dyn Contender> {
    let (primary, backup) = (setup.primary.as_str(), setup.backup.as_deref());
    let client: Client<HttpConnector, ReplayBody> =
        Client::builder(TokioExecutor::new()).build_http();
    let primary: http::Uri = primary.parse().expect("a base URL");
    // The default preset, its jitter seeded so that runs repeat, and the
    // scenario's per-attempt limit when it sets one.
    let preset = tower_llm::stack::Preset::SdkDefault;
    let mut retry = preset.retry().to_builder().seed(7);
    if let Some(limit) = setup.attempt_timeout {
        retry = retry.attempt_timeout(limit);
    }
    if let Some(limit) = setup.first_content_timeout {
        retry = retry.first_content_timeout(limit);
    }
    let retry = retry.build().expect("a policy");
    let circuit = preset
        .circuit()
        .to_builder()
        .seed(7)
        .build()
        .expect("a config");
    // The simulated providers continue a trailing assistant message, as
    // Anthropic's, Ollama's and llama.cpp's APIs do: their targets say so
    // (a loopback URL names no provider whose support is known).
    let continues = Continuation::TrailingAssistant;
    let mut stack = LlmStack::preset(preset)
        .retry(retry)
        .circuit(circuit)
        .target("primary", client.clone(), |t| {
            let continues = if setup.primary_continues {
                continues
            } else {
                Continuation::Unsupported
            };
            t.base_url(primary).continuation(continues)
        });
    if let Some(backup) = backup {
        let backup: http::Uri = backup.parse().expect("a base URL");
        stack = stack.target("backup", client, |t| {
            t.base_url(backup).continuation(continues)
        });
    }
    Box::new(Ours {
        stack: stack.build().expect("a valid stack"),
    })
}
