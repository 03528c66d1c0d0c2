//! [`ClassifyLayer`]: configuration of the classify layer.

use std::time::Duration;

use tower_layer::Layer;

use crate::{Classify, Provider};

/// Default limit on the error body bytes kept: 64 KiB.
pub const DEFAULT_ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Wraps a service in [`Classify`]: error responses and service errors become
/// classified [`LlmError`](crate::LlmError)s, stream bodies are watched for
/// in-band errors, and [`RequestMeta`](crate::RequestMeta) is attached to the
/// request.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_llm_classify::{ClassifyLayer, Provider};
/// # let client = tower::service_fn(|_: http::Request<String>| async {
/// #     Ok::<_, std::io::Error>(http::Response::new(String::new()))
/// # });
///
/// let service = ServiceBuilder::new()
///     .layer(
///         ClassifyLayer::new()
///             .provider(Provider::OpenAi) // behind a proxy, say who is really answering
///             .error_body_limit(16 * 1024)
///             .stream_idle_timeout(Duration::from_secs(30)),
///     )
///     .service(client);
/// # let _ = service;
/// ```
///
/// # Clone
///
/// The layer holds only configuration (`Copy`); it has no shared state, so
/// calling [`Layer::layer`] several times (as axum does) is free.
#[derive(Clone, Copy, Debug)]
pub struct ClassifyLayer {
    pub(crate) config: Config,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) provider: Option<Provider>,
    pub(crate) error_body_limit: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) scan_streams: bool,
    pub(crate) require_terminal_event: bool,
    pub(crate) capture_transcripts: bool,
}

impl Default for ClassifyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ClassifyLayer {
    /// The layer with its defaults: provider detected per request, 64 KiB of
    /// error body kept, streams scanned, a missing terminal event is a
    /// failure (unless the answer's finish was delivered), no idle timeout,
    /// no transcripts kept.
    pub const fn new() -> Self {
        ClassifyLayer {
            config: Config {
                provider: None,
                error_body_limit: DEFAULT_ERROR_BODY_LIMIT,
                idle_timeout: None,
                scan_streams: true,
                require_terminal_event: true,
                capture_transcripts: false,
            },
        }
    }

    /// Sets the provider instead of detecting it from each request's URI.
    pub const fn provider(mut self, provider: Provider) -> Self {
        self.config.provider = Some(provider);
        self
    }

    /// How many bytes of an error response body to read and keep. Longer
    /// bodies are truncated (never held whole); the classification uses what
    /// was kept.
    pub const fn error_body_limit(mut self, limit: usize) -> Self {
        self.config.error_body_limit = limit;
        self
    }

    /// Fails a stream that, after its first content event, delivers no
    /// content event for `timeout` (keep-alives do not count).
    ///
    /// The timer starts at the first content, not at the response head:
    /// a reasoning model may send nothing but keep-alives for minutes
    /// before its first token, so a timer from the head would have to be
    /// long enough for that, and silence after content has started is the
    /// clearest sign of a stall. Bound the wait for the head and the first
    /// content outside this layer (the retry layer's stream head,
    /// first-content and attempt timeouts).
    ///
    /// The timer is tokio's: responses must be polled inside a tokio runtime
    /// with the time driver enabled (as hyper and reqwest clients are).
    pub const fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Whether to scan SSE and NDJSON bodies for in-band errors (default
    /// true). Without it, streams are passed through like any body.
    pub const fn scan_streams(mut self, scan: bool) -> Self {
        self.config.scan_streams = scan;
        self
    }

    /// Whether a stream that ends without its protocol's terminal event
    /// (`[DONE]`, `message_stop`, …) is a failure (default true). A stream
    /// that delivered its answer's finish (`finish_reason`, `stop_reason`)
    /// before a clean end is complete either way; turn this off for servers
    /// known to omit both.
    pub const fn require_terminal_event(mut self, require: bool) -> Self {
        self.config.require_terminal_event = require;
        self
    }

    /// Whether to keep a [`Transcript`](crate::stream::Transcript) of every
    /// scanned stream (default false: a request asks for one with
    /// [`CaptureTranscript`](crate::stream::CaptureTranscript)). The
    /// response then carries a [`StreamTranscript`](crate::stream::StreamTranscript)
    /// in its extensions, as a failure of its body does.
    pub const fn capture_transcripts(mut self, capture: bool) -> Self {
        self.config.capture_transcripts = capture;
        self
    }
}

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Classify::new(inner, *self)
    }
}
