//! The gateway against hostile or broken callers: slow and stuck senders,
//! silent streams, and callers without the gateway's key. Started
//! in-process from the library, as `tests/gateway.rs` does,
//! on Tokio's paused clock; raw TCP where a well-behaved client cannot
//! misbehave enough.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::client;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_llm::config::StackConfig;
use tower_llm_gateway::{
    GatewayOptions, GatewaySection, config, prometheus, send_timeout::SendTimeout,
};
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

/// A running gateway over one simulated target.
struct Gateway {
    addr: SocketAddr,
    base: String,
    running: support::Running,
}

impl Gateway {
    async fn start(upstream: &Simulator, options: GatewayOptions) -> Gateway {
        Gateway::start_with(upstream, options, "").await
    }

    /// As `start`, with `extra` (TOML sections) in the stack's file.
    async fn start_with(upstream: &Simulator, options: GatewayOptions, extra: &str) -> Gateway {
        let config = StackConfig::from_toml(&format!(
            r#"
            preset = "development"
            [[targets]]
            name = "only"
            base_url = "{}/v1"
            {extra}
            "#,
            upstream.base_url()
        ))
        .unwrap();
        let stack = config.build(support::upstream_client()).unwrap();
        let running = support::serve_stack(stack, &options).await;
        Gateway {
            addr: running.addr,
            base: running.base.clone(),
            running,
        }
    }

    async fn post(&self, body: &str) -> Response<Incoming> {
        self.post_with(body, &[]).await
    }

    async fn post_with(&self, body: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        self.send("POST", "/v1/chat/completions", body, headers)
            .await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        client().request(request).await.unwrap()
    }

    async fn shutdown(self) {
        self.running.stop().await.unwrap();
    }
}

async fn text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn chat(stream: bool) -> String {
    format!(
        r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"hello"}}]}}"#
    )
}

/// Lets every task run until all wait on a timer or a socket: on the
/// paused clock the runtime only moves time on when nothing else can run,
/// so after this every byte sent on loopback has been handled.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A raw connection that sends a request head announcing a 1000-byte body,
/// then only `sent` bytes of it.
async fn slow_sender(addr: SocketAddr, sent: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\n\
          host: 127.0.0.1\r\n\
          content-type: application/json\r\n\
          content-length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    tcp.write_all(sent).await.unwrap();
    tcp
}

