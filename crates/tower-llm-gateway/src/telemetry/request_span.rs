//! [`RequestSpanLayer`]: the span of each API request, around everything
//! the gateway does for it (the stack's attempt spans are its children),
//! open until the last byte of the answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, Uri, header};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Deserialize;
use tower::{Layer, Service};
use tower_llm::classify::RequestMeta;
use tower_llm::classify::stream::StreamTranscript;
use tracing::Span;
use tracing::field::Empty;

use super::REQUEST_SPAN_TARGET;
use crate::headers::{ATTEMPTS_HEADER, FALLBACKS_HEADER, TARGET_HEADER};

/// The most of a whole (not streamed) JSON answer kept to read its model
/// and usage from; a larger one is not read.
const MAX_ANSWER_READ: usize = 4 * 1024 * 1024;
/// The most of a request body kept to read its model from (the gateway's
/// own body limit is usually lower).
const MAX_REQUEST_READ: usize = 32 * 1024 * 1024;

/// The API endpoints that get a span, with their `gen_ai.operation.name`.
const OPERATIONS: [(&str, &str); 5] = [
    ("/v1/chat/completions", "chat"),
    ("/v1/completions", "text_completion"),
    ("/v1/embeddings", "embeddings"),
    ("/v1/responses", "chat"),
    ("/v1/messages", "chat"),
];

fn operation_of(path: &str) -> Option<&'static str> {
    OPERATIONS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, operation)| *operation)
}

/// Puts each API request (`/v1/chat/completions`, `/v1/completions`,
/// `/v1/embeddings`, `/v1/responses`, `/v1/messages`) in a span of target
/// [`REQUEST_SPAN_TARGET`]; other paths pass untouched.
///
/// The span is current while the request is handled, so the stack's
/// attempt spans are its children, and lasts until the answer's body ends.
/// With a `traceparent` header (W3C Trace Context), the span continues the
/// caller's trace. It records the caller's model (read as the handler reads the body), the
/// status, the serving target, its attempts and the targets passed (from
/// the `x-tower-llm-*` headers the handler sets), and, when the answer
/// says, the model that answered and the tokens used (a whole JSON answer's
/// `model` and `usage`, or a stream's as the stack's transcript of it
/// read them).
///
/// A span no subscriber enables costs one check: nothing is wrapped.
///
/// ```
/// use axum::Router;
/// use axum::routing::post;
/// use tower_llm_gateway::telemetry::RequestSpanLayer;
///
/// let app: Router = Router::new()
///     .route("/v1/chat/completions", post(|| async { "{}" }))
///     .layer(RequestSpanLayer::new());
/// # let _ = app;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpanLayer {
    _private: (),
}

impl RequestSpanLayer {
    /// The layer.
    pub fn new() -> Self {
        RequestSpanLayer::default()
    }
}

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> RequestSpan<S> {
        RequestSpan { inner }
    }
}

/// The service of [`RequestSpanLayer`].
#[derive(Clone, Debug)]
pub struct RequestSpan<S> {
    inner: S,
}

impl<S, E> Service<Request<Body>> for RequestSpan<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = E>,
{
    type Response = Response<Body>;
    type Error = E;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(operation) = operation_of(request.uri().path()) else {
            return ResponseFuture {
                future: self.inner.call(request),
                span: Span::none(),
            };
        };
        let span = tracing::info_span!(
            target: REQUEST_SPAN_TARGET,
            "request",
            otel.name = operation,
            otel.kind = "server",
            otel.status_code = Empty,
            gen_ai.operation.name = operation,
            gen_ai.request.model = Empty,
            gen_ai.response.model = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            http.request.method = request.method().as_str(),
            url.path = request.uri().path(),
            http.response.status_code = Empty,
            error.type = Empty,
            tower_llm.target = Empty,
            tower_llm.attempts = Empty,
            tower_llm.fallback.reason = Empty,
        );
        if span.is_disabled() {
            return ResponseFuture {
                future: self.inner.call(request),
                span,
            };
        }
        adopt_callers_trace(&span, request.headers());
        let request = request.map(|body| {
            Body::new(RequestBody {
                inner: body,
                span: span.clone(),
                operation,
                read: Some(Vec::new()),
                read_len: 0,
            })
        });
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture { future, span }
    }
}

