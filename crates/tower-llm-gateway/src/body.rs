//! The gateway's response body: the upstream's frames passed through
//! untouched, holding the request's concurrency permit until it ends, and
//! ended early when the shutdown grace period is over or the upstream goes
//! silent for too long.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use tower_llm::classify::stream::{Dialect, error_event};
use tower_llm::classify::{BoxError, Classified, ErrorKind, LlmError};
use tower_llm::fallback::continuation::ContinuationReport;

use crate::config::LONGEST_TIMEOUT;
use crate::headers::CONTINUED_TRAILER;

pin_project_lite::pin_project! {
    /// A response body that holds a concurrency permit until it ends or is
    /// dropped (the caller went away).
    ///
    /// "Silence" is time without a frame carrying bytes from the upstream:
    /// an SSE keep-alive comment counts, so this timer never cuts a
    /// provider that keeps its stream alive. The stack's own idle timer
    /// does (it counts content only, after the first), and is never
    /// longer than this one, so it fires first on a stream and reports why;
    /// this one is the backstop for bodies the stack does not watch (see
    /// `GatewaySection::fit_idle_timeout`). A caller that stops reading is
    /// another matter: hyper then stops asking for frames, and the
    /// connection's send timeout (`SendTimeout`) ends it.
    pub(crate) struct ResponseBody<B> {
        #[pin]
        body: B,
        // Resolves when the shutdown grace period is over.
        closed: Pin<Box<dyn Future<Output = ()> + Send>>,
        // Fires at the earliest moment the body may have been silent for
        // `idle_timeout`; moved on lazily (see `silent_too_long`), so a
        // frame costs a clock read, not a timer update. `None`: no limit.
        #[pin]
        idle: Option<Sleep>,
        idle_timeout: Duration,
        last_bytes: Instant,
        // A stream's dialect: a failure after its head is sent as the
        // dialect's in-band error event, then a clean end, so the caller's
        // SDK reads why instead of a bare connection error. `None`: a whole
        // body, cut as it is (there is no way to say why inside it).
        in_band: Option<Dialect>,
        // How the stack continued the answer, told at its end (metrics,
        // log, and the trailer when `trailers`).
        continuation: Option<ContinuationReport>,
        trailers: bool,
        // The trailer to send after a stream's in-band error event.
        pending: Option<HeaderMap>,
        // Set when a stream ends with an in-band error event: the answer
        // failed though its head said 200 (read by `observe`).
        failed: Option<Arc<AtomicBool>>,
        ended: bool,
        _permit: OwnedSemaphorePermit,
    }
}

impl<B> ResponseBody<B> {
    /// Wraps `body`, holding `permit`; `closed` resolves when the grace
    /// period is over; `in_band`: the stream's dialect, for its failures.
    pub(crate) fn new(
        body: B,
        permit: OwnedSemaphorePermit,
        closed: Pin<Box<dyn Future<Output = ()> + Send>>,
        idle_timeout: Duration,
        in_band: Option<Dialect>,
    ) -> Self {
        let idle_timeout = idle_timeout.min(LONGEST_TIMEOUT);
        let now = Instant::now();
        ResponseBody {
            body,
            closed,
            idle: now.checked_add(idle_timeout).map(tokio::time::sleep_until),
            idle_timeout,
            last_bytes: now,
            in_band,
            continuation: None,
            trailers: false,
            pending: None,
            failed: None,
            ended: false,
            _permit: permit,
        }
    }

    /// Tells, when the body ends, how many times the answer was continued
    /// (`report`): in the metrics and the log, and as the
    /// `x-tower-llm-continued` trailer when `trailers` (the caller asked
    /// for them and the head announced it).
    pub(crate) fn reporting(mut self, report: Option<ContinuationReport>, trailers: bool) -> Self {
        self.continuation = report;
        self.trailers = trailers;
        self
    }

    /// For a stream: the flag its end sets when it was an in-band error
    /// event, to put in the answer's extensions ([`FailedInBand`]).
    pub(crate) fn failed_in_band(&mut self) -> Option<FailedInBand> {
        self.in_band?;
        let flag = Arc::new(AtomicBool::new(false));
        self.failed = Some(Arc::clone(&flag));
        Some(FailedInBand(flag))
    }
}

/// In a streamed answer's extensions: whether the stream, whose head said
/// 200, ended with an in-band error event (set when it does).
#[derive(Clone, Debug)]
pub(crate) struct FailedInBand(Arc<AtomicBool>);

