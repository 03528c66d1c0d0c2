//! The gateway's metrics: the process-wide Prometheus recorder (the
//! layers' counters and the gateway's own `tower_llm_gateway_*`) and
//! `/metrics`, its text.

use std::sync::OnceLock;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::error_json;
use crate::router::Gateway;

/// The upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The process-wide Prometheus recorder (installed once; later calls get
/// the same handle, so several gateways in one test process share it).
/// `None` when another recorder was installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latencies as true Prometheus histograms (buckets Grafana's
            // `histogram_quantile` reads), from 5 ms to 10 minutes: a
            // whole answer takes a second or so, a reasoning stream minutes.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// `/metrics`: the recorder's text, or 404 when the gateway has none.
pub(crate) async fn prometheus_text(State(gateway): State<Gateway>) -> Response {
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

/// The label of a status for the requests counter, without an allocation
/// for the statuses a gateway mostly answers with.
pub(crate) fn status_label(status: StatusCode) -> SharedString {
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
