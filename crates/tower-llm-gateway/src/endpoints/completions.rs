//! `POST /v1/completions`: OpenAI's legacy Completions (`prompt` in,
//! `choices[].text` out), whole and streamed as `text_completion` chunks
//! ending in `data: [DONE]` — the chat stream's framing, so the stack
//! classifies it as chat (`Dialect::from_path`). A stream that breaks after
//! content is not continued (there are no messages to append the delivered
//! text to); it ends with OpenAI's in-band error chunk.

use axum::extract::{Request, State};
use axum::response::Response;
use tower_llm::classify::stream::Dialect;
use tower_llm::fallback::Protocol;

use super::{Endpoint, ErrorShape, forward};
use crate::router::Gateway;

/// The legacy completions endpoint.
pub(crate) const COMPLETIONS: Endpoint = Endpoint {
    upstream_path: "/completions",
    protocol: Protocol::OpenAi,
    stream: Some(Dialect::OpenAiChat),
    also_forwarded: &[],
    errors: ErrorShape::OpenAi,
};

pub(crate) async fn completions(State(gateway): State<Gateway>, request: Request) -> Response {
    forward(&COMPLETIONS, gateway, request).await
}
