//! `POST /v1/messages`: Anthropic's Messages API, native — what Claude
//! Code and the Anthropic SDKs call. Sent only to the targets of the
//! request's route that speak Anthropic's protocol (`protocol =
//! "anthropic"`: the target's own key in `x-api-key`, its own
//! `anthropic-version`); a route with none answers a 404 without a call.
//! Errors are Anthropic's (`{"type":"error","error":{…}}`, with
//! `x-should-retry` and `retry-after`), streams Anthropic's events; a
//! stream that breaks after content is continued by a target that can, or
//! ended with Anthropic's `event: error`.

use axum::extract::{Request, State};
use axum::response::Response;
use tower_llm::classify::stream::Dialect;
use tower_llm::fallback::Protocol;

use super::{Endpoint, ErrorShape, forward};
use crate::router::Gateway;

/// The beta features a caller asks for (Claude Code sends some): they
/// change what the answer may hold, so the target must see them. The
/// caller's `anthropic-version` is not passed on: each target sends the
/// one it is configured with.
const ANTHROPIC_BETA: &str = "anthropic-beta";

/// The Messages endpoint.
pub(crate) const MESSAGES: Endpoint = Endpoint {
    upstream_path: "/messages",
    protocol: Protocol::Anthropic,
    stream: Some(Dialect::Anthropic),
    also_forwarded: &[ANTHROPIC_BETA],
    errors: ErrorShape::Anthropic,
};

pub(crate) async fn messages(State(gateway): State<Gateway>, request: Request) -> Response {
    forward(&MESSAGES, gateway, request).await
}

/// `POST /v1/messages/count_tokens`: how many input tokens a Messages
/// request holds (the SDKs' `messages.count_tokens`), asked of the same
/// Anthropic-protocol targets, never streamed.
pub(crate) const COUNT_TOKENS: Endpoint = Endpoint {
    upstream_path: "/messages/count_tokens",
    protocol: Protocol::Anthropic,
    stream: None,
    also_forwarded: &[ANTHROPIC_BETA],
    errors: ErrorShape::Anthropic,
};

pub(crate) async fn count_tokens(State(gateway): State<Gateway>, request: Request) -> Response {
    forward(&COUNT_TOKENS, gateway, request).await
}
