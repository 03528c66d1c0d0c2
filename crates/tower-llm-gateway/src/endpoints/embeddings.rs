//! `POST /v1/embeddings`: OpenAI Embeddings, one vector per input (a
//! batch is one request, retried and failed over whole: a provider answers
//! all of its inputs or none). Never streamed: an answer cut midway is a
//! whole body, retried by the stack like any other.

use axum::extract::{Request, State};
use axum::response::Response;
use tower_llm::fallback::Protocol;

use super::{Endpoint, ErrorShape, forward};
use crate::router::Gateway;

/// The embeddings endpoint.
pub(crate) const EMBEDDINGS: Endpoint = Endpoint {
    upstream_path: "/embeddings",
    protocol: Protocol::OpenAi,
    stream: None,
    also_forwarded: &[],
    errors: ErrorShape::OpenAi,
};

pub(crate) async fn embeddings(State(gateway): State<Gateway>, request: Request) -> Response {
    forward(&EMBEDDINGS, gateway, request).await
}
