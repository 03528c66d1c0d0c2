//! The API endpoints, each an [`Endpoint`] served by one handler path
//! ([`forward`]): the caller's request read whole, sent through the stack
//! with the headers a target may see, and the answer (whole or streamed)
//! passed back with what happened to it in the `x-tower-llm-*` headers, or
//! the failure shaped for the endpoint's API ([`ErrorShape`]).
//!
//! | endpoint | file | targets | stream |
//! |---|---|---|---|
//! | `POST /v1/chat/completions` | `chat` | OpenAI-protocol | OpenAI chat chunks |
//! | `POST /v1/completions` | `completions` | OpenAI-protocol | `text_completion` chunks |
//! | `POST /v1/embeddings` | `embeddings` | OpenAI-protocol | none |
//! | `POST /v1/responses` | `responses` | OpenAI-protocol | `response.*` events |
//! | `POST /v1/messages` | `messages` | Anthropic-protocol | Anthropic events |
//! | `POST /v1/messages/count_tokens` | `messages` | Anthropic-protocol | none |
//! | `GET /v1/models`, `/v1/models/{model}` | `models` | (none: the routes) | none |
//!
//! What differs between them is data, not code: the path under a target's
//! base URL, the [`Protocol`] its targets must speak (set as a request
//! extension, so the fallback never sends an Anthropic body to an
//! OpenAI-compatible server or the reverse), the dialect of a streamed
//! answer (for the in-band error event that ends a stream failing after its
//! head), the request headers passed on beside the common ones, and the
//! shape of errors.

mod chat;
mod completions;
mod embeddings;
mod errors;
mod messages;
mod models;
mod responses;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::Full;
use tower::ServiceExt;
use tower_llm::classify::ErrorKind;
use tower_llm::classify::replay::ReadBody;
use tower_llm::classify::stream::Dialect;
use tower_llm::fallback::continuation::ContinuationReport;
use tower_llm::fallback::{FallbackReport, Protocol};
use tower_llm::retry::RetryStats;

use crate::body;
use crate::headers::{
    ATTEMPTS, CONTINUED_TRAILER, FALLBACKS, TARGET, attempts_value, keep_to_gateway,
    passed_targets, set,
};
use crate::router::Gateway;

pub(crate) use chat::chat_completions;
pub(crate) use completions::completions;
pub(crate) use embeddings::embeddings;
pub(crate) use errors::ErrorShape;
pub(crate) use messages::{count_tokens, messages};
pub(crate) use models::{model, models};
pub(crate) use responses::responses;

/// The request headers every endpoint passes on to a target. Everything
/// else stays here: the caller's credentials above all (each target sets
/// its own key), and hop-by-hop and cookie headers.
const FORWARDED: [HeaderName; 3] = [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT];

/// What sets one API endpoint apart from another.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// The path under a target's base URL (`/chat/completions`: a base URL
    /// ends in `/v1`, as the SDKs take it).
    pub(crate) upstream_path: &'static str,
    /// The API family every target of the request must speak.
    pub(crate) protocol: Protocol,
    /// The dialect of a streamed answer; `None`: the endpoint never
    /// streams (a stream-shaped answer is passed on as it is).
    pub(crate) stream: Option<Dialect>,
    /// Request headers passed on besides [`FORWARDED`] (lower-case names).
    pub(crate) also_forwarded: &'static [&'static str],
    /// How the endpoint's errors look.
    pub(crate) errors: ErrorShape,
}

/// Serves one request on `endpoint`: the shared handler path.
pub(crate) async fn forward(endpoint: &Endpoint, gateway: Gateway, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let wants_trailers = parts.headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .windows(8)
            .any(|w| w.eq_ignore_ascii_case(b"trailers"))
    });
    let errors = endpoint.errors;
    // A declared length over the limit is refused before anything is read.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > gateway.max_body_bytes as u64) {
        return errors.payload_too_large();
    }
    // One wait for the gateway's shutdown, for the whole request: its body
    // read, the stack's call, then the answer's body (a subscription and a
    // waiter each, made once rather than three times).
    let mut closed: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(gateway.closing.closed());
    // The whole body first, then a permit: a caller trickling its body
    // holds its connection, never a slot other callers need.
    let body = match read_body(body, &gateway, errors, closed.as_mut()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(permit) = Arc::clone(&gateway.permits).try_acquire_owned() else {
        return errors.at_capacity(gateway.max_concurrency);
    };
    // The caller's token limit, before any upstream call (`limits`).
    if let Some(refused) =
        crate::limits::take_tokens(&parts.extensions, &parts.uri, &parts.headers, &body)
    {
        return refused;
    }
    // The body as the bytes it is (no boxed body), the path from a static
    // (no parse): the stack reads both as they are.
    let mut upstream = http::Request::new(Full::new(body));
    *upstream.method_mut() = http::Method::POST;
    *upstream.uri_mut() = http::Uri::from_static(endpoint.upstream_path);
    *upstream.headers_mut() =
        forwarded_headers(std::mem::take(&mut parts.headers), endpoint.also_forwarded);
    // The caller's extensions map, emptied (what the router and the
    // gateway's own layers left there is theirs, not the targets'): the
    // protocol goes in a map that exists already, not a new one.
    let mut extensions = std::mem::take(&mut parts.extensions);
    extensions.clear();
    if gateway.must_name(endpoint.protocol) {
        extensions.insert(endpoint.protocol);
    }
    *upstream.extensions_mut() = extensions;
    // Through a shared reference: no clone of the stack per request.
    let call = (&gateway.stack).oneshot(upstream);
    let result = tokio::select! {
        result = call => result,
        () = closed.as_mut() => return errors.shutting_down(),
    };
    let response = match result {
        Ok(response) => response,
        Err(error) => return errors.failure(error),
    };
    let report = response.extensions().get::<FallbackReport>();
    let target = report.and_then(|r| r.served_by.clone());
    let passed = report
        .filter(|r| !r.failures.is_empty())
        .map(passed_targets);
    let attempts = RetryStats::of(response.extensions()).attempts;
    // Counted, timed and logged by `observe`, from the headers set here.
    let (mut head, body) = response.into_parts();
    keep_to_gateway(&mut head.headers);
    // The target's name as made once at start-up (no copy per answer).
    let served_by = match target.as_deref() {
        Some(name) => gateway.target_values.get(name).cloned(),
        None => Some(HeaderValue::from_static("-")),
    };
    match served_by {
        Some(value) => {
            head.headers.insert(TARGET, value);
        }
        None => set(&mut head.headers, TARGET, target.as_deref().unwrap_or("-")),
    }
    head.headers.insert(ATTEMPTS, attempts_value(attempts));
    if let Some(passed) = passed {
        set(&mut head.headers, FALLBACKS, &passed);
    }
    // A stream that fails after its head ends with an error event in the
    // endpoint's dialect.
    let streamed = head
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let dialect = endpoint.stream.filter(|_| streamed);
    let continuation = dialect.and_then(|_| head.extensions.get::<ContinuationReport>().cloned());
    let trailers = wants_trailers && continuation.is_some();
    if trailers {
        head.headers
            .insert(header::TRAILER, HeaderValue::from_static(CONTINUED_TRAILER));
    }
    // The permit is held until the body is done: a stream counts as in
    // flight for as long as it streams.
    let mut body =
        body::ResponseBody::new(body, permit, closed, gateway.stream_idle_timeout, dialect)
            .reporting(continuation, trailers);
    if let Some(failed) = body.failed_in_band() {
        head.extensions.insert(failed);
    }
    Response::from_parts(head, Body::new(body))
}