/// Whether the server still holds `tcp` open without having answered.
fn still_waiting(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Everything the server sends until it closes the connection.
async fn read_all(tcp: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let _ = tcp.read_to_end(&mut received).await;
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slow_senders_twice_the_concurrency_limit_do_not_keep_a_normal_request_out() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let options = GatewayOptions {
        max_concurrency: 2,
        ..Default::default()
    };
    let gateway = Gateway::start(&upstream, options).await;

    // Four callers announce a body and send a few bytes of it; one keeps
    // trickling a byte every second, the others stall.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(slow_sender(gateway.addr, b"{\"model\"").await);
    }
    let mut trickling = slow_sender(gateway.addr, b"{").await;
    settle().await;

    let response = gateway.post(&chat(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains("chat.completion"));
    for tcp in &stalled {
        assert!(still_waiting(tcp), "a slow sender was answered or dropped");
    }
    trickling.write_all(b" ").await.unwrap();
    assert!(still_waiting(&trickling));
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_that_stalls_or_trickles_gets_408_after_the_body_timeout_and_nothing_goes_upstream()
{
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start(&upstream, Default::default()).await;

    let mut stalled = slow_sender(gateway.addr, b"{\"model\"").await;
    let trickling = slow_sender(gateway.addr, b"{").await;
    let (mut reader, mut writer) = trickling.into_split();
    let trickle = tokio::spawn(async move {
        // A byte every second, for far longer than the body timeout.
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });

    let answer = read_all(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(!trickle.is_finished(), "answered while still trickling");
    trickle.abort();
    assert!(upstream.requests().is_empty(), "nothing was sent upstream");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_head_that_never_finishes_is_closed_after_the_header_timeout() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start(&upstream, Default::default()).await;

    let header = r#"tower_llm_gateway_timeouts_total{stage="header"}"#;
    let before = metric(&prometheus_text(), header);
    let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    settle().await;
    assert!(still_waiting(&tcp));
    // The head never ends: the gateway closes the connection.
    assert_eq!(read_all(&mut tcp).await, "");
    assert!(upstream.requests().is_empty());
    assert!(metric(&prometheus_text(), header) > before);
}

/// A metric's value in a Prometheus text, 0 when absent.
fn metric(text: &str, line: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn prometheus_text() -> String {
    let handle = prometheus().unwrap();
    handle.run_upkeep();
    handle.render()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_caller_that_goes_away_before_the_answer_is_counted_as_499() {
    let upstream = Simulator::builder()
        .latency(Duration::from_secs(30))
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start(&upstream, GatewayOptions::default()).await;
    let cancelled =
        r#"tower_llm_gateway_requests_total{endpoint="chat_completions",status="499",target="-"}"#;
    let before = metric(&prometheus_text(), cancelled);
    // The caller gives up after a second: its connection closes.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), gateway.post(&chat(false))).await;
    assert!(gave_up.is_err());
    settle().await;
    assert_eq!(metric(&prometheus_text(), cancelled), before + 1.0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_whose_upstream_goes_silent_is_ended_after_the_idle_timeout_and_frees_its_slot() {
    // No keep-alives either: the upstream sends nothing at all.
    let upstream = Simulator::builder()
        .plan(FaultPlan::script([Fault::stream_stall_after(1)]))
        .keepalive_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let options = GatewayOptions {
        max_concurrency: 1,
        stream_idle_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let gateway = Gateway::start(&upstream, options).await;
    let idle = r#"tower_llm_gateway_timeouts_total{stage="stream_idle"}"#;
    let before = metric(&prometheus_text(), idle);

    let response = gateway.post(&chat(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let read = response.into_body().collect().await.unwrap().to_bytes();
    let read = String::from_utf8(read.to_vec()).unwrap();
    assert!(
        read.contains("stream_idle_timeout_ms") && !read.contains("[DONE]"),
        "the silent stream was ended with an error event saying why: {read}"
    );
    assert!(metric(&prometheus_text(), idle) > before);
    // Its slot is free again.
    tokio::task::yield_now().await;
    assert_eq!(gateway.post(&chat(false)).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn upstream_keep_alives_count_as_bytes_so_a_stream_kept_alive_is_not_cut() {
    // Content, then only an SSE comment every 5 s.
    let upstream = Simulator::builder()
        .plan(Fault::stream_stall_after(1))
        .keepalive_interval(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let options = GatewayOptions {
        stream_idle_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    // The stack's own idle timer counts content only and would end this
    // stream (pings are not content): this test is about the gateway's.
    let no_stack_idle = "[classify]\nstream_idle_timeout_ms = 3600000";
    let gateway = Gateway::start_with(&upstream, options, no_stack_idle).await;

    let response = gateway.post(&chat(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut keep_alives = 0;
    // Six keep-alives: 30 s, three idle timeouts, with no content.
    while keep_alives < 6 {
        let frame = body.frame().await.unwrap().unwrap();
        if frame.data_ref().unwrap().starts_with(b":") {
            keep_alives += 1;
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_caller_that_stops_reading_is_disconnected_after_the_send_timeout_and_frees_its_slot() {
    // A stream far larger than every socket buffer between the two.
    let mut headers = http::HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
    let upstream = Simulator::builder()
        .plan(FaultPlan::script([Fault::raw(
            StatusCode::OK,
            headers,
            event.repeat(32 * 1024 * 1024 / event.len()),
        )]))
        .start()
        .await
        .unwrap();
    let options = GatewayOptions {
        max_concurrency: 1,
        send_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let gateway = Gateway::start(&upstream, options).await;
    let send = r#"tower_llm_gateway_timeouts_total{stage="send"}"#;
    let before = metric(&prometheus_text(), send);

    // A caller with a small receive window that asks and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(gateway.addr).await.unwrap();
    let body = chat(true);
    tcp.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    settle().await;
    // The stuck stream holds the only slot...
    assert_eq!(
        gateway.post(&chat(false)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // ...until its write has made no progress for the send timeout.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(metric(&prometheus_text(), send) > before);
    assert_eq!(gateway.post(&chat(false)).await.status(), StatusCode::OK);
    drop(tcp);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_write_that_progresses_slowly_is_never_cut_and_a_stalled_one_is_after_the_send_timeout() {
    let (mut caller, gateway_side) = tokio::io::duplex(16);
    let mut io = SendTimeout::new(gateway_side, Duration::from_secs(10));
    io.write_all(&[b'x'; 16]).await.unwrap();
    // The caller takes a byte every 9 s: every write progresses in time.
    let reader = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_secs(9)).await;
            caller.read_exact(&mut byte).await.unwrap();
        }
        caller
    });
    io.write_all(&[b'y'; 8]).await.unwrap();
    let _caller = reader.await.unwrap();
    // Now the caller reads nothing more (and stays connected).
    let error = io.write_all(&[b'z'; 8]).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeouts_as_long_as_duration_max_mean_no_limit_and_never_panic() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let options = GatewayOptions {
        header_read_timeout: Duration::MAX,
        request_body_timeout: Duration::MAX,
        stream_idle_timeout: Duration::MAX,
        send_timeout: Duration::MAX,
        ..Default::default()
    };
    let gateway = Gateway::start(&upstream, options).await;
    let response = gateway.post(&chat(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.ends_with("data: [DONE]\n\n"));
    assert_eq!(gateway.post(&chat(false)).await.status(), StatusCode::OK);

    // From the file: the largest integer TOML has (i64::MAX ms).
    let (section, _) = config::parse_file(
        "[gateway]\nheader_read_timeout_ms = 9223372036854775807\n\
         request_body_timeout_ms = 9223372036854775807\n\
         stream_idle_timeout_ms = 9223372036854775807\n\
         send_timeout_ms = 9223372036854775807\n",
    )
    .unwrap();
    let options = section.options().unwrap();
    assert_eq!(options.send_timeout, Duration::from_millis(i64::MAX as u64));
    gateway.shutdown().await;
}

#[test]
fn bad_timeout_values_are_refused_naming_the_key() {
    for key in [
        "header_read_timeout_ms",
        "request_body_timeout_ms",
        "stream_idle_timeout_ms",
        "send_timeout_ms",
    ] {
        for value in ["0", "-1", "\"30s\"", "1.5", "18446744073709551616"] {
            let error = config::parse_file(&format!("[gateway]\n{key} = {value}\n"))
                .and_then(|(section, _)| section.options())
                .unwrap_err();
            assert!(error.contains(key), "{key} = {value}: {error}");
        }
    }
}

const KEYS_VAR: &str = "TOWER_LLM_TEST_CALLER_KEYS";
const KEY_A: &str = "sk-gw-caller-a-0123456789";
const KEY_B: &str = "sk-gw-caller-b-9876543210";

/// Options requiring `KEY_A` or `KEY_B`, set as an operator would (spaces
/// and an empty entry included).
fn with_keys() -> GatewayOptions {
    let (section, _) =
        config::parse_file(&format!("[gateway]\napi_keys_env = \"{KEYS_VAR}\"\n")).unwrap();
    section
        .options_with_env(|name| (name == KEYS_VAR).then(|| format!(" {KEY_A} ,, {KEY_B} ")))
        .unwrap()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_caller_with_a_key_is_served_whether_it_sends_a_bearer_token_or_x_api_key() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start(&upstream, with_keys()).await;

    for headers in [
        [("authorization", bearer(KEY_A))],
        [("authorization", format!("bearer {KEY_B}"))],
        [("x-api-key", KEY_B.to_owned())],
    ] {
        let headers: Vec<_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = gateway.post_with(&chat(false), &headers).await;
        assert_eq!(response.status(), StatusCode::OK, "{headers:?}");
    }
    assert_eq!(upstream.requests().len(), 3);
    for request in upstream.requests() {
        assert!(!request.carries_credential(KEY_A) && !request.carries_credential(KEY_B));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_missing_or_wrong_key_is_an_openai_shaped_401_and_nothing_goes_upstream() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start(&upstream, with_keys()).await;
    let unauthenticated = r#"tower_llm_gateway_rejected_total{reason="unauthenticated"}"#;
    let before = metric(&prometheus_text(), unauthenticated);

    let wrong = format!("{KEY_A}x");
    let cases: [&[(&str, &str)]; 7] = [
        &[],
        &[("authorization", "Bearer sk-not-a-key")],
        &[("authorization", &wrong)],
        &[("authorization", "Basic c2stZ3ctY2FsbGVyLWE=")],
        &[("authorization", "Bearer ")],
        &[("x-api-key", "sk-not-a-key")],
        &[("api-key", KEY_A)],
    ];
    for headers in cases {
        let response = gateway.post_with(&chat(false), headers).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
        assert!(!body.to_string().contains("sk-"), "no key echoed: {body}");
    }
    // Every /v1 path, known or not, and a body over the limit: 401 first.
    for (method, path) in [("GET", "/v1/models"), ("GET", "/v1/chat/completions")] {
        let response = gateway.send(method, path, "", &[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let huge = "a".repeat(5 * 1024 * 1024);
    let response = gateway.post(&huge).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    assert!(upstream.requests().is_empty(), "nothing went upstream");
    assert!(metric(&prometheus_text(), unauthenticated) >= before + 10.0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_need_a_key_and_health_shows_liveness_to_anyone_and_details_with_a_key() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let gateway = Gateway::start(&upstream, with_keys()).await;
    let authorization = bearer(KEY_A);
    let with_key = [("authorization", authorization.as_str())];
    // Some traffic, with the keys in every header a caller might use.
    let response = gateway
        .post_with(
            &chat(false),
            &[("authorization", &authorization), ("x-api-key", KEY_B)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let _ = gateway
        .post_with(&chat(false), &[("x-api-key", &format!("{KEY_B}-wrong"))])
        .await;

    let response = gateway.send("GET", "/metrics", "", &[]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = gateway.send("GET", "/metrics", "", &with_key).await;
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = text(response).await;
    assert!(
        metrics.contains("tower_llm_gateway_requests_total"),
        "{metrics}"
    );

    let response = gateway.send("GET", "/health", "", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let open: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(
        open,
        serde_json::json!({"status": "ok", "auth": {"required": true}})
    );
    let response = gateway.send("GET", "/health", "", &with_key).await;
    let health = text(response).await;
    let details: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        details["auth"],
        serde_json::json!({"required": true, "keys": 2})
    );
    assert!(details["circuits"].is_array(), "{health}");

    for text in [&metrics, &health, &open.to_string()] {
        for secret in [KEY_A, KEY_B, "sk-gw-caller"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

/// Every line the gateway logs while `run` runs, at every level.
async fn logs_of<F: std::future::Future<Output = ()>>(run: F) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime has one thread: every task logs through this.
    let guard = tracing::subscriber::set_default(subscriber);
    run.await;
    drop(guard);
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn what_a_caller_sends_wrong_is_logged_at_debug_and_an_upstreams_failure_at_warn() {
    // Any caller (without caller keys) could otherwise fill the log at
    // warn with requests that reach no target.
    let upstream = Simulator::builder()
        .plan(Fault::server_error(500))
        .start()
        .await
        .unwrap();
    let logs = logs_of(async {
        let gateway = Gateway::start_with(
            &upstream,
            GatewayOptions::default(),
            "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"only\"]\n",
        )
        .await;
        for body in ["not json", r#"{"model":"no-such-model","messages":[]}"#] {
            let response = gateway.post(body).await;
            assert!(response.status().is_client_error(), "{body}");
            let _ = text(response).await;
        }
        let response = gateway.post(&chat(false)).await;
        assert!(response.status().is_server_error());
        let _ = text(response).await;
        gateway.shutdown().await;
    })
    .await;
    let warned: Vec<&str> = logs.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warned
            .iter()
            .all(|l| !l.contains("invalid_request") && !l.contains("not_found")),
        "{logs}"
    );
    assert!(
        warned
            .iter()
            .any(|l| l.contains("endpoints::errors") && l.contains("server_error")),
        "{logs}"
    );
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains(" DEBUG ") && l.contains("refused"))
            .count(),
        2,
        "{logs}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn caller_keys_appear_in_no_log_line() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let logs = logs_of(async {
        let gateway = Gateway::start(&upstream, with_keys()).await;
        let authorization = bearer(KEY_A);
        let wrong = bearer(&format!("{KEY_B}-wrong"));
        for headers in [
            vec![("authorization", authorization.as_str())],
            vec![("x-api-key", KEY_B)],
            vec![("authorization", wrong.as_str())],
            vec![("x-api-key", "sk-gw-caller-guess")],
        ] {
            let _ = text(gateway.post_with(&chat(false), &headers).await).await;
        }
        gateway.shutdown().await;
    })
    .await;
    // The capture works: the refusals are there, by reason.
    assert!(logs.contains("caller refused"), "{logs}");
    assert!(
        logs.contains("key=\"wrong\"") || logs.contains("key=wrong"),
        "{logs}"
    );
    for secret in [KEY_A, KEY_B, "sk-gw-caller"] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

#[test]
fn a_non_loopback_listen_without_caller_keys_is_refused_unless_explicitly_allowed() {
    let options = |gateway: &str| {
        let (section, _) = config::parse_file(&format!("[gateway]\n{gateway}")).unwrap();
        section
            .options_with_env(|name| (name == KEYS_VAR).then(|| KEY_A.to_owned()))
            .unwrap()
    };
    for listen in ["0.0.0.0:9000", "192.168.1.10:8080", "[::]:9000"] {
        let open = options(&format!("listen = \"{listen}\"\n"));
        let error = open.check_exposure(open.listen).unwrap_err();
        assert!(error.contains(listen), "{error}");
        assert!(error.contains("api_keys_env"), "{error}");
        assert!(error.contains("allow_unauthenticated = true"), "{error}");

        let allowed = options(&format!(
            "listen = \"{listen}\"\nallow_unauthenticated = true\n"
        ));
        allowed.check_exposure(allowed.listen).unwrap();
        let keyed = options(&format!(
            "listen = \"{listen}\"\napi_keys_env = \"{KEYS_VAR}\"\n"
        ));
        keyed.check_exposure(keyed.listen).unwrap();
    }
    // Loopback needs neither: the demo runs as it always has.
    for listen in [
        "127.0.0.1:8080",
        "127.0.0.2:8080",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:8080",
    ] {
        let local = options(&format!("listen = \"{listen}\"\n"));
        local.check_exposure(local.listen).unwrap();
    }
    let demo = GatewaySection::default().options().unwrap();
    demo.check_exposure(demo.listen).unwrap();
}

#[test]
fn the_keys_variable_unset_or_empty_is_a_start_up_error_naming_it_and_never_its_value() {
    let section = |text: &str| config::parse_file(text).unwrap().0;
    let keyed = section(&format!("[gateway]\napi_keys_env = \"{KEYS_VAR}\"\n"));

    let error = keyed.options_with_env(|_| None).unwrap_err();
    assert!(
        error.contains(KEYS_VAR) && error.contains("not set"),
        "{error}"
    );
    for empty in ["", " ", " , ,, "] {
        let error = keyed
            .options_with_env(|_| Some(empty.to_owned()))
            .unwrap_err();
        assert!(
            error.contains(KEYS_VAR) && error.contains("no key"),
            "{error}"
        );
    }
    let error = keyed
        .options_with_env(|_| Some(format!("{KEY_A},sk-caf\u{e9}-secret")))
        .unwrap_err();
    assert!(
        error.contains(KEYS_VAR) && error.contains("key 2"),
        "{error}"
    );
    assert!(
        !error.contains("secret") && !error.contains(KEY_A),
        "{error}"
    );

    let options = keyed
        .options_with_env(|name| (name == KEYS_VAR).then(|| format!("{KEY_A}, {KEY_B},")))
        .unwrap();
    let keys = options.caller_keys.unwrap();
    assert_eq!(keys.len(), 2);
    // Debug shows how many, never the keys.
    let debug = format!("{keys:?}");
    assert!(
        debug.contains("count: 2") && !debug.contains("sk-"),
        "{debug}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let upstream = Simulator::builder()
        .plan(Fault::ok())
        .start()
        .await
        .unwrap();
    let options = GatewayOptions {
        max_connections: 2,
        ..Default::default()
    };
    let gateway = Gateway::start(&upstream, options).await;
    // Two slow senders take both connections.
    let first = slow_sender(gateway.addr, b"{").await;
    let second = slow_sender(gateway.addr, b"{").await;
    settle().await;
    // A third caller's request is not read while they hold them.
    let mut third = TcpStream::connect(gateway.addr).await.unwrap();
    let body = chat(false);
    third
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                 content-type: application/json\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    settle().await;
    assert!(still_waiting(&third), "served beyond max_connections");
    assert_eq!(upstream.requests().len(), 0);
    // One closes: the third is accepted and served.
    drop(first);
    let answer = read_all(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.requests().len(), 1);
    drop(second);
}
