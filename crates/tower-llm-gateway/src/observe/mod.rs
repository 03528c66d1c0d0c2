//! What the gateway sees of each request on an API endpoint, in one place
//! for every endpoint: the Prometheus series by endpoint (requests by
//! status and target, time to the first byte and total time as histograms),
//! the last minute per target and the last fallbacks (for `/health` and
//! the status page), and one log line at info for a request something
//! happened to (retried, or passed a target that failed).
//!
//! It reads what the handlers already tell the caller (`x-tower-llm-target`,
//! `-attempts`, `-fallbacks`), so a handler needs nothing of its own, and
//! it counts a stream when the stream ends (its total time is the stream's).

mod activity;
mod series;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use http_body::{Frame, SizeHint};
use tower::{Layer, Service};

use tower_llm::fallback::FallbackReport;

use crate::body::FailedInBand;
use crate::headers::{ATTEMPTS, FALLBACKS, TARGET};

#[allow(unused_imports)]
pub(crate) use activity::TargetFigures;
pub(crate) use activity::{Activity, Fallback};
use series::Series;

/// The API endpoints observed, by path, with their metric label. Anything
/// else (`/health`, `/metrics`, the status page, unknown paths) is not.
/// `/v1/models/{model}` counts as `models`.
pub(crate) const ENDPOINTS: [(&str, &str); 7] = [
    ("/v1/chat/completions", "chat_completions"),
    ("/v1/completions", "completions"),
    ("/v1/embeddings", "embeddings"),
    ("/v1/responses", "responses"),
    ("/v1/messages", "messages"),
    ("/v1/messages/count_tokens", "count_tokens"),
    ("/v1/models", "models"),
];

/// The index in [`ENDPOINTS`] of the endpoint serving `path`.
pub(crate) fn endpoint_index(path: &str) -> Option<usize> {
    ENDPOINTS.iter().position(|(p, _)| *p == path).or_else(|| {
        path.strip_prefix("/v1/models/")
            .filter(|model| !model.is_empty())
            .map(|_| ENDPOINTS.len() - 1)
    })
}

/// The label of an observed endpoint.
#[cfg(test)]
fn endpoint_of(path: &str) -> Option<&'static str> {
    endpoint_index(path).map(|i| ENDPOINTS[i].1)
}

/// The layer in front of the API endpoints (anything else passes by
/// untouched): each answer counted, timed and logged once it ends. A tower
/// layer, not an axum `from_fn`, so a request costs it no boxed future nor
/// boxed inner service; the answer's body is wrapped once.
#[derive(Clone, Debug)]
pub(crate) struct ObserveLayer {
    watched: Arc<Watched>,
}

/// Where an observed answer is recorded: the last minute per target and
/// the Prometheus series.
#[derive(Debug)]
struct Watched {
    activity: Arc<Activity>,
    series: Series,
}

