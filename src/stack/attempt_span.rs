//! [`AttemptSpan`]: one `tracing` span per attempt at a target, with the
//! OpenTelemetry GenAI semantic-convention attributes and the stack's own.
//!
//! It sits between a target's Retry and its Circuit, where each call is one
//! attempt: a retry is a second span, an attempt the open breaker refused
//! is a span that failed with `circuit_open`. The span is a child of
//! whatever span is current when the attempt starts (a gateway's request
//! span), and is closed when the attempt's response head arrives or it
//! fails; a stream that fails after its head is told by the layers above.
//!
//! Off unless a subscriber wants it: the span's callsite is disabled for a
//! subscriber that does not enable the target [`ATTEMPT_SPAN_TARGET`] at
//! info, and then nothing is read, written or allocated for it.
//!
//! Attribute names are the GenAI semantic conventions' (`gen_ai.*`, as of
//! the conventions that renamed `gen_ai.system` to `gen_ai.provider.name`)
//! and OpenTelemetry's general ones (`server.address`, `server.port`,
//! `error.type`, `http.response.status_code`); ours are under `tower_llm.`.
//! `tracing-opentelemetry` reads `otel.name`, `otel.kind` and
//! `otel.status_code` as the span's name, kind and status.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_llm_circuit::{CircuitHandle, KeyBy};
use tower_llm_classify::{LlmError, Provider, RequestMeta};
use tower_llm_retry::ReplayBody;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

/// The `tracing` target of the attempt spans: enable it (at info) in a
/// subscriber to get them.
pub const ATTEMPT_SPAN_TARGET: &str = "tower_llm::attempt";

/// A target's Circuit → Classify → client, each call in a span of its own.
///
/// The attempt number counts the calls made through one instance: the
/// retry layer's future keeps one instance for every attempt of a call
/// (and calls the clone it leaves behind never), so each call through the
/// stack numbers its attempts from 1 (`crates/tower-llm-retry/src/service.rs`).
#[derive(Clone)]
pub(super) struct AttemptSpan<S> {
    inner: S,
    target: Arc<str>,
    circuits: CircuitHandle,
    attempt: u32,
}

impl<S> AttemptSpan<S> {
    pub(super) fn new(inner: S, target: Arc<str>, circuits: CircuitHandle) -> Self {
        AttemptSpan {
            inner,
            target,
            circuits,
            attempt: 0,
        }
    }
}

impl<S> fmt::Debug for AttemptSpan<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptSpan")
            .field("target", &self.target)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<S, R> Service<Request<ReplayBody>> for AttemptSpan<S>
where
    S: Service<Request<ReplayBody>, Response = Response<R>>,
    S::Error: Into<LlmError>,
{
    type Response = Response<R>;
    type Error = LlmError;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReplayBody>) -> Self::Future {
        self.attempt = self.attempt.saturating_add(1);
        // One look at the callsite's interest when no subscriber wants the
        // span: nothing else is read.
        let span = if tracing::enabled!(target: ATTEMPT_SPAN_TARGET, tracing::Level::INFO) {
            self.span(&request)
        } else {
            Span::none()
        };
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        AttemptFuture { future, span }
    }
}

impl<S> AttemptSpan<S> {
    /// The attempt's span, with what is known before it is made.
    fn span(&self, request: &Request<ReplayBody>) -> Span {
        let operation = operation_name(request.uri().path());
        let meta = request.extensions().get::<RequestMeta>();
        let model = meta.and_then(|m| m.model.as_deref());
        let span = tracing::info_span!(
            target: ATTEMPT_SPAN_TARGET,
            "attempt",
            // The conventions' span name: `{operation} {model}`.
            otel.name = %SpanName(operation, model),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = operation,
            gen_ai.provider.name = meta.map(|m| provider_name(m.provider)),
            gen_ai.request.model = model,
            server.address = request.uri().host(),
            server.port = request.uri().port_u16().map(i64::from),
            http.response.status_code = Empty,
            error.type = Empty,
            tower_llm.target = &*self.target,
            tower_llm.attempt = i64::from(self.attempt),
            tower_llm.error.kind = Empty,
            tower_llm.breaker.state = Empty,
        );
        // The stack's breakers are keyed by `KeyBy::TargetModel`.
        let key = KeyBy::target_model_key(&self.target, model);
        if let Some(state) = self.circuits.state(&key) {
            span.record("tower_llm.breaker.state", state.as_str());
        }
        span
    }
}

/// `{operation} {model}`, or the operation alone.
struct SpanName<'a>(&'static str, Option<&'a str>);

impl fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(model) => write!(f, "{} {model}", self.0),
            None => f.write_str(self.0),
        }
    }
}

pin_project! {
    /// The future of one attempt, in its span.
    pub(super) struct AttemptFuture<F> {
        #[pin]
        future: F,
        span: Span,
    }
}

impl<F, R, E> Future for AttemptFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<LlmError>,
{
    type Output = Result<Response<R>, LlmError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            ready!(this.future.poll(cx)).map_err(Into::into)
        };
        if !this.span.is_disabled() {
            record_outcome(this.span, &result);
        }
        Poll::Ready(result)
    }
}

/// How the attempt ended.
fn record_outcome<R>(span: &Span, result: &Result<Response<R>, LlmError>) {
    match result {
        Ok(response) => {
            span.record(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            );
        }
        Err(error) => {
            let kind = error.kind().as_str();
            span.record("otel.status_code", "error");
            span.record("error.type", kind);
            span.record("tower_llm.error.kind", kind);
            if let Some(status) = error.classification().status() {
                span.record("http.response.status_code", i64::from(status.as_u16()));
            }
        }
    }
}

/// `gen_ai.operation.name` for a request path (the target's, whatever its
/// prefix).
pub(crate) fn operation_name(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    if path.ends_with("/embeddings") {
        "embeddings"
    } else if path.ends_with("/chat/completions")
        || path.ends_with("/messages")
        || path.ends_with("/responses")
    {
        "chat"
    } else if path.ends_with("/completions") {
        "text_completion"
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        "generate_content"
    } else {
        "chat"
    }
}

/// `gen_ai.provider.name`: the conventions' well-known value where there
/// is one, else the classify crate's name.
pub(crate) fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::AzureOpenAi => "azure.ai.openai",
        Provider::Gemini => "gcp.gemini",
        Provider::VertexAi => "gcp.vertex_ai",
        Provider::Bedrock => "aws.bedrock",
        Provider::Mistral => "mistral_ai",
        Provider::Xai => "x_ai",
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_is_read_from_the_path_under_any_prefix() {
        assert_eq!(operation_name("/v1/chat/completions"), "chat");
        assert_eq!(operation_name("/openai/v1/completions"), "text_completion");
        assert_eq!(operation_name("/v1/embeddings/"), "embeddings");
        assert_eq!(operation_name("/v1/messages"), "chat");
        assert_eq!(
            operation_name("/v1beta/models/gemini-2.5-pro:generateContent"),
            "generate_content"
        );
    }

    #[test]
    fn providers_take_the_conventions_well_known_names() {
        assert_eq!(provider_name(Provider::OpenAi), "openai");
        assert_eq!(provider_name(Provider::Anthropic), "anthropic");
        assert_eq!(provider_name(Provider::Bedrock), "aws.bedrock");
        assert_eq!(provider_name(Provider::AzureOpenAi), "azure.ai.openai");
        assert_eq!(provider_name(Provider::Ollama), "ollama");
    }
}
