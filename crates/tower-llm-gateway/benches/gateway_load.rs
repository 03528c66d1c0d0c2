//! The gateway under load on loopback, beside calling the upstream
//! directly and beside a bare axum reverse proxy with no resilience layers
//! (the floor for any gateway), in one run.
//!
//! ```text
//! cargo bench -p tower-llm-gateway --bench gateway_load                 # 5 s per cell
//! cargo bench -p tower-llm-gateway --bench gateway_load -- --secs 10
//! cargo bench -p tower-llm-gateway --bench gateway_load -- --only gateway --mode whole --conns 1   # one cell, for a profiler
//! cargo bench -p tower-llm-gateway --bench gateway_load -- --no-heartbeat   # without the timer heartbeat
//! cargo bench -p tower-llm-gateway --bench gateway_load -- --axum-serve     # the gateway's router under `axum::serve`
//! ```
//!
//! Each cell runs N keep-alive HTTP/1.1 connections (1 and 64), each
//! sending requests back to back for a fixed time, and measures every
//! request from send to the last byte of the body. The upstream is a
//! healthy simulator (no latency, no faults): what is measured is the cost
//! of the hop. Servers and load generator share this machine's cores, as
//! they would on a gateway host; the three paths are measured in turn under
//! the same conditions. No criterion: these are throughput and latency
//! percentiles of a closed loop, printed as a table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tower_llm::config::StackConfig;
use tower_llm::retry::ReplayBody;
use tower_llm_gateway::{Closing, GatewayOptions, prometheus, router};
use tower_llm_testkit::Simulator;

const STREAM_TOKENS: usize = 20;

/// Counts every allocation in the process (servers, upstream simulator and
/// load generator alike), so the table can show allocations per request;
/// the three paths share the simulator's and the load generator's share.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn allocations() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

fn body(stream: bool) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"Say hello in one word."}}]}}"#
    ))
}

/// A reverse proxy with no resilience: forward, stream the answer back.
async fn bare_proxy(upstream: String) -> String {
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(nodelay());
    let state = Arc::new((client, upstream));
    async fn forward(
        State(state): State<Arc<(Client<HttpConnector, Body>, String)>>,
        request: Request,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let mut upstream = http::Request::post(format!("{}/v1/chat/completions", state.1));
        if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
            upstream = upstream.header(http::header::CONTENT_TYPE, ct);
        }
        match state.0.request(upstream.body(body).unwrap()).await {
            Ok(response) => response.map(Body::new),
            Err(_) => Response::builder().status(502).body(Body::empty()).unwrap(),
        }
    }
    let router = Router::new()
        .route("/v1/chat/completions", axum::routing::post(forward))
        .with_state(state);
    serve(router).await
}

