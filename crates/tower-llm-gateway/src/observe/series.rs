//! The Prometheus series the observe layer writes, their handles kept.
//!
//! A `metrics::counter!` with labels builds its labels on every call, and
//! the Prometheus exporter hands each lookup back in a new `Arc`: two
//! allocations per series per request, three series per request. A series
//! is looked up once here, then its handle is reused; the gateway installs
//! its recorder before it serves, so a handle taken at the first request
//! is the recorder's.

use std::sync::{Arc, OnceLock, RwLock};

// Keys callers do not choose (endpoints, target names from the
// configuration, statuses, a few u16 values): a fast hasher, not SipHash (with the activity's and the
// target header values' maps, 163.4k -> 162.3k instructions a request in
// gateway_load's callgrind).
use foldhash::HashMap;

use http::StatusCode;
use metrics::{Counter, Histogram, SharedString};

use super::ENDPOINTS;
use crate::prometheus::status_label;

/// At most this many (endpoint, status, target) series are kept; beyond,
/// a series is looked up on every request as before (statuses and targets
/// are few: a gateway's own answers and its configured targets).
const MOST_KEPT: usize = 4096;

/// An answer's series: its endpoint (index in [`ENDPOINTS`]), status and
/// target.
type Key = (usize, u16, Option<Arc<str>>);

/// The series of one observe layer.
#[derive(Debug, Default)]
pub(crate) struct Series {
    first_byte: [OnceLock<Histogram>; ENDPOINTS.len()],
    failed_after_head: [OnceLock<Counter>; ENDPOINTS.len()],
    answers: RwLock<HashMap<Key, (Counter, Histogram)>>,
}

impl Series {
    /// `tower_llm_gateway_time_to_first_byte_seconds` of `endpoint`.
    pub(crate) fn first_byte(&self, endpoint: usize) -> &Histogram {
        self.first_byte[endpoint].get_or_init(|| {
            metrics::histogram!(
                "tower_llm_gateway_time_to_first_byte_seconds",
                "endpoint" => ENDPOINTS[endpoint].1
            )
        })
    }

    /// `tower_llm_gateway_failed_after_head_total` of `endpoint`.
    pub(crate) fn failed_after_head(&self, endpoint: usize) -> &Counter {
        self.failed_after_head[endpoint].get_or_init(|| {
            metrics::counter!(
                "tower_llm_gateway_failed_after_head_total",
                "endpoint" => ENDPOINTS[endpoint].1
            )
        })
    }

    /// Counts an answer of `endpoint` with `status` from `target` (`-`
    /// when none) and records how long it took.
    pub(crate) fn answered(
        &self,
        endpoint: usize,
        status: StatusCode,
        target: Option<&Arc<str>>,
        seconds: f64,
    ) {
        let key = (endpoint, status.as_u16(), target.cloned());
        let read = self.answers.read().unwrap_or_else(|p| p.into_inner());
        if let Some((count, took)) = read.get(&key) {
            count.increment(1);
            took.record(seconds);
            return;
        }
        let full = read.len() >= MOST_KEPT;
        drop(read);
        let (count, took) = register(endpoint, status, target);
        count.increment(1);
        took.record(seconds);
        if !full {
            self.answers
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_insert((count, took));
        }
    }
}

/// The requests counter and duration histogram of one answer's labels.
fn register(
    endpoint: usize,
    status: StatusCode,
    target: Option<&Arc<str>>,
) -> (Counter, Histogram) {
    let endpoint = ENDPOINTS[endpoint].1;
    let status = status_label(status);
    let target = target.map_or(SharedString::const_str("-"), |t| {
        SharedString::from(Arc::clone(t))
    });
    let count = metrics::counter!(
        "tower_llm_gateway_requests_total",
        "endpoint" => endpoint,
        "status" => status.clone(),
        "target" => target
    );
    let took = metrics::histogram!(
        "tower_llm_gateway_request_duration_seconds",
        "endpoint" => endpoint,
        "status" => status
    );
    (count, took)
}
