//! The stack's future: read the body (bounded), pick the route by the
//! body's `model`, run that route's fallback.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_llm_classify::replay::ReadBody;
use tower_llm_classify::{BoxError, ErrorKind, LlmError, RequestMeta};
use tower_llm_fallback::Fallback;
use tower_service::Service;

use super::routes::Routes;
use super::{StackBody, TargetService};

type FallbackFuture = tower_llm_fallback::future::ResponseFuture<TargetService, Full<Bytes>>;

pin_project! {
    /// The future of a call through a [`Stack`](super::Stack).
    pub struct ResponseFuture<B> {
        #[pin]
        state: State<B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B> {
        Reading {
            #[pin]
            read: ReadBody<B>,
            parts: Option<http::request::Parts>,
            routes: Arc<Routes>,
        },
        Calling {
            #[pin]
            call: FallbackFuture,
        },
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<B> ResponseFuture<B> {
    pub(super) fn new(routes: Arc<Routes>, request: Request<B>) -> Self {
        let (parts, body) = request.into_parts();
        ResponseFuture {
            state: State::Reading {
                read: ReadBody::new(body, routes.max_body),
                parts: Some(parts),
                routes,
            },
        }
    }
}

fn no_route(model: Option<&str>) -> LlmError {
    let (kind, message) = match model {
        Some(model) => (
            ErrorKind::NotFound,
            format!("no route serves the model `{model}`"),
        ),
        // Not JSON, or no string `model`: the request is at fault.
        None => (
            ErrorKind::InvalidRequest,
            "the request body is not a JSON object with a string `model`".to_owned(),
        ),
    };
    LlmError::local(kind, &message)
}

/// The route for the body's `model`, and the body to send it: one that
/// every parser reads the routed model from.
///
/// The model is the body's top-level `model` — keys decoded, the last if
/// the key is repeated, as serde_json's `Value` and Python read it — or
/// the one in the path: what [`RequestMeta`] reports. One walk of the body
/// reads the request's `RequestMeta` and says whether the body is
/// unambiguous (one `model` spelled without escapes, or none); the common
/// body goes as it came, without a copy. The `RequestMeta` goes in the
/// request's extensions: the layers below (fallback, retry, circuit,
/// classify) read it there and never scan the body again.
fn route(
    routes: &Routes,
    parts: &mut http::request::Parts,
    bytes: Bytes,
) -> Result<(Fallback<TargetService>, Bytes), LlmError> {
    let (meta, unambiguous) = RequestMeta::from_whole_body(&parts.uri, &parts.headers, &bytes);
    let model = meta.model.as_deref();
    if model.is_none() && !unambiguous && is_json(&parts.headers, &bytes) {
        // A JSON body whose model cannot be read as every upstream would
        // read it (`{"model":"o1-pro","model":null}` is `o1-pro` to Go and
        // none to Python; a byte-order mark or a broken object hides it
        // from this scan but not from every parser): it is refused rather
        // than sent down the default route.
        return Err(LlmError::local(
            ErrorKind::InvalidRequest,
            "the body's `model` cannot be read unambiguously: send one JSON object, UTF-8 without a byte-order mark, with one string `model`",
        ));
    }
    if model.is_some_and(|model| model.len() > RequestMeta::MAX_MODEL_LEN) {
        return Err(LlmError::local(
            ErrorKind::InvalidRequest,
            &format!(
                "the request's model is longer than any model's name ({} bytes)",
                RequestMeta::MAX_MODEL_LEN
            ),
        ));
    }
    let fallback = routes.pick(model).ok_or_else(|| no_route(model))?.clone();
    let rewritten = match model {
        Some(model) if !unambiguous => Some(one_model(&bytes, model)?),
        _ => None,
    };
    parts.extensions.insert(meta);
    Ok((fallback, rewritten.unwrap_or(bytes)))
}

/// Whether the request says or looks like JSON: a JSON content type, a
/// byte-order mark, or `{` as the first byte after white space. Other
/// bodies (multipart uploads, audio) pass as they come.
fn is_json(headers: &http::HeaderMap, bytes: &[u8]) -> bool {
    let declared = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let bom = bytes.starts_with(&[0xEF, 0xBB, 0xBF])
        || bytes.starts_with(&[0xFE, 0xFF])
        || bytes.starts_with(&[0xFF, 0xFE]);
    declared || bom || bytes.trim_ascii_start().starts_with(b"{")
}

/// The body with one top-level `model`, spelled `"model"`, carrying the
/// model it was routed by: a body may repeat the key or spell it with
/// escapes (`"mod\u0065l"`), and the upstream must serve the model the
/// route chose (routes are also allow-lists and cost controls). After
/// this, parsers that keep the first, keep the last, or refuse duplicates
/// all read the routed model. A body that starts as a JSON object but is
/// not valid JSON is refused, without an upstream call: what it would be
/// served as cannot be told.
fn one_model(bytes: &Bytes, model: &str) -> Result<Bytes, LlmError> {
    tower_llm_fallback::normalise_model(bytes, model)
        .map_err(|e| LlmError::local(ErrorKind::InvalidRequest, &e.to_string()))
}

impl<B> Future for ResponseFuture<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<StackBody>, LlmError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state.as_mut().project() {
                StateProj::Reading {
                    read,
                    parts,
                    routes,
                } => {
                    let bytes = ready!(read.poll(cx))?;
                    let Some(mut parts) = parts.take() else {
                        // Polled again after an error was returned.
                        return Poll::Ready(Err(LlmError::local(
                            ErrorKind::Unknown,
                            "stack future polled after completion",
                        )));
                    };
                    let (mut fallback, bytes) = route(routes, &mut parts, bytes)?;
                    // Fallback is always ready (see `Stack::poll_ready`).
                    let call = fallback.call(Request::from_parts(parts, Full::new(bytes)));
                    State::Calling { call }
                }
                StateProj::Calling { call } => return call.poll(cx),
            };
            this.state.set(next);
        }
    }
}
