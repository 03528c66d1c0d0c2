//! The gateway against hostile or broken callers: slow and stuck senders,
//! silent streams, and callers without the gateway's key. Started
//! in-process from `examples/gateway/app.rs`, as `tests/gateway.rs` does,
//! on Tokio's paused clock; raw TCP where a well-behaved client cannot
//! misbehave enough.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../examples/gateway/app.rs"]
mod app;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_llm::config::StackConfig;
use tower_llm::retry::ReplayBody;
use tower_llm_testkit::{Fault, Simulator};

/// A running gateway over one simulated target.
struct Gateway {
    addr: SocketAddr,
    base: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    async fn start(upstream: &Simulator, options: app::GatewayOptions) -> Gateway {
        let config = StackConfig::from_toml(&format!(
            r#"
            preset = "development"
            [[targets]]
            name = "only"
            base_url = "{}/v1"
            "#,
            upstream.base_url()
        ))
        .unwrap();
        let client: Client<HttpConnector, ReplayBody> =
            Client::builder(TokioExecutor::new()).build_http();
        let stack = config.build(client).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closing = app::Closing::new();
        let router = app::router(stack, &options, app::prometheus(), &closing);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app::serve::serve(
            listener,
            router,
            &options,
            async move {
                let _ = stopped.await;
            },
            closing,
        ));
        Gateway {
            addr,
            base: format!("http://{addr}"),
            stop: Some(stop),
            server,
        }
    }

    async fn post(&self, body: &str) -> Response<Incoming> {
        let request = Request::post(format!("{}/v1/chat/completions", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        client().request(request).await.unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.await.unwrap().unwrap();
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
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
    let options = app::GatewayOptions {
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

    let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    settle().await;
    assert!(still_waiting(&tcp));
    // The head never ends: the gateway closes the connection.
    assert_eq!(read_all(&mut tcp).await, "");
    assert!(upstream.requests().is_empty());
}
