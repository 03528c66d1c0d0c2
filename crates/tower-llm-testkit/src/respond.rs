//! The parts of a reply every answer shares: error replies, the request id,
//! the providers' success headers, and the routes outside the APIs.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use crate::api::{Api, Exchange, Family};
use crate::body::SimBody;
use crate::capacity::Slot;
use crate::failure::ErrorReply;
use crate::failure::Failure;
use crate::record::Counters;
use crate::server::{Config, Shared};
use crate::wire::{push_json_str, rfc3339};

pub(crate) fn error_response(
    shared: &Shared,
    ex: &Exchange<'_>,
    failure: &Failure,
    slot: Option<Slot>,
) -> Response<SimBody> {
    let reply = failure.render(ex, shared.config.context_window);
    error_reply_response(shared, ex, reply, slot)
}

/// `reply` as a response, with the request id.
pub(crate) fn error_reply_response(
    shared: &Shared,
    ex: &Exchange<'_>,
    reply: ErrorReply,
    slot: Option<Slot>,
) -> Response<SimBody> {
    Counters::bump(&shared.counters.errors);
    let ErrorReply {
        status,
        mut headers,
        body,
    } = reply;
    insert_request_id(&mut headers, ex.api, ex.request_id);
    let mut response = Response::new(SimBody::full(body, slot));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

pub(crate) fn insert_request_id(headers: &mut HeaderMap, api: Api, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(api.request_id_header(), value);
    }
}

/// The headers of a healthy answer: request id and the provider's
/// rate-limit headers, with room to spare.
pub(crate) fn success_headers(headers: &mut HeaderMap, ex: &Exchange<'_>, took: Duration) {
    insert_request_id(headers, ex.api, ex.request_id);
    match ex.api.family() {
        Family::OpenAi => {
            headers.insert(
                "openai-processing-ms",
                HeaderValue::from(took.as_millis() as u64),
            );
            insert_static(headers, OPENAI_SUCCESS_HEADERS);
        }
        Family::Anthropic => {
            insert_static(headers, ANTHROPIC_SUCCESS_HEADERS);
            let reset = rfc3339(ex.now + Duration::from_secs(1), 0);
            if let Ok(reset) = HeaderValue::from_str(&reset) {
                headers.insert("anthropic-ratelimit-requests-reset", reset.clone());
                headers.insert("anthropic-ratelimit-tokens-reset", reset);
            }
        }
        Family::Ollama => {}
    }
}

/// The rate-limit headers of a healthy OpenAI answer: plenty of room left.
const OPENAI_SUCCESS_HEADERS: &[(&str, &str)] = &[
    ("openai-version", "2020-10-01"),
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-tokens", "29999000"),
    ("x-ratelimit-reset-tokens", "2ms"),
];

/// The rate-limit headers of a healthy Anthropic answer (resets added per request).
const ANTHROPIC_SUCCESS_HEADERS: &[(&str, &str)] = &[
    ("anthropic-ratelimit-requests-limit", "4000"),
    ("anthropic-ratelimit-requests-remaining", "3999"),
    ("anthropic-ratelimit-tokens-limit", "2000000"),
    ("anthropic-ratelimit-tokens-remaining", "1999000"),
];

fn insert_static(headers: &mut HeaderMap, pairs: &[(&'static str, &'static str)]) {
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_static(value));
    }
}

pub(crate) fn authorized(config: &Config, headers: &HeaderMap) -> bool {
    let Some(key) = &config.api_key else {
        return true;
    };
    let matches = |name: &str, prefix: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix(prefix))
                .is_some_and(|v| v == key)
        })
    };
    matches("authorization", "Bearer ") || matches("x-api-key", "") || matches("api-key", "")
}

pub(crate) fn missing_model(api: Api) -> &'static str {
    match api.family() {
        Family::OpenAi => "you must provide a model parameter",
        Family::Anthropic => "model: Field required",
        Family::Ollama => "model is required",
    }
}

pub(crate) fn health(shared: &Shared, method: &Method) -> Response<SimBody> {
    let (status, body) = if method == Method::GET || method == Method::HEAD {
        let stats = shared.counters.snapshot(shared.gate.in_service());
        let body = format!(
            "{{\"status\":\"ok\",\"requests\":{},\"in_service\":{},\"queued\":{}}}",
            stats.requests, stats.in_service, stats.queued
        );
        (StatusCode::OK, Bytes::from(body))
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"{\"status\":\"method not allowed\"}"),
        )
    };
    let mut response = Response::new(SimBody::full(body, None));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn not_found(
    shared: &Shared,
    method: &Method,
    path: &str,
    request_id: &str,
) -> Response<SimBody> {
    Counters::bump(&shared.counters.errors);
    let mut body = String::from("{\"error\":{\"message\":");
    push_json_str(&mut body, &format!("Invalid URL ({method} {path})"));
    body.push_str(",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
    let mut response = Response::new(SimBody::full(Bytes::from(body), None));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert_request_id(response.headers_mut(), Api::OpenAiChat, request_id);
    response
}
