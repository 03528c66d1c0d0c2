//! What the simulator saw: every request, with credentials redacted, and
//! counters of what it answered.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::time::Instant;

use crate::api::Api;
use crate::fault::Fault;
use crate::prefill::RecordedPrefill;

/// Headers whose values are credentials: never stored, never printed.
pub const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "x-goog-api-key",
];

/// What replaces a credential's value in [`RecordedRequest::headers`].
pub const REDACTED: &str = "[redacted]";

/// One request as the simulator received it.
///
/// Credential headers (`authorization`, `x-api-key`, `api-key`, …) are
/// stored as `[redacted]`; what remains of them is a keyed fingerprint, so a
/// test can still ask whether a given key was sent
/// ([`carries_credential`](Self::carries_credential)) without the key being
/// kept or printed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// Position among all requests this simulator received, from 0.
    pub index: u64,
    /// When it arrived (Tokio's clock, so paused-time tests can measure backoff).
    pub at: Instant,
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// The API the path belongs to, if any.
    pub api: Option<Api>,
    /// The headers, credentials redacted.
    pub headers: HeaderMap,
    /// The body as received.
    pub body: Bytes,
    /// The `model` of the JSON body, if any.
    pub model: Option<String>,
    /// Whether the request asked for a stream.
    pub stream: bool,
    /// The start of the answer the request carried for the model to
    /// continue (its last message was the assistant's), and how it was
    /// marked: present whatever the simulator did with it (continued,
    /// ignored or refused).
    pub prefill: Option<RecordedPrefill>,
    /// The fault the plan gave it (`None` when it was answered before the
    /// plan: an invalid request, a wrong key, an unknown path, or shed).
    pub fault: Option<Fault>,
    /// Whether the capacity model shed it (answered with the overload reply).
    pub shed: bool,
    credentials: Vec<(HeaderName, u64)>,
}

impl RecordedRequest {
    pub(crate) fn new(
        index: u64,
        method: Method,
        path: String,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        let mut credentials = Vec::new();
        for name in CREDENTIAL_HEADERS {
            if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
                for value in entry.iter_mut() {
                    credentials
                        .push((HeaderName::from_static(name), fingerprint(value.as_bytes())));
                    *value = HeaderValue::from_static(REDACTED);
                }
            }
        }
        RecordedRequest {
            index,
            at: Instant::now(),
            method,
            api: Api::from_path(path.split('?').next().unwrap_or_default()),
            path,
            headers,
            body,
            model: None,
            stream: false,
            prefill: None,
            fault: None,
            shed: false,
            credentials,
        }
    }

    /// Whether any credential header carried `secret`, as the whole value or
    /// as `Bearer <secret>`.
    pub fn carries_credential(&self, secret: &str) -> bool {
        let plain = fingerprint(secret.as_bytes());
        let bearer = fingerprint(format!("Bearer {secret}").as_bytes());
        self.credentials
            .iter()
            .any(|(_, f)| *f == plain || *f == bearer)
    }

    /// The names of the credential headers the request carried.
    pub fn credential_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.credentials.iter().map(|(name, _)| name)
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// A fingerprint of a credential, keyed per process so it cannot be looked
/// up in a table of known keys' hashes.
fn fingerprint(value: &[u8]) -> u64 {
    use std::sync::OnceLock;
    static KEY: OnceLock<u64> = OnceLock::new();
    let key = *KEY.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0u64)
    });
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    value.hash(&mut hasher);
    hasher.finish()
}

/// The log of requests, shared by every connection.
#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: bool,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Recorder {
    pub(crate) fn new(enabled: bool) -> Self {
        Recorder {
            enabled,
            requests: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn push(&self, request: RecordedRequest) {
        if self.enabled {
            self.lock().push(request);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub(crate) fn take(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counters of what a simulator did, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests to an API route.
    pub requests: u64,
    /// Complete, healthy answers started (streams may still fail later by plan).
    pub answered: u64,
    /// Provider error replies (by plan, by validation, or shed).
    pub errors: u64,
    /// Requests shed by the capacity model.
    pub shed: u64,
    /// Connections reset or closed before a response.
    pub dropped: u64,
    /// Requests stalled without an answer.
    pub stalled: u64,
    /// Streams cut by the plan (in-band error, drop, stall, no terminal event).
    pub broken_streams: u64,
    /// Requests with a prefill answered with (the rest of) the reply after it.
    pub prefilled: u64,
    /// Requests with a prefill refused with a 400 (also counted in `errors`).
    pub prefill_refused: u64,
    /// Requests in service right now.
    pub in_service: usize,
    /// Requests waiting for a slot right now.
    pub queued: usize,
    /// The most requests ever in service at once.
    pub peak_in_service: usize,
}

/// The atomic side of [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) stalled: AtomicU64,
    pub(crate) broken_streams: AtomicU64,
    pub(crate) prefilled: AtomicU64,
    pub(crate) prefill_refused: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        (in_service, queued, peak_in_service): (usize, usize, usize),
    ) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: load(&self.requests),
            answered: load(&self.answered),
            errors: load(&self.errors),
            shed: load(&self.shed),
            dropped: load(&self.dropped),
            stalled: load(&self.stalled),
            broken_streams: load(&self.broken_streams),
            prefilled: load(&self.prefilled),
            prefill_refused: load(&self.prefill_refused),
            in_service,
            queued,
            peak_in_service,
        }
    }
}

/// The time between consecutive recorded requests: the backoff a client
/// waited (useful with paused time).
pub fn gaps(requests: &[RecordedRequest]) -> Vec<Duration> {
    requests
        .windows(2)
        .map(|pair| pair[1].at.saturating_duration_since(pair[0].at))
        .collect()
}

impl Recorder {
    pub(crate) fn push_opt(&self, request: Option<RecordedRequest>) {
        if let Some(request) = request {
            self.push(request);
        }
    }
}
