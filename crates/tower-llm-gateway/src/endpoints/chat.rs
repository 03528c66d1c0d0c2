//! `POST /v1/chat/completions`: OpenAI Chat Completions, whole and
//! streamed, to OpenAI-protocol targets; a stream that breaks after content
//! is continued by a target that can ([`ContinuationReport`] in the
//! trailer), or ended with OpenAI's in-band error chunk.
//!
//! [`ContinuationReport`]: tower_llm::fallback::continuation::ContinuationReport

use axum::extract::{Request, State};
use axum::response::Response;
use tower_llm::classify::stream::Dialect;
use tower_llm::fallback::Protocol;

use super::{Endpoint, ErrorShape, forward};
use crate::router::Gateway;

/// The chat completions endpoint.
pub(crate) const CHAT: Endpoint = Endpoint {
    upstream_path: "/chat/completions",
    protocol: Protocol::OpenAi,
    stream: Some(Dialect::OpenAiChat),
    also_forwarded: &[],
    errors: ErrorShape::OpenAi,
};

pub(crate) async fn chat_completions(State(gateway): State<Gateway>, request: Request) -> Response {
    forward(&CHAT, gateway, request).await
}
