//! How each provider says that something went wrong: status, headers and
//! body of an error reply, and the in-band error event of a stream.
//!
//! Bodies follow the providers' own error references (OpenAI's error-code
//! guide, <https://platform.claude.com/docs/en/api/errors>, Ollama's
//! `server/routes.go`), as does the fixture corpus of `tower-llm-classify`:
//! OpenAI's `{"error":{message,type,param,code}}`, Anthropic's
//! `{"type":"error","error":{type,message},"request_id"}`, Ollama's
//! `{"error":"…"}`; a 502 in front of OpenAI or Anthropic is Cloudflare's
//! HTML page, as it is in production.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::api::{Api, Exchange, Family};
use crate::spec::format_duration;
use crate::wire::{ceil_secs, go_duration, push_json_str, rfc3339};

/// A provider-side failure, rendered in the shape of whichever API the
/// request came in on.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_llm_testkit::{Api, Failure};
///
/// let reply = Failure::rate_limited(Duration::from_secs(2))
///     .reply(Api::AnthropicMessages, "claude-sonnet-4-5", "req_1", SystemTime::now());
/// assert_eq!(reply.status, 429);
/// assert_eq!(reply.headers["retry-after"], "2");
/// assert!(std::str::from_utf8(&reply.body).unwrap().contains("rate_limit_error"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// 429: a per-minute rate limit, with the server's hint of when to come back.
    RateLimited(RateLimit),
    /// Out of quota or credit (OpenAI `insufficient_quota` 429 without
    /// `retry-after`; Anthropic's monthly spend limit): waiting does not help.
    QuotaExhausted,
    /// The provider is out of capacity: OpenAI 503 `server_is_overloaded`,
    /// Anthropic 529 `overloaded_error` (with `x-should-retry: true`),
    /// Ollama 503 "server busy".
    Overloaded,
    /// A 5xx other than overload (500, 502, 503, 504, …).
    ServerError(u16),
    /// 400: the prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// 400: the request was refused by a safety or content policy.
    ContentFiltered,
    /// 401: the API key is missing or wrong.
    Unauthorized,
    /// 404: the model does not exist (or the key has no access to it).
    ModelNotFound,
    /// 400 with this message: anything else wrong with the request.
    InvalidRequest(Cow<'static, str>),
    /// Any other status, with a generic body in the API's shape.
    Status(u16),
}

/// How a rate-limited reply tells the client when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// The wait the server asks for; `None` sends no hint at all.
    pub retry_after: Option<Duration>,
    /// Which headers carry it.
    pub hint: RetryHint,
}

/// The headers that carry a rate-limit hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryHint {
    /// `retry-after: <seconds>` (rounded up), plus the API's reset headers.
    #[default]
    Seconds,
    /// `retry-after-ms: <ms>` and `retry-after: <seconds>`, as Azure OpenAI
    /// and the Stainless SDKs' servers do.
    Milliseconds,
    /// `retry-after: <HTTP-date>`.
    HttpDate,
    /// No `retry-after`: only the reset headers (`x-ratelimit-reset-requests`,
    /// `anthropic-ratelimit-requests-reset`) tell the wait.
    ResetHeadersOnly,
}

/// A rendered error reply.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ErrorReply {
    /// The status.
    pub status: StatusCode,
    /// The headers specific to this failure (content type, hints); the
    /// simulator adds the request id and connection headers.
    pub headers: HeaderMap,
    /// The body, byte for byte as it goes on the wire.
    pub body: Bytes,
}

impl Failure {
    /// A 429 asking the client to wait `retry_after` (sent as `retry-after`
    /// seconds, plus the reset headers).
    pub fn rate_limited(retry_after: Duration) -> Self {
        Failure::RateLimited(RateLimit {
            retry_after: Some(retry_after),
            hint: RetryHint::Seconds,
        })
    }

    /// A 429 with the wait carried by `hint`.
    pub fn rate_limited_with(retry_after: Duration, hint: RetryHint) -> Self {
        Failure::RateLimited(RateLimit {
            retry_after: Some(retry_after),
            hint,
        })
    }

