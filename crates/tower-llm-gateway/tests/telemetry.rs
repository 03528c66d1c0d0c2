//! Traces: the spans of requests through the gateway, caught with the
//! OpenTelemetry SDK's in-memory exporter, and what `[telemetry]` reads.

#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower_llm::config::StackConfig;
use tower_llm_gateway::telemetry::{self, otel_layer};
use tower_llm_gateway::{GatewayOptions, config};
use tower_llm_testkit::{Fault, Simulator};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Held by each test that sets a subscriber: `tracing` caches, for all
/// threads at once, whether a span's callsite is enabled, and two tests
/// setting subscribers at the same time could see each other's answer.
static SUBSCRIBER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serves `config` on an ephemeral port until the returned server is
/// dropped.
async fn gateway(config: &str) -> support::Running {
    let stack = StackConfig::from_toml(config)
        .unwrap()
        .build(support::upstream_client())
        .unwrap();
    support::serve_stack(stack, &GatewayOptions::default()).await
}

/// Spans caught in memory while the guard lives (as the gateway's binary
/// would export them): the exporter to read them from.
fn capture_spans() -> (InMemorySpanExporter, tracing::subscriber::DefaultGuard) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(otel_layer(provider.tracer("test")));
    (exporter, tracing::subscriber::set_default(subscriber))
}

/// A flaky `primary` and a healthy `backup` answering as `llama3.2`.
fn two_targets(primary: &Simulator, backup: &Simulator) -> String {
    format!(
        r#"
        preset = "development"

        [[targets]]
        name = "primary"
        base_url = "{}/v1"

        [[targets]]
        name = "backup"
        base_url = "{}/v1"
        model = "llama3.2"
        "#,
        primary.base_url(),
        backup.base_url()
    )
}

async fn sim(fault: Fault) -> Simulator {
    Simulator::builder().plan(fault).start().await.unwrap()
}

/// Posts a chat completion and reads the whole answer.
async fn chat(base: &str, model: &str) -> (StatusCode, String) {
    chat_body(
        base,
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
    )
    .await
}

async fn chat_body(base: &str, body: String) -> (StatusCode, String) {
    chat_with(base, body, http::HeaderMap::new()).await
}

