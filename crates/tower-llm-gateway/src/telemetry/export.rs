//! [`Telemetry`]: the OpenTelemetry pipeline behind the spans — a batch
//! processor and an OTLP/HTTP (protobuf) exporter — and the `tracing`
//! layer that feeds it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Handle;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::{TelemetrySection, span_filter};

/// How long one export may take, connection included; then the batch is
/// dropped (traces never hold the gateway up).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a collector's answer read (it is a small protobuf).
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

/// The trace pipeline: spans batched (the SDK's batch processor, on a
/// thread of its own) and posted to the collector over OTLP/HTTP through
/// the gateway's own HTTP client, on the gateway's runtime.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), String> {
/// use tracing_subscriber::layer::SubscriberExt;
/// use tracing_subscriber::util::SubscriberInitExt;
/// use tower_llm_gateway::telemetry::{Telemetry, TelemetrySection};
///
/// let section = TelemetrySection {
///     otlp_endpoint: Some("http://127.0.0.1:4318".into()),
///     service_name: None,
/// };
/// let telemetry = Telemetry::start(&section)?;
/// tracing_subscriber::registry()
///     .with(telemetry.as_ref().map(Telemetry::layer))
///     .init();
/// // ... serve ...
/// if let Some(telemetry) = telemetry {
///     telemetry.shutdown().await;
/// }
/// # Ok(())
/// # }
/// ```
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The pipeline `section` asks for, or `None` when it sets no
    /// `otlp_endpoint`. Call it on the runtime that will serve (exports
    /// run there).
    pub fn start(section: &TelemetrySection) -> Result<Option<Telemetry>, String> {
        let Some(url) = section.traces_url()? else {
            return Ok(None);
        };
        let runtime = Handle::try_current()
            .map_err(|e| format!("[telemetry] traces need a tokio runtime: {e}"))?;
        let client = ExportClient {
            client: crate::upstream_client(),
            runtime,
            failing: Arc::default(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.to_string())
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .map_err(|e| format!("[telemetry] otlp_endpoint: {e}"))?;
        let resource = Resource::builder()
            .with_service_name(section.service_name().to_owned())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Some(Telemetry { provider }))
    }

    /// The `tracing` layer that turns the gateway's spans (and only them:
    /// [`span_filter`]) into OpenTelemetry spans for this pipeline.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        otel_layer(self.provider.tracer("tower-llm-gateway"))
    }

    /// Exports what is still batched and stops the pipeline (on a blocking
    /// thread: the SDK waits for its processor).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "traces: the last batch could not be exported");
        }
    }
}

/// The layer [`Telemetry::layer`] makes, over any tracer (a test's, over
/// the SDK's in-memory exporter): the gateway's spans only, without the
/// layer's source-location, target, thread and busy/idle attributes.
pub fn otel_layer<S, T>(tracer: T) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    T: opentelemetry::trace::Tracer + Send + Sync + 'static,
    T::Span: Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(span_filter())
}

/// The exporter's HTTP client: the gateway's hyper-rustls client, each
/// post run on the gateway's runtime (the batch processor's thread has
/// none) and awaited from there.
///
/// The log says when the collector stops taking traces (their batches are
/// dropped) and when it takes them again: one line each, not one per batch.
#[derive(Clone)]
struct ExportClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: Handle,
    failing: Arc<AtomicBool>,
}

/// Logs a change between a collector that takes the traces and one that
/// does not.
fn note(failing: &AtomicBool, answer: &Result<Response<Bytes>, HttpError>) {
    let failure = match answer {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(format!("it answered {}", response.status())),
        Err(error) => Some(error.to_string()),
    };
    match failure {
        Some(why) if !failing.swap(true, Ordering::Relaxed) => {
            tracing::warn!(%why, "traces: the collector does not take them; batches are dropped until it does");
        }
        None if failing.swap(false, Ordering::Relaxed) => {
            tracing::info!("traces: the collector takes them again");
        }
        _ => {}
    }
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportClient")
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let failing = Arc::clone(&self.failing);
        let post = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, MAX_COLLECTOR_ANSWER)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(head, body))
        };
        let task = self.runtime.spawn(async move {
            let answer = match tokio::time::timeout(EXPORT_TIMEOUT, post).await {
                Ok(answer) => answer,
                Err(_elapsed) => Err("the collector did not answer in time".into()),
            };
            note(&failing, &answer);
            answer
        });
        task.await?
    }
}
