//! Classifying an error response (or an in-band error event) from its status,
//! headers and the provider's error body.
//!
//! Rules are written from each provider's error catalogue (status, `type`,
//! `code`, headers) and the messages LiteLLM matches
//! (`litellm_core_utils/exception_mapping_utils.py`), in this order of trust:
//! specific error codes and types, then a *whole* provider message template
//! that the status agrees with (never a phrase found inside a message: a 4xx
//! message may repeat the caller's request, see `template.rs`), then the
//! generic types and the HTTP status. Error bodies are recognised whatever
//! the provider (gateways and OpenAI-compatible hosts mix the shapes).

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::classification::Phase;
use crate::hint::{self, Hint, HintSource};
use crate::template::{self, TextKind};
use crate::{Classification, ErrorKind, Provider};

/// Classifies an error response from its status, headers and (bounded) body.
///
/// `now` pins HTTP-date and RFC 3339 hints in tests; pass
/// `SystemTime::now()` otherwise. The body may be empty, truncated, HTML or
/// anything else: the status still classifies it.
///
/// ```
/// use std::time::SystemTime;
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_classify::{classify_response, ErrorKind, Provider};
///
/// // A 429 that is a billing problem, not a rate limit: never retry it.
/// let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
/// let c = classify_response(Provider::OpenAi, StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body, SystemTime::now());
/// assert_eq!(c.kind(), ErrorKind::QuotaExhausted);
/// assert!(!c.retryable());
/// ```
pub fn classify_response(
    provider: Provider,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Classification {
    let fields = ErrorFields::parse(body, Some(headers));
    let mut classification = decide(provider, Some(status.as_u16()), Some(headers), &fields, now)
        .with_status(status)
        .with_phase(Phase::AfterHeaders)
        .with_retry_override(hint::should_retry(headers));
    classification.set_request_id(
        provider
            .request_id_headers()
            .iter()
            .find_map(|name| headers.get(*name)?.to_str().ok())
            .map(Into::into)
            .or(fields.request_id.map(Into::into)),
    );
    classification
}

/// Classifies the JSON payload of an in-band error event (an SSE `error`
/// event, a `data: {"error": …}` chunk, an Ollama `{"error": …}` line) that
/// arrived inside a 200 response.
pub(crate) fn classify_event(provider: Provider, payload: &[u8], phase: Phase) -> Classification {
    let fields = ErrorFields::parse(payload, None);
    decide(provider, None, None, &fields, SystemTime::now()).with_phase(phase)
}

/// The parts of a provider error body that decide its kind.
#[derive(Debug, Default)]
struct ErrorFields {
    message: Option<String>,
    /// Error codes and types, most specific first, as written.
    markers: Vec<String>,
    /// The code to report: the most specific one.
    code: Option<String>,
    /// A status written in the body (`error.code: 429` of Google, vLLM,
    /// llama.cpp, OpenRouter; Azure's `"code": "429"`).
    body_status: Option<u16>,
    /// Gemini `RetryInfo.retryDelay`.
    retry_delay: Option<std::time::Duration>,
    /// Gemini `QuotaFailure.violations[].quotaId`.
    quota_ids: Vec<String>,
    /// OpenRouter moderation metadata present.
    moderation: bool,
    request_id: Option<String>,
    /// Google's canonical status name (`RESOURCE_EXHAUSTED`).
    google_status: Option<String>,
    /// A code that is only digits (Mistral `"1300"`, Azure `"429"`): reported
    /// only when nothing more readable is present.
    numeric_code: Option<String>,
}

impl ErrorFields {
    fn parse(body: &[u8], headers: Option<&HeaderMap>) -> ErrorFields {
        let mut fields = ErrorFields::default();
        // Bedrock: `x-amzn-ErrorType: ThrottlingException:http://internal…`.
        if let Some(aws) = headers
            .and_then(|h| h.get("x-amzn-errortype"))
            .and_then(|v| v.to_str().ok())
        {
            fields.push_marker(sanitize_aws_code(aws));
        }
        let trimmed = body.trim_ascii_start();
        if !trimmed.starts_with(b"{") && !trimmed.starts_with(b"[") {
            return fields;
        }
        let Ok(value) = serde_json::from_slice::<Value>(trimmed) else {
            return fields;
        };
        // Gemini sometimes wraps the error in a one-element array.
        let value = match &value {
            Value::Array(items) => items.first().unwrap_or(&Value::Null),
            other => other,
        };
        fields.read(value);
        fields
    }

    fn push_marker(&mut self, marker: &str) {
        let marker = marker.trim();
        if !marker.is_empty() && !self.markers.iter().any(|m| m == marker) {
            self.markers.push(marker.to_owned());
        }
    }

    fn read(&mut self, root: &Value) {
        let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        self.request_id = str_at(root, "request_id");
        // The error object: `error`, or Responses API `response.error`, or the
        // root itself (Mistral, old vLLM, Bedrock, Responses `error` events).
        let error = match root.get("error") {
            Some(Value::String(message)) => {
                self.message = Some(message.clone());
                None
            }
            Some(obj @ Value::Object(_)) => Some(obj),
            _ => root
                .get("response")
                .and_then(|r| r.get("error"))
                .filter(|e| e.is_object()),
        };
        let object = error.unwrap_or(root);

        // Anthropic's most specific code: error.details.error_code.
        if let Some(code) = object
            .get("details")
            .and_then(|d| d.get("error_code"))
            .and_then(Value::as_str)
        {
            self.push_marker(code);
        }
        match object.get("code") {
            Some(Value::String(code)) => {
                if code.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(status) = code.parse::<u16>()
                        && (400..600).contains(&status)
                    {
                        self.body_status = Some(status);
                    }
                    self.numeric_code = Some(code.clone());
                } else {
                    self.push_marker(code);
                }
            }
            Some(Value::Number(n)) => {
                self.body_status = n
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|s| (400..600).contains(s));
            }
            _ => {}
        }
        if let Some(status) = object.get("status").and_then(Value::as_u64) {
            self.body_status = self.body_status.or(u16::try_from(status)
                .ok()
                .filter(|s| (400..600).contains(s)));
        }
        // Google: details[] with RetryInfo, QuotaFailure, ErrorInfo.reason.
        if let Some(details) = object.get("details").and_then(Value::as_array) {
            for detail in details {
                if let Some(reason) = detail.get("reason").and_then(Value::as_str) {
                    self.push_marker(reason);
                }
                if let Some(delay) = detail.get("retryDelay").and_then(Value::as_str) {
                    self.retry_delay = hint::parse_proto_duration(delay);
                }
                if let Some(violations) = detail.get("violations").and_then(Value::as_array) {
                    for violation in violations {
                        if let Some(id) = violation.get("quotaId").and_then(Value::as_str) {
                            self.quota_ids.push(id.to_owned());
                        }
                    }
                }
            }
        }
        for key in ["innererror", "inner_error"] {
            if let Some(code) = object
                .get(key)
                .and_then(|i| i.get("code"))
                .and_then(Value::as_str)
            {
                self.push_marker(code);
            }
        }
        if let Some(errors) = object.get("errors").and_then(Value::as_array) {
            for reason in errors.iter().filter_map(|e| e.get("reason")?.as_str()) {
                self.push_marker(reason);
            }
        }
        if let Some(kind) = str_at(object, "type").filter(|t| t != "error") {
            self.push_marker(&kind);
        }
        if let Some(status) = str_at(object, "status") {
            self.push_marker(&status);
            self.google_status = Some(status);
        }
        for key in ["__type", "Code"] {
            if let Some(aws) = object.get(key).and_then(Value::as_str) {
                self.push_marker(sanitize_aws_code(aws));
            }
        }
        if let Some(metadata) = object.get("metadata") {
            self.moderation =
                metadata.get("reasons").is_some() || metadata.get("flagged_input").is_some();
        }
        // Bedrock stream exceptions carry the original status.
        if let Some(status) = object.get("originalStatusCode").and_then(Value::as_u64) {
            self.body_status = self.body_status.or(u16::try_from(status)
                .ok()
                .filter(|s| (400..600).contains(s)));
        }
        if self.message.is_none() {
            self.message = ["message", "Message", "detail"]
                .iter()
                .find_map(|key| str_at(object, key))
                .or_else(|| str_at(root, "message"));
        }
        self.code = self.pick_code();
    }

    fn pick_code(&self) -> Option<String> {
        // Google: a capacity reason says more than the status name; other
        // reasons (`API_KEY_INVALID`, `rateLimitExceeded`) say less than the
        // canonical status.
        if let Some(reason) = self
            .markers
            .iter()
            .find(|m| m.eq_ignore_ascii_case("MODEL_CAPACITY_EXHAUSTED"))
        {
            return Some(reason.clone());
        }
        self.google_status
            .clone()
            .or_else(|| self.markers.first().cloned())
            .or_else(|| self.numeric_code.clone())
    }

    fn has_marker(&self, candidates: &[&str]) -> bool {
        self.markers
            .iter()
            .any(|m| candidates.iter().any(|c| m.eq_ignore_ascii_case(c)))
    }
}

