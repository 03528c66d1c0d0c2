//! The gateway's HTTP side: the OpenAI-compatible endpoint, inbound limits,
//! caller keys, the headers that tell what happened, `/health`, `/metrics`,
//! and a graceful shutdown. The integration tests in `tests/gateway*.rs`
//! start it in-process from here.
//!
//! What a caller cannot do to it:
//!
//! - send a request head slowly: `header_read_timeout` (hyper's), then the
//!   connection is closed;
//! - send a body slowly: the body is read whole, within
//!   `request_body_timeout` (then 408) and `max_body_bytes` (then 413),
//!   before the request takes a concurrency permit, so slow senders hold
//!   connections, never a slot;
//! - stop reading a response: `send_timeout`, then the connection is
//!   closed and the permit freed (`send_timeout.rs`);
//! - be served without a key when keys are set (`auth.rs`).
//!
//! An upstream that stays silent is left or cut by the stack first: a
//! stream's head within the preset's `stream_head_timeout` (else the next
//! target), no content for the stack's stream idle timeout (pings do not
//! count; a typed error). The gateway's own `stream_idle_timeout`
//! (`body.rs`; any byte counts) is never shorter, a backstop for bodies the
//! stack does not watch (`config.rs`, `GatewaySection::fit_idle_timeout`).

// Modules beside this file, found from it wherever it is included from
// (the example, the tests, the benchmark).
#[path = "auth.rs"]
pub(crate) mod auth;
#[path = "body.rs"]
mod body;
#[path = "config.rs"]
pub(crate) mod config;
#[path = "send_timeout.rs"]
pub(crate) mod send_timeout;
#[path = "serve.rs"]
pub(crate) mod serve;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use metrics::SharedString;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_llm::circuit::CircuitState;
use tower_llm::classify::redact::{ACCOUNT_HEADERS, HOP_BY_HOP_HEADERS};
use tower_llm::classify::stream::Dialect;
use tower_llm::fallback::FallbackReport;
use tower_llm::fallback::continuation::ContinuationReport;
use tower_llm::retry::RetryStats;
use tower_llm::stack::Stack;
use tower_llm::{ErrorKind, LlmError};

use auth::CallerKeys;
use config::MAX_CONCURRENCY;
// Re-exported: the benchmark builds a router with them.
pub(crate) use config::GatewayOptions;

/// The header naming the target that served a response.
pub(crate) const TARGET_HEADER: &str = "x-tower-llm-target";
/// The header giving the attempts the serving target took (1: no retry).
pub(crate) const ATTEMPTS_HEADER: &str = "x-tower-llm-attempts";
/// The header listing the targets passed on the way, with why
/// (`primary:overloaded, azure:rate_limited`).
pub(crate) const FALLBACKS_HEADER: &str = "x-tower-llm-fallbacks";
/// The trailer saying how many times a streamed answer was continued after
/// it broke, and by which targets (`2; backup, backup`). A stream's head is
/// sent before anything can break, so this is a trailer, sent when the
/// caller asked for trailers (`TE: trailers`) and announced in the head's
/// `Trailer`; every caller has it in the metrics and the log.
pub(crate) const CONTINUED_TRAILER: &str = "x-tower-llm-continued";

/// The process-wide Prometheus recorder (installed once; later calls get
/// the same handle, so several gateways in one test process share it).
pub(crate) fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// Tells every request and stream still running that the grace period
/// after a shutdown signal is over: they end at once (a request waiting on
/// its upstream gets a 503, a stream an error that closes its connection).
#[derive(Clone, Debug)]
pub(crate) struct Closing(tokio::sync::watch::Sender<bool>);

impl Closing {
    /// A handle, not closing yet.
    pub(crate) fn new() -> Self {
        Closing(tokio::sync::watch::Sender::new(false))
    }

