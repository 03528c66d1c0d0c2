//! The gateway's HTTP side: the OpenAI-compatible endpoint, inbound limits,
//! the headers that tell what happened, `/health`, `/metrics`, and a
//! graceful shutdown. The integration tests in `tests/gateway.rs` start it
//! in-process from here.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body::Frame;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_llm::circuit::State as CircuitState;
use tower_llm::config::StackConfig;
use tower_llm::fallback::FallbackReport;
use tower_llm::retry::RetryStats;
use tower_llm::stack::{Stack, served_by};
use tower_llm::{ErrorKind, LlmError};

/// The header naming the target that served a response.
pub(crate) const TARGET_HEADER: &str = "x-tower-llm-target";
/// The header giving the attempts the serving target took (1: no retry).
pub(crate) const ATTEMPTS_HEADER: &str = "x-tower-llm-attempts";
/// The header listing the targets passed on the way, with why
/// (`primary:overloaded, azure:rate_limited`).
pub(crate) const FALLBACKS_HEADER: &str = "x-tower-llm-fallbacks";

/// The most requests in flight a gateway may be configured for.
pub(crate) const MAX_CONCURRENCY: usize = 1_000_000;

/// The `[gateway]` section of the configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct GatewaySection {
    /// Where to listen (default `127.0.0.1:8080`).
    pub(crate) listen: Option<String>,
    /// Requests (and streams) in flight at once; more are refused with 503.
    pub(crate) max_concurrency: Option<usize>,
    /// The largest request body, in bytes; larger ones get 413.
    pub(crate) max_body_bytes: Option<usize>,
    /// How long in-flight requests and streams may run on after a shutdown
    /// signal.
    pub(crate) shutdown_grace_ms: Option<u64>,
}

/// How the gateway's own side behaves.
#[derive(Clone, Debug)]
pub(crate) struct GatewayOptions {
    /// Where to listen.
    pub(crate) listen: SocketAddr,
    /// Requests (and streams) in flight at once.
    pub(crate) max_concurrency: usize,
    /// The largest request body.
    pub(crate) max_body_bytes: usize,
    /// The grace period after a shutdown signal.
    pub(crate) shutdown_grace: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_concurrency: 1024,
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl GatewaySection {
    /// The options, checked.
    pub(crate) fn options(&self) -> Result<GatewayOptions, String> {
        let mut options = GatewayOptions::default();
        if let Some(listen) = &self.listen {
            options.listen = listen.parse().map_err(|_| {
                format!("[gateway] listen: `{listen}` is not an address like 127.0.0.1:8080")
            })?;
        }
        if let Some(n) = self.max_concurrency {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(format!(
                    "[gateway] max_concurrency: {n} is not between 1 and {MAX_CONCURRENCY}"
                ));
            }
            options.max_concurrency = n;
        }
        if let Some(bytes) = self.max_body_bytes {
            options.max_body_bytes = bytes;
        }
        if let Some(ms) = self.shutdown_grace_ms {
            options.shutdown_grace = Duration::from_millis(ms);
        }
        Ok(options)
    }
}

/// Splits a gateway file into its `[gateway]` section and the stack's
/// configuration (every other key), each checked for unknown keys.
pub(crate) fn parse_file(text: &str) -> Result<(GatewaySection, StackConfig), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let gateway = match table.remove("gateway") {
        Some(value) => value
            .try_into::<GatewaySection>()
            .map_err(|e| format!("[gateway] {e}"))?,
        None => GatewaySection::default(),
    };
    let stack = toml::Value::Table(table)
        .try_into::<StackConfig>()
        .map_err(|e| e.to_string())?;
    Ok((gateway, stack))
}

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
}

/// The gateway's routes over `stack`, with its inbound limits.
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
    };
    Router::new()
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
        .with_state(gateway)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests and streams finish for at most `grace`, then ends
/// those still running (through `closing`, the handle the router was built
/// with).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    closing: Closing,
) -> io::Result<()> {
    let (signalled, mut watch) = tokio::sync::watch::channel(false);
    // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm
    // and the client's delayed ACK hold each one back ~40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "shutting down: finishing in-flight requests"
            );
            let _ = signalled.send(true);
        })
        .into_future();
    let grace_over = async move {
        let _ = watch.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = grace_over => {}
    }
    tracing::warn!("grace period over: ending the requests and streams still running");
    closing.close();
    // Each request and stream now ends at once; the connections close
    // as they do.
    server.await
}