pin_project! {
    /// The future of [`RequestSpan`]: the handler's, polled in the span.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        span: Span,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            ready!(this.future.poll(cx))
        };
        if this.span.is_disabled() {
            return Poll::Ready(result);
        }
        Poll::Ready(result.map(|response| answered(this.span, response)))
    }
}

/// Records what the head of the answer says, and keeps the span open in
/// its body.
fn answered(span: &Span, response: Response<Body>) -> Response<Body> {
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        span.record("error.type", status.as_str());
    }
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    let headers = response.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(target) = text(TARGET_HEADER).filter(|t| *t != "-") {
        span.record("tower_llm.target", target);
    }
    if let Some(attempts) = text(ATTEMPTS_HEADER).and_then(|a| a.parse::<i64>().ok()) {
        span.record("tower_llm.attempts", attempts);
    }
    if let Some(passed) = text(FALLBACKS_HEADER) {
        span.record("tower_llm.fallback.reason", passed);
    }
    let answer = if is_content_type(headers, b"text/event-stream") {
        Answer::Stream(response.extensions().get::<StreamTranscript>().cloned())
    } else if status.is_success() && is_content_type(headers, b"application/json") {
        Answer::Whole(BytesMut::new())
    } else {
        Answer::Unread
    };
    let span = span.clone();
    response.map(|inner| {
        Body::new(ResponseBody {
            inner,
            span,
            answer,
        })
    })
}

fn is_content_type(headers: &HeaderMap, prefix: &[u8]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(prefix))
}

pin_project! {
    /// The caller's body, its bytes kept (shared, not copied) until it
    /// ends, then scanned once for its `model`.
    struct RequestBody {
        #[pin]
        inner: Body,
        span: Span,
        operation: &'static str,
        read: Option<Vec<Bytes>>,
        read_len: usize,
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(read), Some(data)) = (this.read.as_mut(), frame.data_ref()) {
                    *this.read_len += data.len();
                    if *this.read_len > MAX_REQUEST_READ {
                        *this.read = None;
                    } else {
                        read.push(data.clone());
                    }
                }
            }
            Some(Err(_)) => *this.read = None,
            None => {}
        }
        // The end is the last frame when the body knows its length (a
        // reader may stop polling there), else the `None` after it.
        if (frame.is_none() || this.inner.is_end_stream())
            && let Some(read) = this.read.take()
        {
            record_request_model(this.span, this.operation, &read);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body's `model`, as the stack reads it, on the span and in its name
/// (`chat gpt-4o`, as the conventions name a GenAI span).
fn record_request_model(span: &Span, operation: &str, read: &[Bytes]) {
    let whole;
    let body: &[u8] = match read {
        [one] => one,
        many => {
            whole = many.concat();
            &whole
        }
    };
    let (meta, _) = RequestMeta::from_whole_body(&Uri::from_static("/"), &HeaderMap::new(), body);
    if let Some(model) = meta.model.as_deref() {
        span.record("gen_ai.request.model", model);
        rename(span, format!("{operation} {model}"));
    }
}

/// Makes the span a child of the caller's, when the request says which
/// (W3C Trace Context's `traceparent`, `tracestate`): the caller's trace
/// goes on through the gateway.
#[cfg(feature = "otel")]
fn adopt_callers_trace(span: &Span, headers: &HeaderMap) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry_http::HeaderExtractor;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if headers.contains_key("traceparent") {
        let caller = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        // Refused only for a span no OpenTelemetry layer records.
        let _ = span.set_parent(caller);
    }
}

#[cfg(not(feature = "otel"))]
fn adopt_callers_trace(_: &Span, _: &HeaderMap) {}