impl FailedInBand {
    /// Whether it did.
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a finished answer's continuation report says: counted in the
/// metrics and logged when it was continued; the trailer's fields when
/// `trailers`.
fn told(report: Option<&ContinuationReport>, trailers: bool) -> Option<HeaderMap> {
    let report = report?;
    let continued = report.continued();
    let targets = report.targets();
    for target in &targets {
        metrics::counter!(
            "tower_llm_gateway_continuations_total",
            "target" => target.to_string()
        )
        .increment(1);
    }
    let by = targets
        .iter()
        .map(|t| t.as_ref())
        .collect::<Vec<_>>()
        .join(", ");
    if continued > 0 {
        tracing::info!(
            continued,
            by = by.as_str(),
            "answer continued after it broke"
        );
    }
    if !trailers {
        return None;
    }
    let value = if continued == 0 {
        "0".to_owned()
    } else {
        format!("{continued}; {by}")
    };
    let mut fields = HeaderMap::new();
    // Target names come from the configuration; one that is not a valid
    // header value leaves the count alone.
    let value = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from(continued));
    fields.insert(HeaderName::from_static(CONTINUED_TRAILER), value);
    Some(fields)
}

impl<B> http_body::Body for ResponseBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(this.pending.take().map(|t| Ok(Frame::trailers(t))));
        }
        let in_band = *this.in_band;
        let mut fail = |error: BoxError| -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            // A continued answer that failed in the end is told too: in
            // the metrics and the log, and in the trailer announced.
            let fields = told(this.continuation.as_ref(), *this.trailers);
            let Some(dialect) = in_band else {
                return Poll::Ready(Some(Err(error)));
            };
            *this.ended = true;
            *this.pending = fields;
            if let Some(failed) = this.failed.as_ref() {
                failed.store(true, Ordering::Relaxed);
            }
            let classification = error.classification();
            tracing::info!(
                kind = classification.kind().as_str(),
                "stream ended with an in-band error event"
            );
            Poll::Ready(Some(Ok(Frame::data(error_event(dialect, &classification)))))
        };
        if this.closed.as_mut().poll(cx).is_ready() {
            let shut_down = LlmError::local(ErrorKind::Overloaded, "the gateway shut down");
            return fail(Box::new(shut_down));
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.data_ref().is_none_or(|data| data.has_remaining()) {
                    *this.last_bytes = Instant::now();
                }
                // An upstream's own trailers end the body: ours join them.
                let frame = match frame.into_trailers() {
                    Ok(mut trailers) => {
                        *this.ended = true;
                        if let Some(ours) = told(this.continuation.as_ref(), *this.trailers) {
                            trailers.extend(ours);
                        }
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => fail(error.into()),
            Poll::Ready(None) => {
                *this.ended = true;
                let fields = told(this.continuation.as_ref(), *this.trailers);
                Poll::Ready(fields.map(|fields| Ok(Frame::trailers(fields))))
            }
            Poll::Pending => {
                let silent =
                    silent_too_long(this.idle.as_mut(), *this.last_bytes, *this.idle_timeout, cx);
                if !silent {
                    return Poll::Pending;
                }
                let ms = this.idle_timeout.as_millis();
                metrics::counter!("tower_llm_gateway_timeouts_total", "stage" => "stream_idle")
                    .increment(1);
                tracing::warn!(
                    idle_ms = ms as u64,
                    "response ended: the upstream sent nothing for stream_idle_timeout_ms"
                );
                let silent = LlmError::local(
                    ErrorKind::Timeout,
                    &format!("the upstream sent nothing for {ms} ms (stream_idle_timeout_ms)"),
                );
                fail(Box::new(silent))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // With a report to tell, the end is ours to say (after it).
        if self.ended {
            self.pending.is_none()
        } else {
            self.continuation.is_none() && self.body.is_end_stream()
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether the body has had no bytes for `timeout` since `last_bytes`.
/// When the timer fires early (bytes came since it was set), it is moved
/// to the true deadline and polled again, so it wakes this task then.
fn silent_too_long(
    idle: Pin<&mut Option<Sleep>>,
    last_bytes: Instant,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> bool {
    let Some(mut sleep) = idle.as_pin_mut() else {
        return false;
    };
    loop {
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        match last_bytes.checked_add(timeout) {
            Some(deadline) if deadline > sleep.deadline() => sleep.as_mut().reset(deadline),
            Some(_) => return true,
            None => return false,
        }
    }
}
