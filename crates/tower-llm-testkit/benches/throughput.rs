//! Healthy-path throughput of the simulator on loopback, beside a bare
//! hyper server answering a fixed body of the same size (the floor: what
//! HTTP/1.1 over loopback costs on this machine), in the same run.
//!
//! ```text
//! cargo bench -p tower-llm-testkit --bench throughput
//! ```
//!
//! The load generator is a set of keep-alive hyper connections, each
//! sending requests back to back; criterion reports requests/s for whole
//! answers and events/s for streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tower_llm_testkit::{Api, Simulator};

/// Keep-alive connections sending at once.
const CONNECTIONS: u64 = 8;
/// Content events per streamed answer.
const STREAM_TOKENS: usize = 100;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A hyper server that answers every request with `body`.
async fn bare_server(body: Bytes) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        let mut response = Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// Sends `total` requests over `CONNECTIONS` connections; returns the time taken.
async fn load(addr: SocketAddr, path: &'static str, body: &'static str, total: u64) -> Duration {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr).await);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut sender) in senders.into_iter().enumerate() {
        let share = total / CONNECTIONS + u64::from((i as u64) < total % CONNECTIONS);
        tasks.spawn(async move {
            for _ in 0..share {
                sender.ready().await.unwrap();
                let request = Request::post(path)
                    .header("host", "sim")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert!(response.status().is_success());
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                assert!(!bytes.is_empty());
            }
        });
    }
    tasks.join_all().await;
    started.elapsed()
}

const WHOLE: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;

fn whole(c: &mut Criterion) {
    let rt = runtime();
    let sim = rt
        .block_on(Simulator::builder().record(false).start())
        .unwrap();
    // The floor serves a body as long as the simulator's answer.
    let sample = rt.block_on(async {
        let mut sender = connect(sim.addr()).await;
        let request = Request::post(Api::OpenAiChat.path())
            .header("host", "sim")
            .body(Full::new(Bytes::from_static(WHOLE.as_bytes())))
            .unwrap();
        sender
            .send_request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
    });
    let bare = rt.block_on(bare_server(sample));

    let mut group = c.benchmark_group("whole_answer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_hyper", |b| {
        b.iter_custom(|iters| rt.block_on(load(bare, "/v1/chat/completions", WHOLE, iters)))
    });
    group.bench_function("simulator_openai", |b| {
        b.iter_custom(|iters| rt.block_on(load(sim.addr(), "/v1/chat/completions", WHOLE, iters)))
    });
    group.bench_function("simulator_anthropic", |b| {
        b.iter_custom(|iters| rt.block_on(load(sim.addr(), "/v1/messages", WHOLE, iters)))
    });
    group.finish();
}

fn streamed(c: &mut Criterion) {
    let rt = runtime();
    let sim = rt
        .block_on(
            Simulator::builder()
                .record(false)
                .reply_tokens(STREAM_TOKENS)
                .start(),
        )
        .unwrap();
    let mut group = c.benchmark_group("streamed_answer");
    // Events per answer: role chunk, content, finish chunk, [DONE].
    group.throughput(Throughput::Elements(STREAM_TOKENS as u64 + 3));
    group.bench_function("simulator_openai_100_events", |b| {
        b.iter_custom(|iters| rt.block_on(load(sim.addr(), "/v1/chat/completions", STREAM, iters)))
    });
    group.finish();
}

criterion_group!(benches, whole, streamed);
criterion_main!(benches);
