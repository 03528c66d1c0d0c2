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
use tower_llm_classify::{BoxError, Classification, ErrorKind, LlmError, Phase, RequestMeta};
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

/// The body with one top-level `model`, spelled `"model"`, carrying the
/// model it was routed by, when it names any: a body may repeat the key or
/// spell it with escapes (`"mod\u0065l"`), and the upstream must serve the
/// model the route chose (routes are also allow-lists and cost controls).
/// Routing read the last duplicate, decoded, as the permissive parsers do;
/// after this, parsers that keep the first, keep the last, or refuse
/// duplicates all read the routed model. The common body (one literal
/// `model`) goes as it came, without a copy. A body that starts as a JSON
/// object but is not valid JSON is refused here, without an upstream call:
/// what it would be routed as cannot be told.
fn one_model(bytes: Bytes, model: &str) -> Result<Bytes, LlmError> {
    tower_llm_fallback::normalise_model(&bytes, model).map_err(|e| {
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
                    let meta = RequestMeta::from_request(&parts.uri, &parts.headers, Some(&bytes));
                    let model = meta.model.as_deref();
                    let Some(fallback) = routes.pick(model) else {
                        return Poll::Ready(Err(no_route(model)));
                    };
                    let bytes = match model {
                        Some(model) => one_model(bytes, model)?,
                        None => bytes,
                    };
                    // Fallback is always ready (see `Stack::poll_ready`).
                    let call = fallback
                        .clone()
                        .call(Request::from_parts(parts, Full::new(bytes)));
                    State::Calling { call }
                }
                StateProj::Calling { call } => return call.poll(cx),
            };
            this.state.set(next);
        }
    }
}
