//! [`Resume`]: after a served stream broke, the call for the rest of the
//! answer — the same target when the failure may pass there, else the
//! next one that can continue — and the splice that hands it on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_llm_classify::stream::Dialect;
use tower_llm_classify::{ErrorKind, LlmError, RequestMeta};
use tower_service::Service;

use super::splice::Usage;
use super::{Envelope, Splice, prefill_request};
use crate::group::Tracker;
use crate::report::TRACING_TARGET;
use crate::service::Shared;

/// What the call for the rest gave: the target that answered, its
/// answer, the splice for it, and the call's count in its group (in
/// flight until the rest's body ends, its latency to first content).
pub(crate) type Rest<B> = (usize, Response<B>, Splice, Option<Tracker>);

/// The call for the rest, boxed (only a stream that broke pays for it).
pub(crate) type RestFuture<B> = Pin<Box<dyn Future<Output = Result<Rest<B>, LlmError>> + Send>>;

/// Reads what the caller held when the first segment of a stream broke.
pub(crate) type FirstDelivered = Box<dyn Fn() -> Option<Delivered> + Send>;

/// What the caller holds of an answer whose stream broke.
#[derive(Clone, Debug, Default)]
pub(crate) struct Delivered {
    pub(crate) text: String,
    pub(crate) envelope: Envelope,
    /// What the segments so far reported using.
    pub(crate) usage: Usage,
}

/// How a served stream is continued, type-erased for the body.
pub(crate) trait Resumable<B>: Send {
    /// The call for the rest after the current segment failed with
    /// `failure`, the caller holding `delivered`; `None` when the answer
    /// cannot or may not be continued (the failure then stands).
    fn resume(&mut self, failure: &LlmError, delivered: &Delivered) -> Option<RestFuture<B>>;

    /// The rest is being read from target `index`.
    fn continued_by(&mut self, index: usize);
}

/// How many times the answers a fallback served were continued, and by
/// which targets; in the response's extensions, read once the body ended.
#[derive(Clone, Debug, Default)]
pub struct ContinuationReport(Arc<ReportInner>);

#[derive(Debug, Default)]
struct ReportInner {
    continued: AtomicU32,
    targets: std::sync::Mutex<Vec<Arc<str>>>,
}

impl ContinuationReport {
    /// How many times the answer was continued.
    pub fn continued(&self) -> u32 {
        self.0.continued.load(Ordering::Relaxed)
    }

    /// The targets that sent each continuation, in order.
    pub fn targets(&self) -> Vec<Arc<str>> {
        self.0
            .targets
            .lock()
            .map(|targets| targets.clone())
            .unwrap_or_default()
    }

    fn record(&self, target: Arc<str>) {
        self.0.continued.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut targets) = self.0.targets.lock() {
            targets.push(target);
        }
    }
}

/// The state a served stream keeps to be continued.
pub(crate) struct Resume<S> {
    pub(crate) shared: Arc<Shared<S>>,
    /// The caller's request head, shared by every continuation of it.
    pub(crate) parts: crate::head::SharedHead<S>,
    pub(crate) body: Bytes,
    pub(crate) dialect: Dialect,
    /// The target that sent the segment being read.
    pub(crate) current: usize,
    /// Continuations left.
    pub(crate) left: u32,
    pub(crate) report: ContinuationReport,
}

/// Whether a failure of a stream after content may be continued at all,
/// and on the same target: a cut connection, a stall, an overload or a
/// server error may pass there; a refusal of the content, a quota or an
/// authentication failure will not pass anywhere by asking again for the
/// rest of the same text.
fn continuable(kind: ErrorKind) -> Option<bool> {
    match kind {
        ErrorKind::Transport
        | ErrorKind::Timeout
        | ErrorKind::StreamIncomplete
        | ErrorKind::Overloaded
        | ErrorKind::ServerError
        | ErrorKind::Unknown => Some(true),
        ErrorKind::RateLimited
        | ErrorKind::QuotaExhausted
        | ErrorKind::Authentication
        | ErrorKind::Permission => Some(false),
        _ => None,
    }
}