/// `ThrottlingException:http://internal.amazon.com/coral/…` → `ThrottlingException`;
/// `com.amazon.coral.service#ThrottlingException` → `ThrottlingException`.
fn sanitize_aws_code(raw: &str) -> &str {
    let raw = raw.split(':').next().unwrap_or(raw);
    raw.rsplit('#').next().unwrap_or(raw).trim()
}

const QUOTA_CODES: &[&str] = &[
    "insufficient_quota",
    "credit_balance_exhausted",
    "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded",
    "organization_usage_limit_exceeded",
    "billing_hard_limit_reached",
    "enforced_spend_limit_reached",
    "billing_error",
    "billing_not_active",
];
const CONTEXT_CODES: &[&str] = &["context_length_exceeded", "exceed_context_size_error"];
const CONTENT_CODES: &[&str] = &[
    "content_policy_violation",
    "content_filter",
    "responsibleaipolicyviolation",
    "content_filter_policy",
    "invalid_prompt",
    "bio_policy",
    "image_content_policy_violation",
];
const OVERLOAD_CODES: &[&str] = &[
    "overloaded_error",
    "server_is_overloaded",
    "model_capacity_exhausted",
    "serviceunavailableexception",
    "modelnotreadyexception",
    "unavailable_error",
    "unavailable",
    "service_unavailable_error",
    "service_unavailable",
];
const RATE_CODES: &[&str] = &[
    "rate_limit_exceeded",
    "rate_limit_error",
    "slow_down",
    "rate_limited",
    "ratelimitexceeded",
    "throttlingexception",
    "resource_exhausted",
    "too_many_requests",
    "tokens_exceeded",
    "requests",
    "tokens",
];
const AUTH_CODES: &[&str] = &[
    "authentication_error",
    "invalid_api_key",
    "unauthenticated",
    "unrecognizedclientexception",
    "invalid_authentication",
    "expired_api_key",
    "account_deactivated",
];
const PERMISSION_CODES: &[&str] = &[
    "permission_error",
    "permission_denied",
    "accessdeniedexception",
    "unsupported_country_region_territory",
];
const NOT_FOUND_CODES: &[&str] = &[
    "not_found_error",
    "model_not_found",
    "not_found",
    "resourcenotfoundexception",
    "deploymentnotfound",
    "notfounderror",
];
const TIMEOUT_CODES: &[&str] = &[
    "timeout_error",
    "modeltimeoutexception",
    "deadline_exceeded",
    "timeout",
];
const SERVER_CODES: &[&str] = &[
    "api_error",
    "server_error",
    "internal_server_error",
    "internalserverexception",
    "internal",
    "modelerrorexception",
    "modelstreamerrorexception",
    "internalservererror",
];
const INVALID_CODES: &[&str] = &[
    "invalid_request_error",
    "invalid_argument",
    "failed_precondition",
    "validationexception",
    "badrequesterror",
    "not_supported_error",
    "invalid_value",
    "unprocessable_entity",
];