async fn gateway(upstream: String) -> String {
    let config = StackConfig::from_toml(&format!(
        r#"
        [[targets]]
        name = "primary"
        base_url = "{upstream}/v1"
        [[targets]]
        name = "backup"
        base_url = "{upstream}/v1"
        model = "llama3.2"
        "#
    ))
    .unwrap();
    let client: Client<HttpConnector, ReplayBody> =
        Client::builder(TokioExecutor::new()).build(nodelay());
    let stack = config.build(client).unwrap();
    // As the gateway runs: with its Prometheus recorder installed, served
    // by its own accept loop (`--axum-serve`: by `axum::serve`, as the bare
    // proxy is, to compare).
    let options = GatewayOptions::default();
    let closing = Closing::new();
    let router = router(stack, &options, prometheus(), &closing);
    if std::env::args().any(|a| a == "--axum-serve") {
        return serve(router).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving =
        tower_llm_gateway::serve(listener, router, &options, std::future::pending(), closing);
    tokio::spawn(serving);
    url
}

/// Both proxies connect upstream with TCP_NODELAY, as the gateway does.
fn nodelay() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

struct Cell {
    requests: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn connection(url: &str) -> SendRequest<Full<Bytes>> {
    let addr = url.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// `connections` closed loops against `url` for `secs`.
async fn load(url: &str, connections: usize, stream: bool, secs: u64) -> Cell {
    let payload = body(stream);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut sender = connection(url).await;
        let payload = payload.clone();
        let uri = format!("{url}/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            while Instant::now() < deadline {
                let request = http::Request::post(&uri)
                    .header("content-type", "application/json")
                    .body(Full::new(payload.clone()))
                    .unwrap();
                let sent = Instant::now();
                if sender.ready().await.is_err() {
                    failed += 1;
                    break;
                }
                match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status() == 200;
                        match response.into_body().collect().await {
                            Ok(_) if ok => latencies.push(sent.elapsed()),
                            _ => failed += 1,
                        }
                    }
                    Err(_) => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let mut cell = Cell {
        requests: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, failed) = task.await.unwrap();
        cell.requests += latencies.len();
        cell.failed += failed;
        cell.latencies.extend(latencies);
    }
    cell.elapsed = started.elapsed();
    cell.latencies.sort();
    cell
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let secs = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let only = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .unwrap_or_default();
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let conns: Vec<usize> = arg("--conns")
        .and_then(|n| n.parse().ok())
        .map_or(vec![1, 64], |n| vec![n]);
    let modes: Vec<bool> = match arg("--mode").as_deref() {
        Some("whole") => vec![false],
        Some("stream") => vec![true],
        _ => vec![false, true],
    };
    // Servers on their own runtime (2 workers); the load generator on
    // another (2 workers): they share the machine's cores.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // As `tower_llm_gateway::serve` does (the proxies here are served by
    // `axum::serve`): a timer always pending on the servers' runtime, so
    // that each request's timeouts do not wake the timer driver.
    // `--no-heartbeat` leaves it out, to compare.
    if !std::env::args().any(|a| a == "--no-heartbeat") {
        servers.spawn(tower_llm_gateway::timer_heartbeat());
    }
    let (direct, proxy, gw) = servers.block_on(async {
        let sim = Simulator::builder()
            .record(false)
            .reply_tokens(STREAM_TOKENS)
            .start()
            .await
            .unwrap();
        let direct = sim.base_url();
        let proxy = bare_proxy(direct.clone()).await;
        let gw = gateway(direct.clone()).await;
        std::mem::forget(sim);
        (direct, proxy, gw)
    });
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "gateway_load: {} s per cell, {} cores, stream = {STREAM_TOKENS} tokens",
        secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| mode | conns | path | req/s | p50 µs | p99 µs | p50 added vs direct µs | allocations/request | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &stream in &modes {
        for &connections in &conns {
            let mut direct_p50 = Duration::ZERO;
            let mut proxy_rate = 0.0;
            for (name, url) in [
                ("direct", &direct),
                ("bare axum proxy", &proxy),
                ("tower-llm gateway", &gw),
            ] {
                if !only.is_empty() && !name.contains(only.as_str()) {
                    continue;
                }
                // A short warm-up fills pools and caches.
                clients.block_on(load(url, connections, stream, 1));
                let before = allocations();
                let cell = clients.block_on(load(url, connections, stream, secs));
                let allocations = (allocations() - before) as f64 / cell.requests.max(1) as f64;
                let rate = cell.requests as f64 / cell.elapsed.as_secs_f64();
                let p50 = percentile(&cell.latencies, 0.5);
                let p99 = percentile(&cell.latencies, 0.99);
                if name == "direct" {
                    direct_p50 = p50;
                }
                if name == "bare axum proxy" {
                    proxy_rate = rate;
                }
                let added = p50.as_secs_f64() * 1e6 - direct_p50.as_secs_f64() * 1e6;
                let of_proxy = if name == "tower-llm gateway" && proxy_rate > 0.0 {
                    format!(" ({:.0} % of proxy)", 100.0 * rate / proxy_rate)
                } else {
                    String::new()
                };
                println!(
                    "| {} | {connections} | {name} | {rate:.0}{of_proxy} | {:.0} | {:.0} | {} | {allocations:.0} | {} |",
                    if stream { "stream" } else { "whole" },
                    p50.as_secs_f64() * 1e6,
                    p99.as_secs_f64() * 1e6,
                    if name == "direct" {
                        "-".to_owned()
                    } else {
                        format!("{added:.0}")
                    },
                    cell.failed,
                );
            }
        }
    }
    drop(clients);
    servers.shutdown_background();
}
