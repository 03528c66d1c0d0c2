//! [`ErrorShape`]: how an endpoint's errors look — OpenAI's
//! `{"error":{"message","type","param","code"}}` or Anthropic's
//! `{"type":"error","error":{"type","message"}}` with `x-should-retry` —
//! for the stack's failures and the gateway's own refusals alike.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use tower_llm::classify::stream::{Dialect, error_event};
use tower_llm::fallback::FallbackReport;
use tower_llm::retry::RetryStats;
use tower_llm::{ErrorKind, LlmError, Phase};

use crate::error::{error_json, payload_too_large, shutting_down};
use crate::headers::{ATTEMPTS, FALLBACKS, attempts_value, keep_to_gateway, passed_targets, set};

use super::is_length_limit;

/// The header Anthropic's API sets on an error to tell its SDKs whether to
/// retry it (the SDKs obey it before looking at the status:
/// anthropic-sdk-python `_base_client.py`, `_should_retry`).
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// How an endpoint's errors look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// OpenAI's error object (chat, completions, embeddings, Responses).
    OpenAi,
    /// Anthropic's error object, with `x-should-retry` (Messages).
    Anthropic,
}

impl ErrorShape {
    /// The shape of the errors of the endpoint at `path`: Anthropic's on
    /// its Messages API (`/v1/messages`, `/v1/messages/count_tokens`),
    /// OpenAI's everywhere else.
    pub(crate) fn of_path(path: &str) -> ErrorShape {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            ErrorShape::Anthropic
        } else {
            ErrorShape::OpenAi
        }
    }

    /// An error of the gateway's own: `kind` is OpenAI's `type` and `code`;
    /// Anthropic's type follows from the status, as its API pairs them
    /// (*Errors*, docs.claude.com: 400 `invalid_request_error`, 401
    /// `authentication_error`, 403 `permission_error`, 404
    /// `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`,
    /// 500 `api_error`, 529 `overloaded_error`).
    pub(crate) fn gateway_error(self, status: StatusCode, kind: &str, message: &str) -> Response {
        match self {
            ErrorShape::OpenAi => error_json(status, kind, message),
            ErrorShape::Anthropic => {
                let body = serde_json::json!({
                    "type": "error",
                    "error": { "type": anthropic_type(status), "message": message },
                });
                let mut response = (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response();
                // What Anthropic's SDKs retry when the header is absent:
                // 408, 409, 429 and 5xx.
                let retry = matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error();
                should_retry(&mut response, retry);
                response
            }
        }
    }

    /// 503 with `Retry-After: 1`: every slot of the gateway is taken.
    pub(crate) fn at_capacity(self, max_concurrency: usize) -> Response {
        metrics::counter!("tower_llm_gateway_rejected_total", "reason" => "concurrency")
            .increment(1);
        let mut response = self.gateway_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!("the gateway is at its limit of {max_concurrency} requests in flight"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }

    /// 413, for a body over `max_body_bytes`.
    pub(crate) fn payload_too_large(self) -> Response {
        match self {
            ErrorShape::OpenAi => payload_too_large(),
            ErrorShape::Anthropic => self.gateway_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than this gateway accepts",
            ),
        }
    }

    /// 503, for a request cut by the end of the shutdown grace period.
    pub(crate) fn shutting_down(self) -> Response {
        match self {
            ErrorShape::OpenAi => shutting_down(),
            ErrorShape::Anthropic => self.gateway_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down",
            ),
        }
    }

    /// The answer when the stack gives up: the provider's own error when
    /// there was one, otherwise one made from the classification, in this
    /// shape, with the fitting status and a `Retry-After` when a wait is
    /// known (all targets cooling down: 429).
    pub(crate) fn failure(self, error: LlmError) -> Response {
        if std::error::Error::source(&error).is_some_and(is_length_limit) {
            return self.payload_too_large();
        }
        let kind = error.kind();
        let retryable = error.retryable();
        let passed = error
            .extensions()
            .get::<FallbackReport>()
            .map(passed_targets);
        let attempts = RetryStats::of(error.extensions()).attempts;
        // A request the stack refused itself for what the caller sent (a
        // body that is not JSON, a model no route serves) reached no
        // target and says nothing of the gateway's health: logged at
        // debug, so that callers (any, without caller keys) cannot fill
        // the log at warn, as the key check's own refusals cannot.
        let callers_own = error.classification().phase() == Phase::Local
            && matches!(
                kind,
                ErrorKind::InvalidRequest
                    | ErrorKind::NotFound
                    | ErrorKind::PayloadTooLarge
                    | ErrorKind::ContextLengthExceeded
            );
        if callers_own {
            tracing::debug!(kind = kind.as_str(), error = %error, "refused");
        } else {
            tracing::warn!(kind = kind.as_str(), attempts, passed = passed.as_deref().unwrap_or(""), error = %error, "failed");
        }
        let mut response = if matches!(kind, ErrorKind::Authentication | ErrorKind::Permission)
            && error.response_head().is_some()
        {
            // A target refused the gateway's own key: not the caller's
            // fault, and the provider's body may echo (part of) that key.
            let mut response = self.gateway_error(
                StatusCode::BAD_GATEWAY,
                "upstream_authentication",
                "an upstream refused the gateway's credentials (see the gateway's log)",
            );
            if self == ErrorShape::Anthropic {
                // A 502 an SDK would retry: this one fails again until
                // the gateway's configuration changes.
                should_retry(&mut response, false);
            }
            response
        } else {
            self.stack_failure(error, retryable)
        };
        if let Some(passed) = passed.filter(|p| !p.is_empty()) {
            set(response.headers_mut(), FALLBACKS, &passed);
        }
        response
            .headers_mut()
            .insert(ATTEMPTS, attempts_value(attempts));
        response
    }

    /// The provider's own error (its status, message and hints), or one
    /// made from the classification when there was none.
    fn stack_failure(self, error: LlmError, retryable: bool) -> Response {
        match self {
            ErrorShape::OpenAi => {
                let mut response = error.into_response().map(Body::from);
                keep_to_gateway(response.headers_mut());
                response
            }
            ErrorShape::Anthropic if error.response_head().is_some() => {
                // Only Anthropic-protocol targets serve this endpoint: the
                // body is Anthropic's already. Its `x-should-retry` is kept;
                // where it sent none, the classification says.
                let mut response = error.into_response().map(Body::from);
                keep_to_gateway(response.headers_mut());
                if !response.headers().contains_key(SHOULD_RETRY) {
                    should_retry(&mut response, retryable);
                }
                response
            }
            ErrorShape::Anthropic => {
                // No upstream answer (connect failure, open circuits, no
                // target speaks the protocol): the status and `Retry-After`
                // the OpenAI shape would have, Anthropic's body — the data
                // of the error event a stream would end with, which is
                // exactly Anthropic's error object.
                let classification = error.classification().clone();
                let mut response = error.into_response().map(Body::from);
                let event = error_event(Dialect::Anthropic, &classification);
                let body = event_data(&event);
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                *response.body_mut() = Body::from(body);
                should_retry(&mut response, retryable);
                response
            }
        }
    }
}

