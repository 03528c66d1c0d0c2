//! `POST /v1/responses`: OpenAI's Responses API, whole and streamed as
//! typed `response.*` events. The stack reads the dialect from the path:
//! `response.failed` and `error` events are classified failures (retried
//! when they come before content), `response.completed` ends a stream. A
//! stream that breaks after content is not continued (the Responses
//! dialect has no prefill); it ends with the dialect's `error` event.

use axum::extract::{Request, State};
use axum::response::Response;
use tower_llm::classify::stream::Dialect;
use tower_llm::fallback::Protocol;

use super::{Endpoint, ErrorShape, forward};
use crate::router::Gateway;

/// The Responses endpoint.
pub(crate) const RESPONSES: Endpoint = Endpoint {
    upstream_path: "/responses",
    protocol: Protocol::OpenAi,
    stream: Some(Dialect::OpenAiResponses),
    also_forwarded: &[],
    errors: ErrorShape::OpenAi,
};

pub(crate) async fn responses(State(gateway): State<Gateway>, request: Request) -> Response {
    forward(&RESPONSES, gateway, request).await
}
