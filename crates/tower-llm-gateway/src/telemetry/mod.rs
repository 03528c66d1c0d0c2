//! Traces: one span per API request and one per attempt at a target, with
//! the OpenTelemetry GenAI semantic-convention attributes and ours,
//! exported over OTLP/HTTP when `[telemetry] otlp_endpoint` is set.
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4318"   # a collector's OTLP/HTTP port
//! service_name = "tower-llm-gateway"        # the default
//! ```
//!
//! The spans are `tracing` spans: the request span (target
//! [`REQUEST_SPAN_TARGET`]) is made by the router around every API
//! endpoint, the attempt spans (target [`ATTEMPT_SPAN_TARGET`]) by the
//! stack, one per attempt at a target, children of the request span. A
//! request with a `traceparent` header (W3C Trace Context) continues the
//! caller's trace. What each carries:
//!
//! | attribute | request span | attempt span |
//! | --- | --- | --- |
//! | `gen_ai.operation.name` (`chat`, `text_completion`, `embeddings`) | ✓ | ✓ |
//! | `gen_ai.request.model` | the caller's | the one sent to the target |
//! | `gen_ai.provider.name` (`openai`, `anthropic`, `aws.bedrock`, …) | | ✓ |
//! | `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | when the answer says | |
//! | `http.response.status_code`, `error.type` | ✓ | ✓ |
//! | `server.address`, `server.port` | | the target's host and port |
//! | `tower_llm.target` | the one that served | the one tried |
//! | `tower_llm.attempts` / `tower_llm.attempt` | attempts of the serving target | this attempt's number, from 1 |
//! | `tower_llm.fallback.reason` | the targets passed, with why (`primary:overloaded`) | |
//! | `tower_llm.error.kind`, `tower_llm.breaker.state` | | the classified failure; the breaker's state as the attempt started |
//!
//! Off by default: without `otlp_endpoint` no layer enables these spans,
//! their callsites stay disabled, and a request pays one check per span
//! (nothing is read, recorded or allocated for them).
//!
//! The GenAI names are the conventions' current ones (`gen_ai.provider.name`
//! replaced `gen_ai.system`; OpenTelemetry semantic conventions, GenAI
//! spans).

mod request_span;

#[cfg(not(feature = "otel"))]
mod disabled;
#[cfg(feature = "otel")]
mod export;

use serde::Deserialize;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;

pub use request_span::{RequestSpan, RequestSpanLayer};
pub use tower_llm::stack::ATTEMPT_SPAN_TARGET;

#[cfg(not(feature = "otel"))]
pub use disabled::Telemetry;
#[cfg(feature = "otel")]
pub use export::{Telemetry, otel_layer};

/// The `tracing` target of the request spans.
pub const REQUEST_SPAN_TARGET: &str = "tower_llm_gateway::request";

/// The service name traces carry by default (`service.name`).
pub const DEFAULT_SERVICE_NAME: &str = "tower-llm-gateway";

/// The `[telemetry]` section of the gateway's file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// Where to send traces, over OTLP/HTTP (protobuf): a collector's base
    /// URL (`http://127.0.0.1:4318`, to which `/v1/traces` is added) or
    /// the full URL of its traces endpoint (any URL with a path). Unset:
    /// no traces. Headers the collector needs (an API key) come from the
    /// environment (`OTEL_EXPORTER_OTLP_HEADERS`, as the OTLP exporter
    /// specification says), not from here: a URL with a user or a
    /// password in it is refused (it is shown at start and in errors).
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the traces (default `tower-llm-gateway`).
    pub service_name: Option<String>,
}

impl TelemetrySection {
    /// The URL traces are posted to, checked; `None` when traces are off.
    pub fn traces_url(&self) -> Result<Option<http::Uri>, String> {
        let Some(endpoint) = self.otlp_endpoint.as_deref().map(str::trim) else {
            return Ok(None);
        };
        // The URL is shown (at start, in errors): one with a user or a
        // password in it is refused, and never echoed.
        let authority = endpoint
            .split_once("://")
            .map_or(endpoint, |(_, rest)| rest)
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        if authority.contains('@') {
            return Err("[telemetry] otlp_endpoint: holds a user or a password (`user:password@`); the URL is shown at start and in errors, so it must not carry credentials".into());
        }
        let bad = |why: &str| format!("[telemetry] otlp_endpoint: `{endpoint}` {why}");
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| bad("is not a URL like http://127.0.0.1:4318"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("is not an http:// or https:// URL with a host"));
        }
        // OTLP/HTTP: the traces path is added to a base URL
        // (opentelemetry-specification, protocol/exporter.md).
        if matches!(uri.path(), "" | "/") {
            let base = endpoint.trim_end_matches('/');
            return format!("{base}/v1/traces")
                .parse()
                .map(Some)
                .map_err(|_| bad("is not a URL"));
        }
        Ok(Some(uri))
    }

    /// The service name traces carry.
    pub fn service_name(&self) -> &str {
        self.service_name
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or(DEFAULT_SERVICE_NAME)
    }
}

/// What enables the gateway's spans and nothing else: the filter for a
/// layer that exports them.
pub fn span_filter() -> Targets {
    Targets::new()
        .with_target(REQUEST_SPAN_TARGET, Level::INFO)
        .with_target(ATTEMPT_SPAN_TARGET, Level::INFO)
}

/// `filter` (a log filter) with the gateway's spans turned off, whatever
/// it says of their targets: a log layer does not enable them, so without
/// an exporting layer their callsites stay disabled.
pub fn without_spans(filter: EnvFilter) -> EnvFilter {
    [REQUEST_SPAN_TARGET, ATTEMPT_SPAN_TARGET]
        .into_iter()
        .filter_map(|target| format!("{target}=off").parse().ok())
        .fold(filter, EnvFilter::add_directive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(endpoint: &str) -> TelemetrySection {
        TelemetrySection {
            otlp_endpoint: Some(endpoint.to_owned()),
            service_name: None,
        }
    }

    #[test]
    fn a_base_url_gets_the_otlp_traces_path_and_a_full_one_is_kept() {
        let url = |endpoint| section(endpoint).traces_url().unwrap().unwrap().to_string();
        assert_eq!(
            url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("https://otel.example.com/otlp/v1/traces"),
            "https://otel.example.com/otlp/v1/traces"
        );
        assert_eq!(TelemetrySection::default().traces_url(), Ok(None));
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused_by_name() {
        for endpoint in [
            "localhost:4318",
            "grpc://collector:4317",
            "not a url",
            "http://",
        ] {
            let error = section(endpoint).traces_url().unwrap_err();
            assert!(error.contains("otlp_endpoint"), "{error}");
        }
    }

    #[test]
    fn an_endpoint_with_a_password_is_refused_without_echoing_it() {
        let error = section("https://user:s3cret@collector.example.com:4318")
            .traces_url()
            .unwrap_err();
        assert!(error.contains("otlp_endpoint"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        // An `@` past the host is no credential.
        assert!(
            section("https://collector.example.com/team@example/v1/traces")
                .traces_url()
                .is_ok()
        );
    }

    #[test]
    fn the_service_name_defaults_to_the_gateways() {
        assert_eq!(
            TelemetrySection::default().service_name(),
            "tower-llm-gateway"
        );
        let named = TelemetrySection {
            otlp_endpoint: None,
            service_name: Some("edge-gw".into()),
        };
        assert_eq!(named.service_name(), "edge-gw");
    }
}