/// Renames the span's OpenTelemetry span (`otel.name` is read only until
/// the span starts, and this one started with the request).
#[cfg(feature = "otel")]
fn rename(span: &Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    span.context().span().update_name(name);
}

#[cfg(not(feature = "otel"))]
fn rename(_: &Span, _: String) {}

/// What the answer's body may tell.
enum Answer {
    /// A stream: the stack's transcript of it, when it kept one.
    Stream(Option<StreamTranscript>),
    /// A whole JSON answer, read up to [`MAX_ANSWER_READ`].
    Whole(BytesMut),
    /// Nothing to read (an error, an answer too large).
    Unread,
}

pin_project! {
    /// The answer's body, holding the request span open until it ends.
    struct ResponseBody {
        #[pin]
        inner: Body,
        span: Span,
        answer: Answer,
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        // In the span: a broken stream's continuation is an attempt of
        // this request too.
        let frame = {
            let _entered = this.span.enter();
            ready!(this.inner.as_mut().poll_frame(cx))
        };
        match &frame {
            Some(Ok(frame)) => {
                if let (Answer::Whole(read), Some(data)) = (&mut *this.answer, frame.data_ref()) {
                    if read.len() + data.len() > MAX_ANSWER_READ {
                        *this.answer = Answer::Unread;
                    } else {
                        read.extend_from_slice(data);
                    }
                }
            }
            Some(Err(_)) => {
                // The handler ends the caller's stream with an error event
                // in its dialect; the span says it broke.
                this.span.record("otel.status_code", "error");
                this.span.record("error.type", "stream_incomplete");
                *this.answer = Answer::Unread;
            }
            None => {}
        }
        // hyper stops polling at the last frame of a body that knows its
        // length: that frame is the end.
        if frame.is_none() || this.inner.is_end_stream() {
            record_answer(this.span, std::mem::replace(this.answer, Answer::Unread));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A whole answer's `model` and `usage`: OpenAI's (`prompt_tokens`,
/// `completion_tokens`) or Anthropic's and the Responses API's
/// (`input_tokens`, `output_tokens`).
#[derive(Deserialize)]
struct WholeAnswer {
    model: Option<String>,
    usage: Option<WholeUsage>,
}

#[derive(Deserialize)]
struct WholeUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

fn record_answer(span: &Span, answer: Answer) {
    let (model, input, output) = match answer {
        Answer::Stream(Some(transcript)) => transcript.read(|t| {
            let usage = t.usage();
            (
                t.model().map(str::to_owned),
                usage.and_then(|u| u.input_tokens),
                usage.and_then(|u| u.output_tokens),
            )
        }),
        Answer::Whole(read) => match serde_json::from_slice::<WholeAnswer>(&read) {
            Ok(answer) => {
                let usage = answer.usage;
                (
                    answer.model,
                    usage
                        .as_ref()
                        .and_then(|u| u.input_tokens.or(u.prompt_tokens)),
                    usage
                        .as_ref()
                        .and_then(|u| u.output_tokens.or(u.completion_tokens)),
                )
            }
            Err(_) => (None, None, None),
        },
        Answer::Stream(None) | Answer::Unread => (None, None, None),
    };
    if let Some(model) = model {
        span.record("gen_ai.response.model", model);
    }
    // OpenTelemetry's integers are signed.
    if let Some(input) = input.and_then(|n| i64::try_from(n).ok()) {
        span.record("gen_ai.usage.input_tokens", input);
    }
    if let Some(output) = output.and_then(|n| i64::try_from(n).ok()) {
        span.record("gen_ai.usage.output_tokens", output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_endpoints_that_call_a_model_get_a_span() {
        assert_eq!(operation_of("/v1/chat/completions"), Some("chat"));
        assert_eq!(operation_of("/v1/completions"), Some("text_completion"));
        assert_eq!(operation_of("/v1/embeddings"), Some("embeddings"));
        assert_eq!(operation_of("/v1/messages"), Some("chat"));
        assert_eq!(operation_of("/v1/models"), None);
        assert_eq!(operation_of("/health"), None);
    }
}