    /// A 429 without any hint of how long to wait.
    pub fn rate_limited_without_hint() -> Self {
        Failure::RateLimited(RateLimit {
            retry_after: None,
            hint: RetryHint::Seconds,
        })
    }

    /// The status this failure has on `api`.
    pub fn status(&self, api: Api) -> StatusCode {
        let code = match self {
            Failure::RateLimited(_) => 429,
            Failure::QuotaExhausted => 429,
            Failure::Overloaded => match api.family() {
                Family::Anthropic => 529,
                Family::OpenAi | Family::Ollama => 503,
            },
            Failure::ServerError(code) | Failure::Status(code) => *code,
            Failure::ContextLengthExceeded
            | Failure::ContentFiltered
            | Failure::InvalidRequest(_) => 400,
            Failure::Unauthorized => 401,
            Failure::ModelNotFound => 404,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The reply this failure gets on `api` for a request for `model`,
    /// identified by `request_id`, at `now` (reset headers are relative to it).
    pub fn reply(&self, api: Api, model: &str, request_id: &str, now: SystemTime) -> ErrorReply {
        let exchange = Exchange {
            api,
            model,
            request_id,
            now,
            prompt_tokens: 130_004,
            include_usage: false,
            embedding: None,
        };
        self.render(&exchange, None)
    }

    pub(crate) fn render(&self, ex: &Exchange<'_>, context_window: Option<u64>) -> ErrorReply {
        let status = self.status(ex.api);
        let mut headers = HeaderMap::new();
        let body = if let Some(html) = self.cloudflare_page(ex.api, status) {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            headers.insert(header::SERVER, HeaderValue::from_static("cloudflare"));
            Bytes::from_static(html.as_bytes())
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let mut body = String::with_capacity(256);
            match ex.api.family() {
                Family::OpenAi => {
                    body.push_str("{\"error\":");
                    self.push_openai_error(&mut body, ex, context_window);
                    body.push('}');
                }
                Family::Anthropic => {
                    body.push_str("{\"type\":\"error\",\"error\":");
                    self.push_anthropic_error(&mut body, ex, context_window);
                    body.push_str(",\"request_id\":");
                    push_json_str(&mut body, ex.request_id);
                    body.push('}');
                }
                Family::Ollama => {
                    body.push_str("{\"error\":");
                    push_json_str(&mut body, &self.ollama_message(ex, context_window));
                    body.push('}');
                }
            }
            Bytes::from(body)
        };
        self.hint_headers(ex, &mut headers);
        ErrorReply {
            status,
            headers,
            body,
        }
    }

    /// The in-band error event a stream carries for this failure on `api`:
    /// `data: {"error":{…}}` (OpenAI chat and completions, as its SDK
    /// parses it), `event: error` (Anthropic), `{"error":"…"}` (Ollama
    /// NDJSON); on the Responses API, `event: response.failed` with the
    /// response's `error` for a failure of the model (overload, server
    /// error), `event: error` with `code` and `message` for the others
    /// (the two failure events of platform.openai.com's streaming events
    /// reference).
    pub(crate) fn in_band_event(&self, ex: &Exchange<'_>) -> String {
        let mut event = String::with_capacity(200);
        if ex.api == Api::OpenAiResponses {
            self.push_responses_event(&mut event, ex);
            return event;
        }
        match ex.api.family() {
            Family::OpenAi => {
                event.push_str("data: {\"error\":");
                self.push_openai_error(&mut event, ex, None);
                event.push_str("}\n\n");
            }
            Family::Anthropic => {
                event.push_str("event: error\ndata: {\"type\":\"error\",\"error\":");
                self.push_anthropic_error(&mut event, ex, None);
                event.push_str("}\n\n");
            }
            Family::Ollama => {
                event.push_str("{\"error\":");
                push_json_str(&mut event, &self.ollama_message(ex, None));
                event.push_str("}\n");
            }
        }
        event
    }

    /// Cloudflare answers 502 (and OpenAI's 504) with its own HTML page
    /// before the API sees the request.
    fn cloudflare_page(&self, api: Api, status: StatusCode) -> Option<&'static str> {
        if !matches!(self, Failure::ServerError(_) | Failure::Status(_)) {
            return None;
        }
        match (api.family(), status.as_u16()) {
            (Family::OpenAi | Family::Anthropic, 502) => Some(
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
            ),
            (Family::OpenAi, 504) => Some(
                "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
            ),
            _ => None,
        }
    }

    fn push_openai_error(&self, out: &mut String, ex: &Exchange<'_>, window: Option<u64>) {
        let (message, kind, param, code) = self.openai_parts(ex, window);
        out.push_str("{\"message\":");
        push_json_str(out, &message);
        out.push_str(",\"type\":");
        push_json_str(out, kind);
        out.push_str(",\"param\":");
        push_opt(out, param);
        out.push_str(",\"code\":");
        push_opt(out, code);
        out.push('}');
    }

    /// The Responses API's failure event (see [`Failure::in_band_event`]).
    fn push_responses_event(&self, out: &mut String, ex: &Exchange<'_>) {
        let (message, kind, param, code) = self.openai_parts(ex, None);
        let code = code.unwrap_or(kind);
        let of_the_model = matches!(self, Failure::Overloaded | Failure::ServerError(_))
            || matches!(self, Failure::Status(status) if *status >= 500);
        if of_the_model {
            out.push_str("event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"id\":\"resp_");
            out.push_str(ex.id());
            out.push_str("\",\"object\":\"response\",\"status\":\"failed\",\"model\":");
            push_json_str(out, ex.model);
            out.push_str(",\"output\":[],\"error\":{\"code\":");
            push_json_str(out, code);
            out.push_str(",\"message\":");
            push_json_str(out, &message);
            out.push_str("}}}\n\n");
        } else {
            out.push_str("event: error\ndata: {\"type\":\"error\",\"code\":");
            push_json_str(out, code);
            out.push_str(",\"message\":");
            push_json_str(out, &message);
            out.push_str(",\"param\":");
            push_opt(out, param);
            out.push_str("}\n\n");
        }
    }

    /// OpenAI's message, `type`, `param` and `code` for this failure.
    fn openai_parts<'s>(
        &'s self,
        ex: &Exchange<'_>,
        window: Option<u64>,
    ) -> (
        Cow<'s, str>,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    ) {
        let model = ex.model;
        match self {
            Failure::RateLimited(limit) => {
                let mut m = format!(
                    "Rate limit reached for {model} in organization org-simulated on requests per min (RPM): Limit 500, Used 500, Requested 1."
                );
                if let Some(wait) = limit.retry_after {
                    let _ = write!(m, " Please try again in {}.", go_duration(wait));
                }
                m.push_str(" Visit https://platform.openai.com/account/rate-limits to learn more.");
                (m.into(), "requests", None, Some("rate_limit_exceeded"))
            }
            Failure::QuotaExhausted => (
                "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.".into(),
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            ),
            Failure::Overloaded => (
                "The engine is currently overloaded, please try again later".into(),
                "service_unavailable_error",
                None,
                Some("server_is_overloaded"),
            ),
            Failure::ServerError(_) => (
                "The server had an error while processing your request. Sorry about that!".into(),
                "server_error",
                None,
                None,
            ),
            Failure::ContextLengthExceeded => {
                let (limit, used) = context_numbers(ex, window);
                (
                    format!("This model's maximum context length is {limit} tokens. However, your messages resulted in {used} tokens. Please reduce the length of the messages.").into(),
                    "invalid_request_error",
                    Some("messages"),
                    Some("context_length_exceeded"),
                )
            }
            Failure::ContentFiltered => (
                "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.".into(),
                "invalid_request_error",
                None,
                Some("content_policy_violation"),
            ),
            Failure::Unauthorized => (
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.".into(),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            Failure::ModelNotFound => (
                format!("The model `{model}` does not exist or you do not have access to it.").into(),
                "invalid_request_error",
                None,
                Some("model_not_found"),
            ),
            Failure::InvalidRequest(message) => (message.as_ref().into(), "invalid_request_error", None, None),
            Failure::Status(code) => (generic_message(*code).into(), generic_openai_type(*code), None, None),
        }
    }