impl ObserveLayer {
    /// Records into `activity`.
    pub(crate) fn new(activity: Arc<Activity>) -> Self {
        ObserveLayer {
            watched: Arc::new(Watched {
                activity,
                series: Series::default(),
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            watched: Arc::clone(&self.watched),
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Observe<S> {
    inner: S,
    watched: Arc<Watched>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let watch = endpoint_index(request.uri().path())
            .map(|endpoint| (endpoint, Instant::now(), Arc::clone(&self.watched)));
        ObserveFuture {
            inner: self.inner.call(request),
            watch,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`]: the answer, its body wrapped.
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        inner: F,
        watch: Option<(usize, Instant, Arc<Watched>)>,
    }

    impl<F> PinnedDrop for ObserveFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the answer's head: the caller went away (the
            // server drops the request's future when its connection
            // closes). Counted as nginx logs it, 499 with no target, so
            // that cancellations show in the metrics.
            if let Some((endpoint, started, watched)) = this.project().watch.take()
                && let Ok(status) = StatusCode::from_u16(CLIENT_CLOSED)
            {
                watched
                    .series
                    .answered(endpoint, status, None, started.elapsed().as_secs_f64());
            }
        }
    }
}

/// nginx's status for a request whose caller closed the connection before
/// the answer: `requests_total`'s status for one.
const CLIENT_CLOSED: u16 = 499;

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let Some((endpoint, started, watched)) = this.watch.take() else {
            return Poll::Ready(Ok(response));
        };
        let served_by = response
            .extensions()
            .get::<FallbackReport>()
            .and_then(|report| report.served_by.clone());
        let mut seen = Seen::of(
            endpoint,
            response.status(),
            response.headers(),
            served_by,
            started,
        );
        seen.failed_in_band = response.extensions().get::<FailedInBand>().cloned();
        let (head, body) = response.into_parts();
        let body = Body::new(Observed {
            inner: body,
            seen: Some(seen),
            watched,
        });
        Poll::Ready(Ok(Response::from_parts(head, body)))
    }
}

/// What the head of an answer said, kept until its body ends.
#[derive(Debug)]
struct Seen {
    /// The endpoint's index in [`ENDPOINTS`].
    endpoint: usize,
    status: StatusCode,
    started: Instant,
    first_byte: bool,
    target: Option<Arc<str>>,
    attempts: u32,
    passed: Option<String>,
    /// A stream's in-band failure, set by its body (`FailedInBand`).
    failed_in_band: Option<FailedInBand>,
    /// The body ended with an error.
    errored: bool,
}

impl Seen {
    fn of(
        endpoint: usize,
        status: StatusCode,
        headers: &HeaderMap,
        served_by: Option<Arc<str>>,
        started: Instant,
    ) -> Self {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        Seen {
            endpoint,
            status,
            started,
            first_byte: false,
            // Named only on an answer the handler made from a target's;
            // an error answer carries none ("-"). The fallback's report
            // holds the name already (a copy of the pointer, not of the
            // text).
            target: served_by.or_else(|| {
                text(&TARGET)
                    .filter(|t| *t != "-" && !t.is_empty())
                    .map(Arc::from)
            }),
            attempts: text(&ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(1),
            passed: text(&FALLBACKS)
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
            failed_in_band: None,
            errored: false,
        }
    }

    /// The answer's first byte: its time to first byte.
    fn first_byte(&mut self, series: &Series) {
        if !self.first_byte {
            self.first_byte = true;
            series
                .first_byte(self.endpoint)
                .record(self.started.elapsed().as_secs_f64());
        }
    }

    /// The answer is over (its end, an error, or the caller went away).
    fn done(self, watched: &Watched) {
        let activity = &watched.activity;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        watched.series.answered(
            self.endpoint,
            self.status,
            self.target.as_ref(),
            elapsed.as_secs_f64(),
        );
        // A stream whose head said 200 may still fail: its body ends with
        // an in-band error event (or an error).
        let failed_after_head =
            self.errored || self.failed_in_band.as_ref().is_some_and(FailedInBand::get);
        if failed_after_head {
            watched.series.failed_after_head(self.endpoint).increment(1);
        }
        let failed = !self.status.is_success() || failed_after_head;
        // The last minute per target: the one that answered, and each one
        // passed for a failure of its own (an open circuit is no call).
        if let Some(target) = &self.target {
            activity.record(target, failed, Some(elapsed), now);
        }
        for (target, kind) in self
            .passed
            .iter()
            .flat_map(|p| p.split(", "))
            .filter_map(|p| p.rsplit_once(':'))
        {
            if kind != "circuit_open" {
                activity.record(target, true, None, now);
            }
        }
        let Some(served_by) = self.target.filter(|_| !failed) else {
            // A failure is logged where it is answered (the handler's
            // warning, or the refusal's own line).
            return;
        };
        // Passing targets whose circuit is open is routine while they stay
        // open: counted, shown on the page, logged at debug.
        let routine = self
            .passed
            .as_deref()
            .is_none_or(|passed| passed.split(", ").all(|p| p.ends_with(":circuit_open")));
        if let Some(passed) = &self.passed {
            activity.fell_back(Fallback {
                at: now,
                endpoint: ENDPOINTS[self.endpoint].1,
                served_by: Arc::clone(&served_by),
                passed: passed.clone(),
            });
        }
        let passed = self.passed.as_deref().unwrap_or("");
        let ms = elapsed.as_millis() as u64;
        if self.attempts > 1 || !routine {
            tracing::info!(
                endpoint = ENDPOINTS[self.endpoint].1,
                target = &*served_by,
                attempts = self.attempts,
                passed,
                ms,
                "served after a failure"
            );
        } else {
            tracing::debug!(
                endpoint = ENDPOINTS[self.endpoint].1,
                target = &*served_by,
                attempts = self.attempts,
                passed,
                ms,
                "served"
            );
        }
    }
}

/// The answer's body, passed through as it is, with its first byte and
/// its end noted.
struct Observed {
    inner: Body,
    seen: Option<Seen>,
    watched: Arc<Watched>,
}

impl Observed {
    fn finish(&mut self) {
        if let Some(seen) = self.seen.take() {
            seen.done(&self.watched);
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // A caller that went away mid-stream is counted too.
        self.finish();
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.data_ref().is_some_and(|d| !d.is_empty())
                    && let Some(seen) = &mut this.seen
                {
                    seen.first_byte(&this.watched.series);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(seen) = &mut this.seen {
                    seen.errored = true;
                }
                this.finish();
            }
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_endpoints_are_observed() {
        assert_eq!(
            endpoint_of("/v1/chat/completions"),
            Some("chat_completions")
        );
        assert_eq!(endpoint_of("/v1/messages"), Some("messages"));
        assert_eq!(endpoint_of("/health"), None);
        assert_eq!(endpoint_of("/v1/chat/completions/"), None);
        assert_eq!(endpoint_of("/v1/models/gpt-4o"), Some("models"));
        assert_eq!(endpoint_of("/v1/models/"), None);
        assert_eq!(
            endpoint_of("/v1/messages/count_tokens"),
            Some("count_tokens")
        );
    }
}
