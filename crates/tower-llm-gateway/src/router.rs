//! The gateway's routes over a stack, with its inbound limits and, when
//! caller keys are set, the key check in front of every route.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use foldhash::HashMap;
use http::{HeaderValue, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower::util::option_layer;
use tower_llm::fallback::Protocol;
use tower_llm::stack::Stack;

use crate::auth::CallerKeys;
use crate::config::{GatewayOptions, MAX_CONCURRENCY};
use crate::error::error_json;
use crate::gate::GateLayer;
use crate::limits::Limiter;
use crate::observe::{Activity, ObserveLayer};
use crate::shutdown::Closing;
use crate::{endpoints, health, prometheus, status_page};

/// What every handler shares: one reference count to clone per request
/// (axum clones the state for each handler it calls), not one per field.
#[derive(Clone)]
pub(crate) struct Gateway(Arc<GatewayState>);

impl std::ops::Deref for Gateway {
    type Target = GatewayState;

    fn deref(&self) -> &GatewayState {
        &self.0
    }
}

/// The fields of [`Gateway`].
pub(crate) struct GatewayState {
    pub(crate) stack: Stack,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max_concurrency: usize,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) closing: Closing,
    pub(crate) request_body_timeout: Duration,
    pub(crate) stream_idle_timeout: Duration,
    /// How many caller keys are accepted (`None`: no keys needed).
    pub(crate) caller_keys: Option<usize>,
    /// The last minute per target and the last fallbacks (`/health`, `/`).
    pub(crate) activity: Arc<Activity>,
    /// Whether readiness fails on a route with no target able to serve.
    pub(crate) ready_requires_upstreams: bool,
    /// Each target's name as the `x-tower-llm-target` value, made once.
    // Keys from the configuration: foldhash, not SipHash, for the lookup
    // every answer makes.
    pub(crate) target_values: HashMap<String, HeaderValue>,
    /// The largest request body.
    pub(crate) max_body_bytes: usize,
    /// The protocol every target speaks, if they all speak one: a request
    /// to an endpoint of it need not name it (one extension, and its
    /// allocation, fewer per request).
    pub(crate) common_protocol: Option<Protocol>,
}

impl GatewayState {
    /// Whether a request to an endpoint of `protocol` must name it, so that
    /// targets speaking another are left out.
    pub(crate) fn must_name(&self, protocol: Protocol) -> bool {
        self.common_protocol != Some(protocol)
    }
}

/// The gateway's routes over `stack`, with its inbound limits and, when
/// the options hold caller keys, the key check in front of every route.
///
/// `metrics`: the recorder `/metrics` renders ([`prometheus()`](crate::prometheus()));
/// `None` answers `/metrics` with 404. `closing`: the handle
/// [`serve()`](crate::serve()) ends the requests still running with once
/// its grace period is over.
pub fn router(
    stack: Stack,
    options: &GatewayOptions,
    metrics: Option<PrometheusHandle>,
    closing: &Closing,
) -> Router {
    let max_concurrency = options.max_concurrency.clamp(1, MAX_CONCURRENCY);
    let target_values = target_values(&stack);
    let common_protocol = stack.common_protocol();
    let gateway = Gateway(Arc::new(GatewayState {
        stack,
        permits: Arc::new(Semaphore::new(max_concurrency)),
        max_concurrency,
        metrics,
        closing: closing.clone(),
        request_body_timeout: options.request_body_timeout,
        stream_idle_timeout: options.stream_idle_timeout,
        caller_keys: options.caller_keys.as_ref().map(CallerKeys::len),
        activity: Arc::new(Activity::new()),
        ready_requires_upstreams: options.ready_requires_upstreams,
        common_protocol,
        target_values,
        max_body_bytes: options.max_body_bytes,
    }));
    let activity = Arc::clone(&gateway.activity);
    let limiter = (!options.rate_limits.is_empty()).then(|| {
        let callers = options.caller_keys.as_ref().map_or(1, CallerKeys::len);
        Arc::new(Limiter::new(options.rate_limits.clone(), callers))
    });
    Router::new()
        .route("/v1/chat/completions", post(endpoints::chat_completions))
        .route("/v1/completions", post(endpoints::completions))
        .route("/v1/embeddings", post(endpoints::embeddings))
        .route("/v1/responses", post(endpoints::responses))
        .route("/v1/messages", post(endpoints::messages))
        .route("/v1/messages/count_tokens", post(endpoints::count_tokens))
        .route("/v1/models", get(endpoints::models))
        .route("/v1/models/{*model}", get(endpoints::model))
        .route("/", get(status_page::status_page))
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(prometheus::prometheus_text))
        .fallback(|| async {
            error_json(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint: this gateway serves the OpenAI and Anthropic APIs under /v1 (GET /v1/models lists its models), GET /health (/live, /ready), GET /metrics and its status page at GET /",
            )
        })
        .method_not_allowed_fallback(|| async {
            error_json(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not served on this path",
            )
        })
        // One `layer` for all that wraps every route: axum boxes each
        // route again for every `Router::layer` (a boxed clone and a boxed
        // future per request, per layer).
        .layer(
            ServiceBuilder::new()
                // Outermost: a caller without a key learns nothing, not even
                // whether a path exists or a body is too large.
                .layer(option_layer(options.caller_keys.clone().map(GateLayer)))
                // Each API request in a span, the stack's attempts its
                // children.
                .layer(crate::telemetry::RequestSpanLayer::new())
                // Every API answer, refusals by the layers below included,
                // counted by endpoint and timed to its last byte.
                .layer(ObserveLayer::new(activity))
                // A caller over its limits is answered before its body is
                // read.
                .layer(option_layer(limiter.map(GateLayer))),
            // The body limit is the endpoints' own (`endpoints::forward`
            // reads every body there is to read): a declared length over it
            // is refused at once, a chunked body cut at it, in the
            // endpoint's provider's shape, with no layer wrapping the
            // request and response bodies of every route for it.
        )
        .with_state(gateway)
}

/// Every target's name as a header value, made once: a clone per answer is
/// a reference count (cloned here once, so that its bytes are shared from
/// the start), not a copy. A name that is no header value is left out (the
/// answer then copies it, or leaves the header out, as before).
fn target_values(stack: &Stack) -> HashMap<String, HeaderValue> {
    let mut values = HashMap::default();
    for (_, targets) in stack.routes() {
        for name in targets {
            if let Ok(value) = HeaderValue::from_str(name) {
                drop(value.clone());
                values.insert(name.to_owned(), value);
            }
        }
    }
    values
}
