//! `GET /`: the status page, one static HTML file (no build step, no
//! external assets) whose script reads `/health` every two seconds: every
//! target's requests per second and p50/p99 over the last minute, every
//! breaker key with its state, failure rate and the time left open or
//! cooling down, every deployment of a group with its picks, load and
//! latency, whether decisions are shared through Redis, and the last
//! fallbacks with their reasons.

use axum::response::{IntoResponse, Response};
use http::header;

/// The page, compiled in.
const PAGE: &str = include_str!("status.html");

/// Its policy: nothing but its own inline script and style, and requests
/// to this origin only (`/health`); never framed.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

pub(crate) async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}