    fn push_anthropic_error(&self, out: &mut String, ex: &Exchange<'_>, window: Option<u64>) {
        let (kind, message, details): (&str, Cow<'_, str>, Option<&str>) = match self {
            Failure::RateLimited(_) => (
                "rate_limit_error",
                "This request would exceed the rate limit for your organization (simulated) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.".into(),
                None,
            ),
            Failure::QuotaExhausted => (
                "rate_limit_error",
                "You have reached your monthly API spend limit for your usage tier. Access will resume on the 1st of next month at 00:00 UTC, or you can request a higher limit in the Claude Console.".into(),
                Some("enforced_spend_limit_reached"),
            ),
            Failure::Overloaded => ("overloaded_error", "Overloaded".into(), None),
            Failure::ServerError(504) => ("timeout_error", "Request timed out".into(), None),
            Failure::ServerError(_) => ("api_error", "Internal server error".into(), None),
            Failure::ContextLengthExceeded => {
                let (limit, used) = context_numbers(ex, window);
                ("invalid_request_error", format!("prompt is too long: {used} tokens > {limit} maximum").into(), None)
            }
            Failure::ContentFiltered => (
                "invalid_request_error",
                "Output blocked by content filtering policy".into(),
                None,
            ),
            Failure::Unauthorized => ("authentication_error", "invalid x-api-key".into(), None),
            Failure::ModelNotFound => ("not_found_error", format!("model: {}", ex.model).into(), None),
            Failure::InvalidRequest(message) => ("invalid_request_error", message.as_ref().into(), None),
            Failure::Status(code) => (generic_anthropic_type(*code), generic_message(*code).into(), None),
        };
        out.push_str("{\"type\":");
        push_json_str(out, kind);
        out.push_str(",\"message\":");
        push_json_str(out, &message);
        if let Some(code) = details {
            out.push_str(",\"details\":{\"error_code\":");
            push_json_str(out, code);
            out.push('}');
        }
        out.push('}');
    }