/// The `data:` line of one SSE event, without its prefix and line end.
fn event_data(event: &[u8]) -> bytes::Bytes {
    let data = event
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"data: "))
        .unwrap_or_default();
    bytes::Bytes::copy_from_slice(data)
}

fn should_retry(response: &mut Response, retry: bool) {
    response.headers_mut().insert(
        SHOULD_RETRY,
        HeaderValue::from_static(if retry { "true" } else { "false" }),
    );
}

/// Anthropic's error type for a status (see [`ErrorShape::gateway_error`]).
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn json(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn an_anthropic_refusal_of_the_gateway_is_anthropic_shaped_and_says_whether_to_retry() {
        let busy = ErrorShape::Anthropic.at_capacity(4);
        assert_eq!(busy.status(), 503);
        assert_eq!(busy.headers()["x-should-retry"], "true");
        assert_eq!(busy.headers()["retry-after"], "1");
        let body = json(busy).await;
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "overloaded_error");

        let too_large = ErrorShape::Anthropic.payload_too_large();
        assert_eq!(too_large.headers()["x-should-retry"], "false");
        assert_eq!(json(too_large).await["error"]["type"], "request_too_large");

        let openai = json(ErrorShape::OpenAi.at_capacity(4)).await;
        assert_eq!(openai["error"]["type"], "overloaded");
    }

    #[tokio::test]
    async fn a_stack_failure_without_an_upstream_answer_is_anthropic_shaped_with_its_retry_after() {
        let limited = LlmError::local(ErrorKind::RateLimited, "every target is cooling down");
        let response = ErrorShape::Anthropic.failure(limited);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["x-should-retry"], "true");
        let body = json(response).await;
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cooling down"),
            "{body}"
        );
        let missing = LlmError::local(ErrorKind::NotFound, "no target speaks it");
        let response = ErrorShape::Anthropic.failure(missing);
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()["x-should-retry"], "false");
        assert_eq!(json(response).await["error"]["type"], "not_found_error");
    }
}