/// The caller's headers that go on to a target: [`FORWARDED`] and the
/// endpoint's `also` (every value of each), nothing else. The caller's map
/// is kept and the rest taken out of it (an allocation-free pass for the
/// usual handful of headers); a request with very many builds a new map.
fn forwarded_headers(mut headers: HeaderMap, also: &[&str]) -> HeaderMap {
    let kept = |name: &HeaderName| FORWARDED.contains(name) || also.contains(&name.as_str());
    let mut dropped: [Option<HeaderName>; 16] = [const { None }; 16];
    for (count, name) in headers.keys().filter(|name| !kept(name)).enumerate() {
        match dropped.get_mut(count) {
            Some(slot) => *slot = Some(name.clone()),
            None => {
                let mut only = HeaderMap::new();
                for (name, value) in headers.iter().filter(|(name, _)| kept(name)) {
                    only.append(name.clone(), value.clone());
                }
                return only;
            }
        }
    }
    for name in dropped.into_iter().flatten() {
        headers.remove(name);
    }
    headers
}

/// The request body, whole, read within `timeout` (counted from the end of
/// the request head) and the body limit; otherwise the answer to send.
async fn read_body(
    body: Body,
    gateway: &Gateway,
    errors: ErrorShape,
    closed: Pin<&mut (dyn Future<Output = ()> + Send)>,
) -> Result<Bytes, Response> {
    let timeout = gateway.request_body_timeout;
    // Read as the stack reads it: a body of one frame is kept as it is, no
    // buffer list; cut at the limit (a chunked body declares no length).
    let read = tokio::time::timeout(timeout, ReadBody::new(body, gateway.max_body_bytes));
    let read = tokio::select! {
        read = read => read,
        () = closed => return Err(errors.shutting_down()),
    };
    match read {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) if error.kind() == ErrorKind::PayloadTooLarge => {
            Err(errors.payload_too_large())
        }
        // Most often the caller went away: the answer goes nowhere.
        Ok(Err(error)) => Err(errors.gateway_error(
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
            let mut response = errors.gateway_error(
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

/// Whether `error`, or an error under it, is a body limit cutting a body
/// (`http_body_util::Limited`'s error).
pub(crate) fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut error = Some(error);
    while let Some(e) = error {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        error = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(extra: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("user-agent", "OpenAI/Python 1.50"),
            ("anthropic-beta", "a"),
            ("anthropic-beta", "b"),
            ("authorization", "Bearer sk-caller"),
            ("x-api-key", "sk-caller"),
            ("cookie", "session=1"),
            ("host", "gateway.example.com"),
            ("connection", "keep-alive"),
            ("x-custom", "1"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        for i in 0..extra {
            if let Ok(name) = HeaderName::from_bytes(format!("x-extra-{i}").as_bytes()) {
                headers.insert(name, HeaderValue::from_static("1"));
            }
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<(String, String)> {
        let mut all: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn only_the_listed_headers_go_on_every_value_of_each_and_never_a_credential() {
        let expected = [
            ("accept", "text/event-stream"),
            ("anthropic-beta", "a"),
            ("anthropic-beta", "b"),
            ("content-type", "application/json"),
            ("user-agent", "OpenAI/Python 1.50"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        // In place (a handful to drop), and through a new map (many).
        for extra in [0, 40] {
            let kept = forwarded_headers(caller(extra), &["anthropic-beta"]);
            assert_eq!(names(&kept), expected, "{extra} extra headers");
        }
        let kept = forwarded_headers(caller(0), &[]);
        assert!(!kept.contains_key("anthropic-beta"));
        assert_eq!(kept.len(), 3);
    }
}
