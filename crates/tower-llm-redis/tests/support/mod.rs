//! A real `redis-server` per test (a free loopback port, no persistence, a
//! temporary directory), killed when dropped; and replicas: a circuit
//! layer with its own shared-state connection each.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_circuit::{CircuitConfig, CircuitHandle, CircuitLayer};
use tower_llm_classify::{ClassifyLayer, LlmError};
use tower_llm_redis::{SharedState, SharedStatus};
use tower_llm_testkit::{Api, Simulator};

/// A `redis-server` on a free loopback port, killed (and its directory
/// removed) on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("tower-llm-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            // `DEBUG SLEEP` stalls it, as a slow Redis.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (.ci/run installs it)");
        let mut child = child;
        // Its log says when it accepts connections: no polling.
        let log = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(log).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to accept connections"));
        assert!(ready, "redis-server did not start");
        // The rest of its log, drained so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
        assert!(self.ping().is_some(), "redis-server does not answer");
    }

    /// Whether it answers a `PING` within 50 ms.
    pub fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn ping(&self) -> Option<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.write_all(b"PING\r\n").ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).ok()?;
        (&reply == b"+PONG\r\n").then_some(())
    }

    /// A plain connection, for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Calls of one command so far (`INFO commandstats`; 0 if never).
    pub async fn calls_of(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Calls per command (`INFO commandstats`), without the `INFO` and
    /// `PING` the test and the liveness checks send.
    pub async fn command_calls(&self) -> Vec<(String, u64)> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
        let mut calls: Vec<(String, u64)> = info
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .filter(|(name, _)| name != "info" && name != "ping")
            .collect();
        calls.sort();
        calls
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One gateway replica: its breakers and its own shared-state connection.
pub struct Replica {
    pub layer: CircuitLayer,
    pub handle: CircuitHandle,
    pub shared: SharedState,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Replica {
    pub fn new(url: &str, prefix: &str, config: CircuitConfig) -> Replica {
        let shared = SharedState::builder(url, prefix)
            .timeout(Duration::from_millis(200))
            .connect()
            .unwrap();
        Replica::with(config, shared)
    }

    /// A replica on shared state connected otherwise.
    pub fn with(config: CircuitConfig, shared: SharedState) -> Replica {
        let layer = CircuitLayer::new(config);
        shared.attach_layer(&layer).unwrap();
        Replica {
            handle: layer.handle(),
            layer,
            shared,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Waits until connected (subscribed, state loaded).
    pub async fn connected(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.shared.connected())
            .await
            .expect("connected to redis");
    }

    /// Waits until the status is `status`.
    pub async fn status_becomes(&self, status: SharedStatus) {
        let mut watch = self.shared.watch_status();
        tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|s| *s == status))
            .await
            .expect("status reached")
            .unwrap();
    }

    /// One chat call for `model` to `sim`, body read to its end.
    pub async fn call(&self, sim: &Simulator, model: &str) -> Result<(), LlmError> {
        let service = ServiceBuilder::new()
            .layer(self.layer.clone())
            .layer(ClassifyLayer::new())
            .service(self.client.clone());
        let request = http::Request::post(sim.url(Api::OpenAiChat))
            .body(Full::from(format!(
                r#"{{"model":"{model}","messages":[]}}"#
            )))
            .unwrap();
        let response = service.oneshot(request).await?;
        response.into_body().collect().await?;
        Ok(())
    }
}

/// Waits (yielding, bounded) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The key the circuit gives a chat call for `model` to the simulator.
pub fn key(model: &str) -> String {
    format!("openai_compatible/{model}")
}

/// Spins (yielding) until `check` holds; how long it took. Bounded.
pub async fn time_until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::task::yield_now().await;
    }
    start.elapsed()
}

/// p50, p99 and max of `samples`, as text (for the report).
pub fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        at(0.50),
        at(0.99),
        samples[samples.len() - 1]
    )
}
