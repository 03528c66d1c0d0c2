//! OpenAI-shaped error answers of the gateway's own (the provider's own
//! errors are passed on as they came: `endpoints`).

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;

/// An OpenAI-shaped error response, its `type` and `code` both `kind`.
pub(crate) fn error_json(status: StatusCode, kind: &str, message: &str) -> Response {
    error_json_with_code(status, kind, kind, message)
}

/// An OpenAI-shaped error response.
pub(crate) fn error_json_with_code(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
) -> Response {
    let body = json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// 413, for a body over `max_body_bytes`.
pub(crate) fn payload_too_large() -> Response {
    error_json(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than this gateway accepts",
    )
}

/// 503, for a request cut by the end of the shutdown grace period.
pub(crate) fn shutting_down() -> Response {
    error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the gateway is shutting down",
    )
}