/// An OpenAI-shaped error response.
fn error_json(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({
        "error": { "message": message, "type": kind, "param": null, "code": kind }
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn openai_shaped_413(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than this gateway accepts",
        );
    }
    response
}

/// The request headers passed on to a target. Everything else stays here:
/// the caller's credentials above all (each target sets its own key), and
/// hop-by-hop and cookie headers.
const FORWARDED: [HeaderName; 3] = [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT];

async fn chat_completions(State(gateway): State<Gateway>, request: Request) -> Response {
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
    let (parts, body) = request.into_parts();
    let mut upstream = http::Request::post("/chat/completions");
    for name in FORWARDED {
        if let (Some(headers), Some(value)) = (upstream.headers_mut(), parts.headers.get(&name)) {
            headers.insert(name, value.clone());
        }
    }
    let upstream = match upstream.body(body) {
        Ok(request) => request,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let call = gateway.stack.clone().oneshot(upstream);
    let result = tokio::select! {
        result = call => result,
        () = gateway.closing.closed() => {
            return error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down",
            );
        }
    };
    match result {
        Ok(response) => {
            let target = served_by(&response).unwrap_or("-").to_owned();
            let attempts = RetryStats::of(response.extensions()).attempts;
            let passed = response
                .extensions()
                .get::<FallbackReport>()
                .map(passed_targets);
            metrics::counter!(
                "tower_llm_gateway_requests_total",
                "status" => response.status().as_str().to_owned(),
                "target" => target.clone()
            )
            .increment(1);
            tracing::debug!(target = %target, attempts, passed = passed.as_deref().unwrap_or(""), status = response.status().as_u16(), "served");
            let (mut head, body) = response.into_parts();
            keep_to_gateway(&mut head.headers);
            set(&mut head.headers, TARGET_HEADER, &target);
            set(&mut head.headers, ATTEMPTS_HEADER, &attempts.to_string());
            if let Some(passed) = passed.filter(|p| !p.is_empty()) {
                set(&mut head.headers, FALLBACKS_HEADER, &passed);
            }
            // The permit is held until the body is done: a stream counts
            // as in flight for as long as it streams.
            Response::from_parts(
                head,
                Body::new(HoldPermit {
                    body,
                    closed: Box::pin(gateway.closing.closed()),
                    _permit: permit,
                }),
            )
        }
        Err(error) => failure(error),
    }
}

/// The answer when the stack gives up: the provider's own error when there
/// was one, otherwise an OpenAI-shaped error with the fitting status and a
/// `Retry-After` when a wait is known (all targets cooling down: 429).
fn failure(error: LlmError) -> Response {
    if cut_at_the_body_limit(&error) {
        return error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than this gateway accepts",
        );
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

/// Whether the stack failed because the body limit cut the request body.
fn cut_at_the_body_limit(error: &LlmError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Response headers that stay at the gateway: hop-by-hop ones (RFC 9110
/// §7.6.1) and those the `connection` header names, cookies, and the
/// identity of the gateway's own upstream account.
fn keep_to_gateway(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "set-cookie",
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
    ] {
        headers.remove(name);
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

async fn health(State(gateway): State<Gateway>) -> Response {
    let snapshot = gateway.stack.circuits().snapshot();
    let degraded = snapshot.iter().any(|k| {
        matches!(
            k.state,
            CircuitState::Open | CircuitState::ForcedOpen | CircuitState::HalfOpen
        ) || k.cooldown_remaining.is_some()
    });
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
    let body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "in_flight": gateway.max_concurrency - gateway.permits.available_permits(),
        "circuits": circuits,
    });
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

pin_project_lite::pin_project! {
    /// A response body that holds a concurrency permit until it ends or is
    /// dropped (the client went away).
    struct HoldPermit<B> {
        #[pin]
        body: B,
        // Resolves when the shutdown grace period is over.
        closed: Pin<Box<dyn Future<Output = ()> + Send>>,
        _permit: OwnedSemaphorePermit,
    }
}

impl<B> http_body::Body for HoldPermit<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tower_llm::classify::BoxError>,
{
    type Data = Bytes;
    type Error = tower_llm::classify::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if this.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the gateway shut down".into())));
        }
        this.body.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