impl<S, B> Resumable<B> for Resume<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<LlmError>,
    B: Send + 'static,
{
    fn resume(&mut self, failure: &LlmError, delivered: &Delivered) -> Option<RestFuture<B>> {
        if self.left == 0 {
            return None;
        }
        let same_target = continuable(failure.kind())?;
        // The same target first when the failure may pass there, then the
        // others in order: each that can continue an answer.
        let order: Vec<usize> = (same_target.then_some(self.current).into_iter())
            .chain((0..self.shared.targets.len()).filter(|i| *i != self.current))
            .filter(|i| {
                self.shared.targets[*i]
                    .continuation_capability()
                    .is_supported()
            })
            .filter(|i| !self.shared.refuses_prefill(*i))
            .filter(|i| self.shared.targets[*i].takes(Some(&*self.parts)))
            .collect();
        if order.is_empty() {
            return None;
        }
        self.left -= 1;
        let shared = Arc::clone(&self.shared);
        let parts = self.parts.clone();
        let body = self.body.clone();
        let dialect = self.dialect;
        let delivered = delivered.clone();
        let report = self.report.clone();
        let future = async move {
            let mut last: Option<LlmError> = None;
            let count = order.len();
            for (n, index) in order.into_iter().enumerate() {
                let target = &shared.targets[index];
                let how = target.continuation_capability();
                let prefill = match prefill_request(&body, &delivered.text, how, dialect) {
                    Ok(prefill) => prefill,
                    Err(why) => {
                        tracing::info!(target: TRACING_TARGET, target = &*target.name, %why, "not continued");
                        continue;
                    }
                };
                let request = match target.adapt_request(&parts, &prefill.body) {
                    Ok(request) => request,
                    Err(_) => continue,
                };
                let splice = match Splice::new(dialect, delivered.envelope.clone(), prefill.trimmed)
                {
                    Ok(splice) => splice.after(delivered.usage),
                    Err(_) => return Err(last.unwrap_or_else(not_continued)),
                };
                // The last target that may continue it has nowhere else to
                // send it.
                let mut service = target.service_for(n + 1 == count).clone();
                let ready: Result<(), LlmError> = std::future::poll_fn(|cx| service.poll_ready(cx))
                    .await
                    .map_err(Into::into);
                // Counted in its group as any call is (in flight, and its
                // latency), ending with the rest's body or this attempt.
                let mut tracker = Tracker::start(&shared, index);
                let answer: Result<Response<B>, LlmError> = match ready {
                    Ok(()) => {
                        let call = service.call(request);
                        call.await.map_err(Into::into)
                    }
                    Err(error) => Err(error),
                };
                match answer {
                    Ok(response) if response.status().is_success() => {
                        shared.mark_accepts_prefill(index);
                        tracing::info!(target: TRACING_TARGET, target = &*target.name, "continuing a broken stream");
                        report.record(Arc::clone(&target.name));
                        if let Some(tracker) = tracker.as_mut() {
                            tracker.answered(response.extensions());
                        }
                        return Ok((index, response, splice, tracker));
                    }
                    Ok(_) => last = Some(not_continued()),
                    Err(error) => {
                        if error.kind() == ErrorKind::InvalidRequest {
                            // A target that refuses the prefill a few times
                            // in a row is left out for a while; the caller
                            // gets the original failure.
                            shared.mark_refuses_prefill(index);
                        }
                        last = Some(error);
                    }
                }
            }
            Err(last.unwrap_or_else(not_continued))
        };
        Some(Box::pin(future))
    }

    fn continued_by(&mut self, index: usize) {
        self.current = index;
    }
}

fn not_continued() -> LlmError {
    LlmError::local(
        ErrorKind::StreamIncomplete,
        "no target continued the answer",
    )
}

/// Whether the splice knows how to continue a stream in `dialect` (the
/// chat dialects: OpenAI's Chat Completions, Anthropic's Messages,
/// Ollama's NDJSON). Classify keeps a transcript of these only: it has no
/// reader for the others (legacy completions, the Responses API).
pub(crate) fn splices(dialect: Dialect) -> bool {
    matches!(
        dialect,
        Dialect::OpenAiChat | Dialect::Anthropic | Dialect::OllamaNdjson
    )
}

/// The way to continue the answer target `index` sent, when the fallback
/// continues streams and this answer is one it can continue: the caller's
/// request kept, a streamed request in a dialect the splice knows, and
/// Classify's transcript of the stream in the response's extensions (a
/// [`ContinuationReport`] is put beside it).
pub(crate) fn resumable<S, B>(
    shared: &Arc<Shared<S>>,
    index: usize,
    request: (Option<crate::head::CallerHead<S>>, Bytes),
    head: &mut http::response::Parts,
) -> Option<(Box<dyn Resumable<B>>, FirstDelivered)>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<LlmError>,
    B: Send + 'static,
{
    if shared.continuations == 0 {
        return None;
    }
    let (Some(parts), body) = request else {
        return None;
    };
    let meta = parts.extensions.get::<RequestMeta>()?;
    let dialect = meta.dialect;
    if !meta.stream || !splices(dialect) {
        return None;
    }
    let first = super::transcript::reader(&head.extensions)?;
    let report = ContinuationReport::default();
    head.extensions.insert(report.clone());
    let resume = Resume {
        shared: Arc::clone(shared),
        parts: parts.into_shared(shared, body.is_empty()),
        body,
        dialect,
        current: index,
        left: shared.continuations,
        report,
    };
    Some((Box::new(resume), first))
}
