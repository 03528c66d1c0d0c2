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
use tower_llm_classify::{BoxError, Classification, ErrorKind, LlmError, Phase, RequestMeta, json};
use tower_llm_fallback::Fallback;
use tower_service::Service;

use super::{Routes, StackBody, TargetService};

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
    LlmError::new(
        Classification::new(kind)
            .with_phase(Phase::Local)
            .with_message(&message),
    )
}

/// The route for the body's `model`, and the body to send it: one that
/// every parser reads the routed model from.
///
/// The model is the body's top-level `model` — keys decoded, the last if
/// the key is repeated, as serde_json's `Value` and Python read it and as
/// [`RequestMeta`] reports it — or the one in the path. One walk of the
/// body finds it and says whether the body is unambiguous (one `model`
/// spelled without escapes, or none); the common body goes as it came,
/// without a copy.
fn route(
    routes: &Routes,
    parts: &http::request::Parts,
    bytes: Bytes,
) -> Result<(Fallback<TargetService>, Bytes), LlmError> {
    let found = json::model_members(&bytes);
    let from_path;
    let model = match found.last.as_deref() {
        Some(model) => Some(model),
        None => {
            from_path = RequestMeta::from_request(&parts.uri, &parts.headers, None).model;
            from_path.as_deref()
        }
    };
    let fallback = routes.pick(model).ok_or_else(|| no_route(model))?.clone();
    let rewritten = match model {
        Some(model) if !found.is_unambiguous() => Some(one_model(&bytes, model)?),
        _ => None,
    };
    drop(found);
    Ok((fallback, rewritten.unwrap_or(bytes)))
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
    tower_llm_fallback::normalise_model(bytes, model).map_err(|e| {
        LlmError::new(
            Classification::new(ErrorKind::InvalidRequest)
                .with_phase(Phase::Local)
                .with_message(&e.to_string()),
        )
    })
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
                    let Some(parts) = parts.take() else {
                        // Polled again after an error was returned.
                        return Poll::Ready(Err(LlmError::new(
                            Classification::new(ErrorKind::Unknown).with_phase(Phase::Local),
                        )));
                    };
                    let (mut fallback, bytes) = route(routes, &parts, bytes)?;
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