fn decide(
    provider: Provider,
    status: Option<u16>,
    headers: Option<&HeaderMap>,
    fields: &ErrorFields,
    now: SystemTime,
) -> Classification {
    let message = fields.message.as_deref().unwrap_or("");
    // The status that counts: the HTTP one, or for in-band errors the one
    // written in the body. A 5xx that wraps a 429 is a rate limit (LiteLLM
    // `_map_vertex_exception`: "upstream gateway wraps a 429 inside a 5xx").
    let effective = match (status, fields.body_status) {
        (Some(s), Some(429)) if s >= 500 => Some(429),
        (Some(s), _) => Some(s),
        (None, body) => body,
    };
    // A wait written in the message ("Please try again in 12s") counts only
    // where the status says we were limited or the provider failed: a 4xx
    // message may repeat the caller's own text.
    let message_may_hint = effective.is_none_or(|s| matches!(s, 402 | 429) || s >= 500);
    let hint = headers
        .and_then(|h| hint::direct_hint(h, now))
        .or_else(|| {
            fields
                .retry_delay
                .or_else(|| {
                    message_may_hint
                        .then(|| hint::parse_message_hint(message))
                        .flatten()
                })
                .map(|delay| Hint {
                    delay,
                    source: HintSource::Body,
                })
        })
        .or_else(|| {
            // Reset headers are a wait estimate only when we were limited.
            (effective == Some(429))
                .then(|| headers.and_then(|h| hint::rate_limit_reset(h, now)))
                .flatten()
        });
    let status_is = |candidates: &[u16]| effective.is_some_and(|s| candidates.contains(&s));
    // What the whole message says, where the status agrees (see `template`).
    // An in-band error without a status that calls itself an invalid
    // request is judged as a 400 would be: a stream's error event may relay
    // an upstream's echo of the request too.
    let gate = effective.or_else(|| fields.has_marker(INVALID_CODES).then_some(400));
    let text = template::find(message)
        .filter(|t| t.kind.agrees_with(gate, t.billing))
        .map(|t| t.kind);
    let said = |kind: TextKind| text == Some(kind);

    // Codes and types first, then a whole template the status agrees with,
    // then the status. `by_text` marks a verdict that only the message gave.
    let (kind, by_text) = if fields.has_marker(QUOTA_CODES)
        || fields
            .quota_ids
            .iter()
            .any(|id| id.to_ascii_lowercase().contains("perday"))
        || (status_is(&[402]) && hint.is_none())
    {
        (ErrorKind::QuotaExhausted, false)
    } else if fields.has_marker(CONTEXT_CODES) {
        (ErrorKind::ContextLengthExceeded, false)
    } else if fields.has_marker(CONTENT_CODES) || (fields.moderation && status_is(&[403])) {
        (ErrorKind::ContentFiltered, false)
    } else if fields.has_marker(&["request_too_large"]) {
        (ErrorKind::PayloadTooLarge, false)
    } else if (fields.has_marker(OVERLOAD_CODES) && !status_is(&[429]))
        || fields.has_marker(&["model_capacity_exhausted", "modelnotreadyexception"])
    {
        (ErrorKind::Overloaded, false)
    } else if said(TextKind::Quota) {
        (ErrorKind::QuotaExhausted, true)
    } else if said(TextKind::Context) {
        (ErrorKind::ContextLengthExceeded, true)
    } else if said(TextKind::Content) {
        (ErrorKind::ContentFiltered, true)
    } else if said(TextKind::TooLarge) {
        // OpenAI's 429 "Request too large for gpt-4o … on tokens per min": one
        // request above the TPM limit can never fit (LiteLLM calls it a rate
        // limit, which is wrong for retry purposes).
        (ErrorKind::PayloadTooLarge, true)
    } else if said(TextKind::Capacity) {
        // Mistral sends "Service tier capacity exceeded for this model." as a
        // 429 (LiteLLM PR #25078 maps it to 503), Gemini "No capacity
        // available for model …": capacity, not the caller's rate.
        (ErrorKind::Overloaded, true)
    } else if fields.has_marker(RATE_CODES) || status_is(&[429]) || status_is(&[402]) {
        // A 402 that says when to come back (OpenRouter's in-flight budget)
        // is a wait, not a bill.
        (ErrorKind::RateLimited, false)
    } else if fields.has_marker(OVERLOAD_CODES) || status_is(&[503, 529]) {
        (ErrorKind::Overloaded, false)
    } else if said(TextKind::Overload) {
        (ErrorKind::Overloaded, true)
    } else if fields.has_marker(AUTH_CODES) || status_is(&[401]) {
        (ErrorKind::Authentication, false)
    } else if said(TextKind::Auth) {
        (ErrorKind::Authentication, true)
    } else if fields.has_marker(PERMISSION_CODES) || status_is(&[403]) {
        (ErrorKind::Permission, false)
    } else if fields.has_marker(NOT_FOUND_CODES) || status_is(&[404]) {
        (ErrorKind::NotFound, false)
    } else if said(TextKind::NotFound) {
        (ErrorKind::NotFound, true)
    } else if fields.has_marker(&["conflict_error", "conflict"]) || status_is(&[409]) {
        (ErrorKind::Conflict, false)
    } else if fields.has_marker(TIMEOUT_CODES) || status_is(&[408, 504, 524]) {
        (ErrorKind::Timeout, false)
    } else if status_is(&[499]) || fields.has_marker(&["cancelled", "canceled"]) {
        (ErrorKind::Cancelled, false)
    } else if status_is(&[413]) {
        (ErrorKind::PayloadTooLarge, false)
    } else if said(TextKind::RateLimit) {
        (ErrorKind::RateLimited, true)
    } else if fields.has_marker(SERVER_CODES)
        || effective.is_some_and(|s| s >= 500 && s != 501)
        || status_is(&[424])
    {
        (ErrorKind::ServerError, false)
    } else if fields.has_marker(INVALID_CODES)
        || effective.is_some_and(|s| (400..500).contains(&s) || s == 501)
    {
        (ErrorKind::InvalidRequest, false)
    } else if effective.is_none() && (fields.message.is_some() || !fields.markers.is_empty()) {
        // An in-band error event with nothing more specific: the provider
        // failed while generating.
        (ErrorKind::ServerError, false)
    } else {
        (ErrorKind::Unknown, false)
    };

    let mut classification = Classification::new(kind)
        .with_provider(provider)
        .with_hint(hint);
    if by_text {
        classification = classification.decided_by_message_text(gate);
    }
    if !message.is_empty() {
        classification = classification.with_message(message);
    }
    classification.set_code(fields.code.as_deref().map(Into::into));
    classification
}

#[cfg(test)]
mod tests;