    fn ollama_message(&self, ex: &Exchange<'_>, window: Option<u64>) -> Cow<'static, str> {
        match self {
            Failure::RateLimited(_) => "too many requests, please try again later".into(),
            // A local Ollama has no quota; a hosted Ollama-style endpoint
            // relays its upstream's words, here OpenAI's exact quota message
            // (tower-llm-classify trusts only whole provider messages).
            Failure::QuotaExhausted => "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.".into(),
            // ollama server/sched.go ErrMaxQueue
            Failure::Overloaded => {
                "server busy, please try again.  maximum pending requests exceeded".into()
            }
            Failure::ServerError(_) => "llama runner process has terminated: exit status 2".into(),
            Failure::ContextLengthExceeded => {
                let _ = context_numbers(ex, window);
                "input exceeds maximum context length and cannot be truncated further".into()
            }
            // Likewise relayed: Anthropic's words (also on Vertex AI).
            Failure::ContentFiltered => "Output blocked by content filtering policy".into(),
            Failure::Unauthorized => "unauthorized".into(),
            Failure::ModelNotFound => {
                format!("model \"{}\" not found, try pulling it first", ex.model).into()
            }
            Failure::InvalidRequest(message) => message.clone(),
            Failure::Status(code) => generic_message(*code).into(),
        }
    }

    fn hint_headers(&self, ex: &Exchange<'_>, headers: &mut HeaderMap) {
        match self {
            Failure::Overloaded if ex.api.family() == Family::Anthropic => {
                headers.insert("x-should-retry", HeaderValue::from_static("true"));
            }
            Failure::RateLimited(limit) => {
                let Some(wait) = limit.retry_after else {
                    return;
                };
                match limit.hint {
                    RetryHint::Seconds => insert_num(headers, "retry-after", ceil_secs(wait)),
                    RetryHint::Milliseconds => {
                        insert_num(headers, "retry-after-ms", wait.as_millis() as u64);
                        insert_num(headers, "retry-after", ceil_secs(wait));
                    }
                    RetryHint::HttpDate => {
                        let at = later(ex.now, Duration::from_secs(ceil_secs(wait)));
                        insert_str(headers, "retry-after", &httpdate::fmt_http_date(at));
                    }
                    RetryHint::ResetHeadersOnly => {}
                }
                match ex.api.family() {
                    Family::OpenAi => {
                        insert_num(headers, "x-ratelimit-limit-requests", 500);
                        insert_num(headers, "x-ratelimit-remaining-requests", 0);
                        insert_str(headers, "x-ratelimit-reset-requests", &go_duration(wait));
                    }
                    Family::Anthropic => {
                        insert_num(headers, "anthropic-ratelimit-requests-limit", 50);
                        insert_num(headers, "anthropic-ratelimit-requests-remaining", 0);
                        // RFC 3339 at whole seconds, rounded up so the reset is never early.
                        let at = later(ex.now, wait.saturating_add(Duration::from_millis(999)));
                        insert_str(
                            headers,
                            "anthropic-ratelimit-requests-reset",
                            &rfc3339(at, 0),
                        );
                    }
                    Family::Ollama => {}
                }
            }
            _ => {}
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::RateLimited(RateLimit {
                retry_after: Some(wait),
                hint,
            }) => {
                let name = match hint {
                    RetryHint::Seconds => "rate_limited",
                    RetryHint::Milliseconds => "rate_limited_ms",
                    RetryHint::HttpDate => "rate_limited_date",
                    RetryHint::ResetHeadersOnly => "rate_limited_reset",
                };
                write!(f, "{name}@{}", format_duration(*wait))
            }
            Failure::RateLimited(RateLimit {
                retry_after: None, ..
            }) => f.write_str("rate_limited"),
            Failure::QuotaExhausted => f.write_str("quota"),
            Failure::Overloaded => f.write_str("overloaded"),
            Failure::ServerError(code) | Failure::Status(code) => write!(f, "{code}"),
            Failure::ContextLengthExceeded => f.write_str("context_length"),
            Failure::ContentFiltered => f.write_str("content_filter"),
            Failure::Unauthorized => f.write_str("unauthorized"),
            Failure::ModelNotFound => f.write_str("not_found"),
            Failure::InvalidRequest(_) => f.write_str("invalid_request"),
        }
    }
}

/// (context window, prompt tokens) for a context-length error: the
/// simulator's configured window and the request's estimate when known.
fn context_numbers(ex: &Exchange<'_>, window: Option<u64>) -> (u64, u64) {
    let limit = window.unwrap_or(128_000);
    (limit, ex.prompt_tokens.max(limit + 1))
}

fn generic_message(code: u16) -> &'static str {
    match code {
        402 => "Payment required: your credit balance is too low.",
        403 => "You do not have permission to use this resource.",
        404 => "The requested resource was not found.",
        408 => "Request timed out.",
        409 => "Conflict: the request could not be completed due to a concurrent modification.",
        413 => "Request exceeds the maximum allowed number of bytes.",
        422 => "Unprocessable entity.",
        c if c >= 500 => "The server had an error while processing your request.",
        _ => "The request could not be processed.",
    }
}

fn generic_openai_type(code: u16) -> &'static str {
    if code >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    }
}

/// Anthropic's error type for a status
/// (<https://platform.claude.com/docs/en/api/errors>).
fn generic_anthropic_type(code: u16) -> &'static str {
    match code {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        413 => "request_too_large",
        504 => "timeout_error",
        c if c >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `now + wait`, held below the year 10000 (HTTP-dates have four-digit
/// years) so an absurd hint cannot overflow or fail to format.
fn later(now: SystemTime, wait: Duration) -> SystemTime {
    const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(wait.min(LONGEST)).unwrap_or(now)
}

fn push_opt(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => push_json_str(out, v),
        None => out.push_str("null"),
    }
}

fn insert_num(headers: &mut HeaderMap, name: &'static str, value: u64) {
    headers.insert(name, HeaderValue::from(value));
}

fn insert_str(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