    fn close(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once closing (at once if already).
    fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut watch = self.0.subscribe();
        async move {
            let _ = watch.wait_for(|closed| *closed).await;
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
struct Gateway {
    stack: Stack,
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    metrics: Option<PrometheusHandle>,
    closing: Closing,
    request_body_timeout: Duration,
    stream_idle_timeout: Duration,
    /// How many caller keys are accepted (`None`: no keys needed).
    caller_keys: Option<usize>,
}

/// The gateway's routes over `stack`, with its inbound limits and, when
/// the options hold caller keys, the key check in front of every route.
pub(crate) fn router(
    stack: Stack,
    options: &GatewayOptions,
    metrics: Option<PrometheusHandle>,
    closing: &Closing,
) -> Router {
    let max_concurrency = options.max_concurrency.clamp(1, MAX_CONCURRENCY);
    let gateway = Gateway {
        stack,
        permits: Arc::new(Semaphore::new(max_concurrency)),
        max_concurrency,
        metrics,
        closing: closing.clone(),
        request_body_timeout: options.request_body_timeout,
        stream_idle_timeout: options.stream_idle_timeout,
        caller_keys: options.caller_keys.as_ref().map(CallerKeys::len),
    };
    let router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/health", get(health))
        .route("/metrics", get(prometheus_text))
        .fallback(|| async {
            error_json(
                StatusCode::NOT_FOUND,
                "not_found",
                "this gateway serves POST /v1/chat/completions, GET /health and GET /metrics",
            )
        })
        .method_not_allowed_fallback(|| async {
            error_json(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not served on this path",
            )
        })
        // tower-http refuses a declared length over the limit at once and
        // cuts a chunked body at it; either way the answer is made
        // OpenAI-shaped below.
        .layer(RequestBodyLimitLayer::new(options.max_body_bytes))
        .layer(axum::middleware::map_response(openai_shaped_413))
        .with_state(gateway);
    // Outermost: a caller without a key learns nothing, not even whether a
    // path exists or a body is too large.
    match &options.caller_keys {
        Some(keys) => router.layer(axum::middleware::from_fn_with_state(
            keys.clone(),
            auth::require_key,
        )),
        None => router,
    }
}

/// An OpenAI-shaped error response, its `type` and `code` both `kind`.
fn error_json(status: StatusCode, kind: &str, message: &str) -> Response {
    error_json_with_code(status, kind, kind, message)
}

/// An OpenAI-shaped error response.
fn error_json_with_code(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
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

fn payload_too_large() -> Response {
    error_json(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than this gateway accepts",
    )
}

async fn openai_shaped_413(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return payload_too_large();
    }
    response
}

/// The request headers passed on to a target. Everything else stays here:
/// the caller's credentials above all (each target sets its own key), and
/// hop-by-hop and cookie headers.
const FORWARDED: [HeaderName; 3] = [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT];

async fn chat_completions(State(gateway): State<Gateway>, request: Request) -> Response {
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
            if gateway.metrics.is_some() {
                metrics::counter!(
                    "tower_llm_gateway_requests_total",
                    "status" => status_label(response.status()),
                    "target" => target.clone().map_or(SharedString::const_str("-"), SharedString::from)
                )
                .increment(1);
            }
            tracing::debug!(
                target = target.as_deref().unwrap_or("-"),
                attempts,
                passed = passed.as_deref().unwrap_or(""),
                status = response.status().as_u16(),
                "served"
            );
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

fn shutting_down() -> Response {
    error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the gateway is shutting down",
    )
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
    metrics::counter!(
        "tower_llm_gateway_requests_total",
        "status" => response.status().as_str().to_owned(),
        "target" => "-"
    )
    .increment(1);
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

/// Response headers that stay at the gateway: hop-by-hop ones (RFC 9110
/// §7.6.1) and those the `connection` header names, cookies, and the
/// identity of the gateway's own upstream account.
fn keep_to_gateway(headers: &mut HeaderMap) {
    // One look at the names present (an answer has a handful), then a
    // removal only for those that must stay here: removing each listed
    // name in turn would hash some twenty names per answer.
    let mut kept: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let listed = HOP_BY_HOP_HEADERS
            .iter()
            .chain(&ACCOUNT_HEADERS)
            .chain(&["set-cookie"])
            .any(|listed| *listed == name.as_str());
        if listed {
            kept.push(name.clone());
        }
    }
    if headers.contains_key(header::CONNECTION) {
        kept.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
        );
    }
    for name in kept {
        headers.remove(name);
    }
}

/// The label of a status for the requests counter, without an allocation
/// for the statuses a gateway mostly answers with.
fn status_label(status: StatusCode) -> SharedString {
    match status.as_u16() {
        200 => SharedString::const_str("200"),
        400 => SharedString::const_str("400"),
        401 => SharedString::const_str("401"),
        404 => SharedString::const_str("404"),
        429 => SharedString::const_str("429"),
        500 => SharedString::const_str("500"),
        502 => SharedString::const_str("502"),
        503 => SharedString::const_str("503"),
        504 => SharedString::const_str("504"),
        _ => SharedString::from_owned(status.as_str().to_owned()),
    }
}

/// The attempts header's value (a copy only past nine attempts).
fn attempts_value(attempts: u32) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(attempts as usize) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(attempts),
    }
}

fn passed_targets(report: &FallbackReport) -> String {
    report
        .failed_kinds()
        .into_iter()
        .map(|(target, kind)| format!("{target}:{}", kind.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// `/health`: open to anyone as a liveness check (`status` alone, so a load
/// balancer needs no key); the details (circuits by target and model,
/// requests in flight, how many caller keys) only when no keys are set or
/// the caller sent one.
async fn health(State(gateway): State<Gateway>, request: Request) -> Response {
    let details = gateway.caller_keys.is_none()
        || request.extensions().get::<auth::Authenticated>().is_some();
    let snapshot = gateway.stack.circuits().snapshot();
    let degraded = snapshot.iter().any(|k| {
        matches!(
            k.state,
            CircuitState::Open | CircuitState::ForcedOpen | CircuitState::HalfOpen
        ) || k.cooldown_remaining.is_some()
    });
    let status = if degraded { "degraded" } else { "ok" };
    if !details {
        return json_response(json!({ "status": status, "auth": { "required": true } }));
    }
    let circuits: Vec<_> = snapshot
        .into_iter()
        .map(|key| {
            json!({
                "key": &*key.key,
                "state": key.state.as_str(),
                "calls": key.totals.calls,
                "failures": key.totals.failures,
                "failure_rate": key.totals.failure_rate(),
                "slow": key.totals.slow,
                "consecutive_failures": key.consecutive_failures,
                "rejected": key.rejected,
                "open_remaining_ms": key.open_remaining.map(|d| d.as_millis() as u64),
                "cooldown_remaining_ms": key.cooldown_remaining.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    json_response(json!({
        "status": status,
        "in_flight": gateway.max_concurrency - gateway.permits.available_permits(),
        "circuits": circuits,
        "auth": match gateway.caller_keys {
            Some(keys) => json!({ "required": true, "keys": keys }),
            None => json!({ "required": false }),
        },
    }))
}

fn json_response(body: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn prometheus_text(State(gateway): State<Gateway>) -> Response {
    match &gateway.metrics {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => error_json(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled",
        ),
    }
}