async fn chat_with(base: &str, body: String, headers: http::HeaderMap) -> (StatusCode, String) {
    let mut request = Request::post(format!("{base}/v1/chat/completions"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    request.headers_mut().extend(headers);
    let response = support::client().request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    attribute(span, key).map(|v| v.as_str().into_owned())
}

fn number(span: &SpanData, key: &str) -> Option<i64> {
    match attribute(span, key) {
        Some(Value::I64(n)) => Some(*n),
        _ => None,
    }
}

/// The finished spans, once the request span (ended with the answer's
/// body, on the server's side of the connection) is among them.
async fn finished_spans(exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    for _ in 0..1000 {
        let spans = exporter.get_finished_spans().unwrap();
        if spans.iter().any(|s| s.span_kind == SpanKind::Server) {
            return spans;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "the request span never ended: {:?}",
        exporter.get_finished_spans()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_that_retried_and_fell_back_is_one_span_with_each_attempt_a_child() {
    let _serial = SUBSCRIBER.lock().await;
    let (exporter, _traced) = capture_spans();

    let primary = sim(Fault::status(503)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = gateway(&two_targets(&primary, &backup)).await;
    let base = gateway.base.clone();
    let (status, body) = chat(&base, "gpt-4o").await;
    assert_eq!(status, StatusCode::OK);

    let spans = finished_spans(&exporter).await;
    let requests: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(requests.len(), 1, "one request span: {spans:#?}");
    let request = requests[0];
    assert_eq!(request.name, "chat gpt-4o");
    assert_eq!(
        text(request, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        text(request, "gen_ai.request.model").as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(text(request, "tower_llm.target").as_deref(), Some("backup"));
    assert_eq!(number(request, "tower_llm.attempts"), Some(1));
    assert_eq!(
        text(request, "tower_llm.fallback.reason").as_deref(),
        Some("primary:overloaded")
    );
    assert_eq!(number(request, "http.response.status_code"), Some(200));
    // What the answer said, read as it passed.
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["model"], "llama3.2");
    assert_eq!(
        text(request, "gen_ai.response.model").as_deref(),
        Some("llama3.2")
    );
    assert_eq!(
        number(request, "gen_ai.usage.input_tokens"),
        answer["usage"]["prompt_tokens"].as_i64()
    );
    assert_eq!(
        number(request, "gen_ai.usage.output_tokens"),
        answer["usage"]["completion_tokens"].as_i64()
    );
    assert!(number(request, "gen_ai.usage.output_tokens").is_some());

    // Development preset: two attempts at the primary, then the backup,
    // asked for its own model; each a child of the request span.
    let mut attempts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    attempts.sort_by_key(|s| s.start_time);
    // Target, attempt number, error kind, model sent.
    type Attempt = (Option<String>, Option<i64>, Option<String>, Option<String>);
    let seen: Vec<Attempt> = attempts
        .iter()
        .map(|s| {
            (
                text(s, "tower_llm.target"),
                number(s, "tower_llm.attempt"),
                text(s, "tower_llm.error.kind"),
                text(s, "gen_ai.request.model"),
            )
        })
        .collect();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        seen,
        [
            (some("primary"), Some(1), some("overloaded"), some("gpt-4o")),
            (some("primary"), Some(2), some("overloaded"), some("gpt-4o")),
            (some("backup"), Some(1), None, some("llama3.2")),
        ]
    );
    for attempt in &attempts {
        assert_eq!(
            attempt.parent_span_id,
            request.span_context.span_id(),
            "{attempt:#?}"
        );
        assert_eq!(
            attempt.span_context.trace_id(),
            request.span_context.trace_id()
        );
        assert_eq!(
            text(attempt, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert!(
            text(attempt, "gen_ai.provider.name").is_some(),
            "{attempt:#?}"
        );
        assert_eq!(
            text(attempt, "server.address").as_deref(),
            Some("127.0.0.1")
        );
    }
    assert_eq!(number(attempts[0], "http.response.status_code"), Some(503));
    assert_eq!(number(attempts[2], "http.response.status_code"), Some(200));
    assert_eq!(attempts[2].name, "chat llama3.2");
    let port = |sim: &Simulator| {
        let url: http::Uri = sim.base_url().parse().unwrap();
        url.port_u16().map(i64::from)
    };
    assert_eq!(number(attempts[0], "server.port"), port(&primary));
    assert_eq!(number(attempts[2], "server.port"), port(&backup));
    assert!(port(&backup).is_some());
    // The primary's breaker had seen one failure when the retry started.
    assert_eq!(
        text(attempts[1], "tower_llm.breaker.state").as_deref(),
        Some("closed")
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_streamed_answer_gives_its_model_and_usage_to_the_request_span_when_it_ends() {
    let _serial = SUBSCRIBER.lock().await;
    let (exporter, _traced) = capture_spans();

    let primary = sim(Fault::ok()).await;
    let backup = sim(Fault::ok()).await;
    let gateway = gateway(&two_targets(&primary, &backup)).await;
    let base = gateway.base.clone();
    let body = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, stream) = chat_body(&base, body.to_owned()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stream.contains("data: [DONE]"), "{stream}");

    let spans = finished_spans(&exporter).await;
    let request = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(
        text(request, "gen_ai.response.model").as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(
        text(request, "tower_llm.target").as_deref(),
        Some("primary")
    );
    assert!(text(request, "tower_llm.fallback.reason").is_none());
    // The usage chunk the caller asked for, as the stream delivered it.
    let usage = stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .find(|chunk| chunk["usage"].is_object())
        .map(|chunk| chunk["usage"].clone());
    if let Some(usage) = usage {
        assert_eq!(
            number(request, "gen_ai.usage.input_tokens"),
            usage["prompt_tokens"].as_i64()
        );
        assert_eq!(
            number(request, "gen_ai.usage.output_tokens"),
            usage["completion_tokens"].as_i64()
        );
    }
    let attempts = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .count();
    assert_eq!(attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_over_http_as_protobuf() {
    let _serial = SUBSCRIBER.lock().await;
    // A collector: whatever is posted to its traces endpoint.
    let (posted, mut received) = tokio::sync::mpsc::unbounded_channel();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned());
            let _ = posted.send((content_type, body));
            async { StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let section = telemetry::TelemetrySection {
        otlp_endpoint: Some(format!("http://{address}")),
        service_name: Some("gateway-under-test".into()),
    };
    let traces = telemetry::Telemetry::start(&section).unwrap().unwrap();
    let subscriber = tracing_subscriber::registry().with(traces.layer());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            target: "tower_llm_gateway::request",
            "request",
            otel.name = "chat gpt-4o",
        );
        drop(span);
    });
    // Shutting down exports what is batched, and waits for the
    // collector's answer: the post is in by then.
    traces.shutdown().await;

    let (content_type, body) = received.try_recv().expect("the collector got the batch");
    assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
    // The protobuf holds the span's name and the service's as they are.
    let holds = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(holds(b"chat gpt-4o"), "{body:?}");
    assert!(holds(b"gateway-under-test"), "{body:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_callers_traceparent_makes_the_request_span_a_child_of_the_callers() {
    let _serial = SUBSCRIBER.lock().await;
    let (exporter, _traced) = capture_spans();

    let primary = sim(Fault::ok()).await;
    let backup = sim(Fault::ok()).await;
    let gateway = gateway(&two_targets(&primary, &backup)).await;
    let base = gateway.base.clone();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let body = r#"{"model":"gpt-4o","messages":[]}"#.to_owned();
    let (status, _) = chat_with(&base, body, headers).await;
    assert_eq!(status, StatusCode::OK);

    let spans = finished_spans(&exporter).await;
    let request = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(
        request.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(request.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(request.parent_span_is_remote);
    let attempt = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(
        attempt.span_context.trace_id(),
        request.span_context.trace_id()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_broken_streams_continuation_is_an_attempt_of_the_same_request() {
    let _serial = SUBSCRIBER.lock().await;
    let (exporter, _traced) = capture_spans();

    // The primary's stream breaks after two events; the backup, told it
    // can, continues it.
    let primary = sim(Fault::stream_drop_after(2)).await;
    let backup = sim(Fault::ok()).await;
    let config = two_targets(&primary, &backup).replace(
        "model = \"llama3.2\"",
        "model = \"llama3.2\"\n        continuation = \"trailing_assistant\"",
    );
    let gateway = gateway(&config).await;
    let base = gateway.base.clone();
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, stream) = chat_body(&base, body.to_owned()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stream.contains("data: [DONE]"), "{stream}");
    assert_eq!(backup.requests().len(), 1, "continued by the backup");

    let spans = finished_spans(&exporter).await;
    let request = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let mut attempts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    attempts.sort_by_key(|s| s.start_time);
    let targets: Vec<Option<String>> = attempts
        .iter()
        .map(|s| text(s, "tower_llm.target"))
        .collect();
    assert_eq!(targets, [Some("primary".into()), Some("backup".into())]);
    for attempt in attempts {
        assert_eq!(attempt.parent_span_id, request.span_context.span_id());
    }
}

/// Counts the spans a layer is asked to make.
struct CountSpans(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountSpans {
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_an_exporter_a_log_filter_never_enables_the_spans_even_at_trace() {
    let _serial = SUBSCRIBER.lock().await;
    let spans = Arc::new(AtomicUsize::new(0));
    let filter = telemetry::without_spans(EnvFilter::new("trace"));
    let subscriber =
        tracing_subscriber::registry().with(CountSpans(Arc::clone(&spans)).with_filter(filter));
    let _logged = tracing::subscriber::set_default(subscriber);

    let primary = sim(Fault::status(503)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = gateway(&two_targets(&primary, &backup)).await;
    let base = gateway.base.clone();
    let (status, _) = chat(&base, "gpt-4o").await;
    assert_eq!(status, StatusCode::OK);

    // The gateway and the stack make no other span: none was made.
    assert_eq!(spans.load(Ordering::SeqCst), 0);
    let request = tracing::info_span!(target: "tower_llm_gateway::request", "request");
    let attempt = tracing::info_span!(target: "tower_llm::attempt", "attempt");
    assert!(request.is_disabled() && attempt.is_disabled());
    // Other spans at trace are still made: the filter is not off altogether.
    let other = tracing::trace_span!("other");
    assert!(!other.is_disabled());
    assert_eq!(spans.load(Ordering::SeqCst), 1);
}

#[test]
fn the_telemetry_section_is_read_beside_the_gateway_and_checked() {
    let (section, _) = config::parse_file(
        r#"
        [telemetry]
        otlp_endpoint = "http://127.0.0.1:4318"
        service_name = "edge"

        [[targets]]
        name = "a"
        base_url = "http://127.0.0.1:1/v1"
        "#,
    )
    .unwrap();
    assert_eq!(
        section.telemetry.traces_url().unwrap().unwrap(),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(section.telemetry.service_name(), "edge");

    let error = config::parse_file("[telemetry]\notlp_endpont = \"http://x:4318\"\n").unwrap_err();
    assert!(
        error.contains("[telemetry]") && error.contains("otlp_endpont"),
        "{error}"
    );
    let (none, _) = config::parse_file("").unwrap();
    assert_eq!(none.telemetry.traces_url(), Ok(None));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_attempt_without_a_model_names_its_targets_breaker_state() {
    let _serial = SUBSCRIBER.lock().await;
    let (exporter, _traced) = capture_spans();
    let only = sim(Fault::ok()).await;
    let config = format!(
        "preset = \"development\"\n[[targets]]\nname = \"only\"\nbase_url = \"{}/v1\"\n",
        only.base_url()
    );
    let running = gateway(&config).await;
    // A body that is not JSON has no model: it goes to the target under
    // the breaker `only/-`, made by the first call; the second's attempt
    // reads its state (whatever the target makes of such a body).
    let mut plain = http::HeaderMap::new();
    plain.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    for _ in 0..2 {
        chat_with(&running.base, "hi".to_owned(), plain.clone()).await;
    }
    let spans = finished_spans(&exporter).await;
    let states: Vec<Option<String>> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .map(|s| text(s, "tower_llm.breaker.state"))
        .collect();
    assert_eq!(states.len(), 2, "{spans:#?}");
    assert!(states.contains(&Some("closed".to_owned())), "{states:?}");
}
