//! What a fallback call comes to when no target serves it, or on the way:
//! the error returned with the report of every target passed, and the log
//! line and counter of each move from one target to the next.

use std::sync::Arc;

use tower_llm_classify::{Classification, ErrorKind, LlmError};

use crate::report::{FallbackReport, TRACING_TARGET};
use crate::route::Route;

/// One move (or the end of the line): a tracing event, and with the
/// `metrics` feature a counter by (from, to, reason).
pub(crate) fn moved_on(from: &str, to: Option<&str>, kind: ErrorKind, route: Route) {
    if kind == ErrorKind::CircuitOpen {
        tracing::debug!(target: TRACING_TARGET, from, to, route = ?route, "target skipped: circuit open");
    } else {
        tracing::info!(target: TRACING_TARGET, from, to, reason = kind.as_str(), route = ?route, "target failed");
    }
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "tower_llm_fallback_moves_total",
        "from" => from.to_owned(),
        "to" => to.unwrap_or("none").to_owned(),
        "reason" => kind.as_str()
    )
    .increment(1);
}

/// No target of the route can take the request: none speaks the
/// [`Protocol`](crate::Protocol) it names, or there are none.
pub(crate) fn no_target(parts: Option<&http::request::Parts>) -> LlmError {
    match parts.and_then(|p| p.extensions.get::<crate::Protocol>()) {
        Some(protocol) => LlmError::local(
            ErrorKind::NotFound,
            &format!("no target of this route speaks {protocol}"),
        ),
        None => LlmError::local(ErrorKind::Unknown, "no target"),
    }
}

/// The error returned when a target's failure stops the fallback: its own,
/// with the report of what failed before.
pub(crate) fn finish(
    error: LlmError,
    failures: Vec<(Arc<str>, LlmError)>,
    last: Option<Arc<str>>,
) -> LlmError {
    let mut report_failures: Vec<(Arc<str>, Classification)> = failures
        .into_iter()
        .map(|(n, e)| (n, e.classification().clone()))
        .collect();
    if let Some(last) = last {
        report_failures.push((last, error.classification().clone()));
    }
    let mut error = error;
    error.extensions_mut().insert(FallbackReport {
        served_by: None,
        failures: report_failures,
    });
    error
}

/// Every target failed: the most useful of their errors, with the report.
/// When every target is cooling down (rate limited, or an open circuit
/// with a known wait), the one that can be tried soonest, so a gateway can
/// answer with that `Retry-After`; otherwise the first error a provider
/// actually sent (it has a response head), else the primary's.
pub(crate) fn all_failed(mut failures: Vec<(Arc<str>, LlmError)>) -> LlmError {
    let report: Vec<(Arc<str>, Classification)> = failures
        .iter()
        .map(|(n, e)| (Arc::clone(n), e.classification().clone()))
        .collect();
    let cooling = |e: &LlmError| {
        matches!(e.kind(), ErrorKind::RateLimited | ErrorKind::CircuitOpen)
            && e.classification().retry_after().is_some()
    };
    let chosen = if failures.iter().all(|(_, e)| cooling(e)) {
        failures
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, e))| {
                e.classification()
                    .retry_after()
                    .unwrap_or(std::time::Duration::MAX)
            })
            .map_or(0, |(i, _)| i)
    } else {
        failures
            .iter()
            .position(|(_, e)| e.response_head().is_some())
            .unwrap_or(0)
    };
    if failures.is_empty() {
        return LlmError::local(ErrorKind::Unknown, "no target was tried");
    }
    let mut error = failures.swap_remove(chosen).1;
    tracing::warn!(target: TRACING_TARGET, targets = report.len(), kind = error.kind().as_str(), "every target failed");
    error.extensions_mut().insert(FallbackReport {
        served_by: None,
        failures: report,
    });
    error
}
