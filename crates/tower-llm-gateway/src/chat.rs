//! `POST /v1/chat/completions`: the caller's request, read whole, through
//! the stack; the answer (whole or streamed) passed back with what happened
//! to it in the `x-tower-llm-*` headers, or the failure shaped for an
//! OpenAI client.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_llm::classify::stream::Dialect;
use tower_llm::fallback::FallbackReport;
use tower_llm::fallback::continuation::ContinuationReport;
use tower_llm::retry::RetryStats;
use tower_llm::{ErrorKind, LlmError};

use crate::body;
use crate::error::{error_json, payload_too_large, shutting_down};
use crate::headers::{
    ATTEMPTS_HEADER, CONTINUED_TRAILER, FALLBACKS_HEADER, TARGET_HEADER, attempts_value,
    keep_to_gateway, passed_targets, set,
};
use crate::router::Gateway;
use crate::shutdown::Closing;

/// The request headers passed on to a target. Everything else stays here:
/// the caller's credentials above all (each target sets its own key), and
/// hop-by-hop and cookie headers.
const FORWARDED: [HeaderName; 3] = [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT];

pub(crate) async fn chat_completions(State(gateway): State<Gateway>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let wants_trailers = parts.headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .windows(8)
            .any(|w| w.eq_ignore_ascii_case(b"trailers"))
    });
    // The whole body first, then a permit: a caller trickling its body
    // holds its connection, never a slot other callers need.
    let body = match read_body(body, gateway.request_body_timeout, &gateway.closing).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(permit) = Arc::clone(&gateway.permits).try_acquire_owned() else {
        metrics::counter!("tower_llm_gateway_rejected_total", "reason" => "concurrency")
            .increment(1);
        let mut response = error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!(
                "the gateway is at its limit of {} requests in flight",
                gateway.max_concurrency
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    // The body as the bytes it is (no boxed body), the path from a static
    // (no parse): the stack reads both as they are.
    let mut upstream = http::Request::new(Full::new(body));
    *upstream.method_mut() = http::Method::POST;
    *upstream.uri_mut() = http::Uri::from_static("/chat/completions");
    for name in FORWARDED {
        if let Some(value) = parts.headers.get(&name) {
            upstream.headers_mut().insert(name, value.clone());
        }
    }
    let call = gateway.stack.clone().oneshot(upstream);
    let result = tokio::select! {
        result = call => result,
        () = gateway.closing.closed() => return shutting_down(),
    };
    match result {
        Ok(response) => {
            let report = response.extensions().get::<FallbackReport>();
            let target = report.and_then(|r| r.served_by.clone());
            let passed = report
                .filter(|r| !r.failures.is_empty())
                .map(passed_targets);
            let attempts = RetryStats::of(response.extensions()).attempts;
            // Counted, timed and logged by `observe`, from the headers
            // set here.
            let (mut head, body) = response.into_parts();
            keep_to_gateway(&mut head.headers);
            set(
                &mut head.headers,
                TARGET_HEADER,
                target.as_deref().unwrap_or("-"),
            );
            head.headers.insert(
                HeaderName::from_static(ATTEMPTS_HEADER),
                attempts_value(attempts),
            );
            if let Some(passed) = passed {
                set(&mut head.headers, FALLBACKS_HEADER, &passed);
            }
            // The permit is held until the body is done: a stream counts
            // as in flight for as long as it streams.
            // A stream that fails after its head ends with an error event
            // in the caller's dialect (this endpoint's: OpenAI chat).
            let streamed = head
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let continuation = streamed
                .then(|| head.extensions.get::<ContinuationReport>().cloned())
                .flatten();
            let trailers = wants_trailers && continuation.is_some();
            if trailers {
                head.headers
                    .insert(header::TRAILER, HeaderValue::from_static(CONTINUED_TRAILER));
            }
            let body = body::ResponseBody::new(
                body,
                permit,
                Box::pin(gateway.closing.closed()),
                gateway.stream_idle_timeout,
                streamed.then_some(Dialect::OpenAiChat),
            )
            .reporting(continuation, trailers);
            Response::from_parts(head, Body::new(body))
        }
        Err(error) => failure(error),
    }
}

/// The request body, whole, read within `timeout` (counted from the end of
/// the request head) and the body limit; otherwise the answer to send.
async fn read_body(body: Body, timeout: Duration, closing: &Closing) -> Result<Bytes, Response> {
    let read = tokio::time::timeout(timeout, body.collect());
    let read = tokio::select! {
        read = read => read,
        () = closing.closed() => return Err(shutting_down()),
    };
    match read {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(error)) if is_length_limit(&error) => Err(payload_too_large()),
        // Most often the caller went away: the answer goes nowhere.
        Ok(Err(error)) => Err(error_json(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("the request body could not be read: {error}"),
        )),
        Err(_elapsed) => {
            metrics::counter!("tower_llm_gateway_timeouts_total", "stage" => "body").increment(1);
            tracing::info!(
                timeout_ms = timeout.as_millis() as u64,
                "request refused: body not received within request_body_timeout_ms"
            );
            let mut response = error_json(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                &format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            );
            // The rest of the body may still come: this connection is done
            // (RFC 9110 §15.5.9).
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

/// The answer when the stack gives up: the provider's own error when there
/// was one, otherwise an OpenAI-shaped error with the fitting status and a
/// `Retry-After` when a wait is known (all targets cooling down: 429).
fn failure(error: LlmError) -> Response {
    if std::error::Error::source(&error).is_some_and(is_length_limit) {
        return payload_too_large();
    }
    let kind = error.kind();
    let passed = error
        .extensions()
        .get::<FallbackReport>()
        .map(passed_targets);
    let attempts = RetryStats::of(error.extensions()).attempts;
    tracing::warn!(kind = kind.as_str(), attempts, passed = passed.as_deref().unwrap_or(""), error = %error, "failed");
    let mut response = if matches!(kind, ErrorKind::Authentication | ErrorKind::Permission)
        && error.response_head().is_some()
    {
        // A target refused the gateway's own key: not the caller's fault,
        // and the provider's body may echo (part of) that key.
        error_json(
            StatusCode::BAD_GATEWAY,
            "upstream_authentication",
            "an upstream refused the gateway's credentials (see the gateway's log)",
        )
    } else {
        // The provider's own error (its status, message and hints), or
        // one made from the classification when there was none.
        let mut response = error.into_response().map(Body::from);
        keep_to_gateway(response.headers_mut());
        response
    };
    if let Some(passed) = passed.filter(|p| !p.is_empty()) {
        set(response.headers_mut(), FALLBACKS_HEADER, &passed);
    }
    set(
        response.headers_mut(),
        ATTEMPTS_HEADER,
        &attempts.to_string(),
    );
    response
}

/// Whether `error`, or an error under it, is the body limit cutting the
/// request body.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut error = Some(error);
    while let Some(e) = error {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        error = e.source();
    }
    false
}
