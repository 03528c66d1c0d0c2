//! [`error_event`]: a failure as the caller's dialect carries it inside a
//! stream, to end a stream that cannot be saved.

use bytes::Bytes;

use super::Dialect;
use crate::classification::MAX_MESSAGE_LEN;
use crate::{Classification, ErrorKind};

/// The in-band error event that tells a streaming caller why its stream
/// ends, in the caller's dialect:
///
/// - OpenAI chat (and generic SSE): `data: {"error":{"message","type","param","code"}}`
///   and a blank line, as OpenAI sends a failure after the head
///   (openai-python's `Stream` raises `APIError` with its message);
/// - Anthropic Messages: `event: error` with
///   `data: {"type":"error","error":{"type","message"}}`, the error types
///   of Anthropic's API (*Errors*, docs.claude.com): an overload is
///   `overloaded_error`, a rate limit `rate_limit_error`;
/// - OpenAI Responses: `event: error` with
///   `data: {"type":"error","code","message","param"}` (no
///   `sequence_number`: the event is not the upstream's);
/// - Ollama: an `{"error":"…"}` line, as Ollama's server writes one
///   (`server/routes.go`).
///
/// The message is the classification's `Display` (kind, provider, code,
/// request id, the provider's message), cut to 1 KiB with credentials and
/// account identifiers redacted as in every classification message
/// (`sk-…` → `[redacted]`, `org-…` → `org-[redacted]`). A gateway ends a
/// stream that failed after content with this event and a clean end of
/// the body, so that an SDK learns why instead of reporting a bare
/// connection error; in code the body's error stays the typed
/// [`LlmError`](crate::LlmError).
///
/// ```
/// use tower_llm_classify::stream::{Dialect, error_event};
/// use tower_llm_classify::{Classification, ErrorKind, Provider};
///
/// let overloaded = Classification::new(ErrorKind::Overloaded)
///     .with_provider(Provider::Anthropic)
///     .with_message("Overloaded");
/// let event = error_event(Dialect::Anthropic, &overloaded);
/// let text = std::str::from_utf8(&event).unwrap();
/// assert!(text.starts_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""));
/// assert!(text.ends_with("\n\n"));
/// ```
pub fn error_event(dialect: Dialect, classification: &Classification) -> Bytes {
    let kind = classification.kind();
    let message = quoted(&crate::redact::redact_message(
        &classification.to_string(),
        MAX_MESSAGE_LEN,
    ));
    // Written by hand, keys in the order the providers write them.
    let text = match dialect {
        Dialect::Anthropic => format!(
            "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{}\",\"message\":{message}}}}}\n\n",
            anthropic_type(kind)
        ),
        Dialect::OpenAiResponses => format!(
            "event: error\ndata: {{\"type\":\"error\",\"code\":\"{}\",\"message\":{message},\"param\":null}}\n\n",
            openai_type_and_code(kind).1
        ),
        Dialect::OllamaNdjson => format!("{{\"error\":{message}}}\n"),
        Dialect::OpenAiChat | Dialect::Generic => {
            let (kind_type, code) = openai_type_and_code(kind);
            format!(
                "data: {{\"error\":{{\"message\":{message},\"type\":\"{kind_type}\",\"param\":null,\"code\":\"{code}\"}}}}\n\n"
            )
        }
    };
    Bytes::from(text)
}

/// A JSON string of `text`.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Anthropic's error type for a kind (*Errors*, docs.claude.com; 409
/// `conflict_error` as the API sends it).
const fn anthropic_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::RateLimited | ErrorKind::BudgetExhausted => "rate_limit_error",
        ErrorKind::QuotaExhausted => "billing_error",
        ErrorKind::Overloaded | ErrorKind::CircuitOpen => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::InvalidRequest
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::ContentFiltered => "invalid_request_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::Conflict => "conflict_error",
        ErrorKind::ServerError
        | ErrorKind::Connect
        | ErrorKind::Transport
        | ErrorKind::Cancelled
        | ErrorKind::StreamIncomplete
        | ErrorKind::Unknown => "api_error",
    }
}

/// OpenAI's error `type` and `code` for a kind, as its API writes them
/// (`requests` / `rate_limit_exceeded` for a rate limit,
/// `insufficient_quota`, `service_unavailable_error` /
/// `server_is_overloaded`, `invalid_request_error` with
/// `context_length_exceeded`, `invalid_api_key`, `model_not_found`); the
/// kind's own name as the code where OpenAI has none.
const fn openai_type_and_code(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::RateLimited | ErrorKind::BudgetExhausted => ("requests", "rate_limit_exceeded"),
        ErrorKind::QuotaExhausted => ("insufficient_quota", "insufficient_quota"),
        ErrorKind::Overloaded | ErrorKind::CircuitOpen => {
            ("service_unavailable_error", "server_is_overloaded")
        }
        ErrorKind::Authentication => ("invalid_request_error", "invalid_api_key"),
        ErrorKind::Permission => ("request_forbidden", "permission"),
        ErrorKind::NotFound => ("invalid_request_error", "model_not_found"),
        ErrorKind::InvalidRequest => ("invalid_request_error", "invalid_request"),
        ErrorKind::ContextLengthExceeded => ("invalid_request_error", "context_length_exceeded"),
        ErrorKind::ContentFiltered => ("invalid_request_error", "content_policy_violation"),
        ErrorKind::PayloadTooLarge => ("invalid_request_error", "payload_too_large"),
        ErrorKind::ServerError
        | ErrorKind::Timeout
        | ErrorKind::Connect
        | ErrorKind::Transport
        | ErrorKind::Conflict
        | ErrorKind::Cancelled
        | ErrorKind::StreamIncomplete
        | ErrorKind::Unknown => ("server_error", kind.as_str()),
    }
}
