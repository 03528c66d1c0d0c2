//! Two gateway replicas configured with the same `[shared]` section and a
//! real `redis-server` (started on a free loopback port, killed at the
//! end): a 429 one replica meets keeps the other off that target, and
//! `/health` shows the shared state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_llm::redis::SharedStatus;
use tower_llm::stack::Stack;
use tower_llm_gateway::{Closing, config, router};
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

/// A `redis-server` on a free loopback port, without persistence, killed
/// on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (.ci/run installs it)");
        let mut server = RedisServer { port, child };
        // Its log says when it accepts connections: no polling.
        let log = server.child.stdout.take().expect("piped");
        let mut lines = BufReader::new(log).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to accept connections"));
        assert!(ready, "redis-server did not start");
        // The rest of its log, drained so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        assert!(server.answers());
        server
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One replica: the gateway file's `[shared]` section connected, the stack
/// built with it.
fn replica(file: &str, redis_url: &str) -> (Router, Stack) {
    let (section, stack_config) = config::parse_file(file).unwrap();
    let shared = section
        .shared
        .connect_with_env(|name| (name == "GATEWAY_REDIS_URL").then(|| redis_url.to_owned()))
        .unwrap()
        .expect("[shared] configured");
    let client = Client::builder(TokioExecutor::new()).build_http();
    let stack = stack_config
        .stack(client)
        .unwrap()
        .shared_state(shared)
        .build()
        .unwrap();
    let options = section.options().unwrap();
    let app = router(stack.clone(), &options, None, &Closing::new());
    (app, stack)
}

async fn chat(app: &Router) -> StatusCode {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

async fn health(app: &Router) -> serde_json::Value {
    let request = Request::get("/health")
        .body(axum::body::Body::empty())
        .unwrap();
    let body = app.clone().oneshot(request).await.unwrap().into_body();
    serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap()
}

async fn connected(stack: &Stack) {
    let shared = stack.shared_state().unwrap();
    tokio::time::timeout(Duration::from_secs(10), shared.connected())
        .await
        .expect("connected to redis");
}

/// A provider whose first answer is a 429 with `retry-after: 30`.
async fn limited_once() -> Simulator {
    Simulator::builder()
        .plan(FaultPlan::script([Fault::rate_limited(
            Duration::from_secs(30),
        )]))
        .start()
        .await
        .unwrap()
}

/// Two replicas of a gateway over `targets` (its `[[targets]]`), sharing
/// through `redis` under `prefix`, both connected.
async fn two_replicas(redis: &RedisServer, prefix: &str, targets: &str) -> [(Router, Stack); 2] {
    let file = format!(
        r#"
        preset = "development"

        [shared]
        redis_url_env = "GATEWAY_REDIS_URL"
        key_prefix = "{prefix}"
        {targets}
        "#
    );
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let replicas = [replica(&file, &url), replica(&file, &url)];
    for (_, stack) in &replicas {
        connected(stack).await;
    }
    replicas
}

/// Waits until `stack` has applied a decision another replica shared.
async fn heard(stack: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.shared_state().unwrap().stats().applied == 0 {
        assert!(
            Instant::now() < deadline,
            "never heard the other's decision"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_one_replica_meets_keeps_the_other_off_that_target_and_health_shows_sharing() {
    let redis = RedisServer::start();
    let primary = limited_once().await;
    let backup = Simulator::start().await.unwrap();
    let targets = format!(
        r#"
        [[targets]]
        name = "primary"
        base_url = "{}/v1"

        [[targets]]
        name = "backup"
        base_url = "{}/v1"
        "#,
        primary.base_url(),
        backup.base_url()
    );
    let [(a, _), (b, stack_b)] = two_replicas(&redis, "gateway-test", &targets).await;

    // A meets the 429 and falls back; its cooldown reaches B.
    assert_eq!(chat(&a).await, StatusCode::OK);
    assert_eq!(primary.requests().len(), 1);
    heard(&stack_b).await;
    // B goes straight to the backup: the primary (healthy again) hears
    // nothing more.
    assert_eq!(chat(&b).await, StatusCode::OK);
    assert_eq!(primary.requests().len(), 1);
    assert_eq!(backup.requests().len(), 2);

    let shared = &health(&b).await["shared"];
    assert_eq!(shared["status"], SharedStatus::Connected.as_str());
    // The cooldown, and the pacing view the 429's headers gave (none left)
    // when the pacing task has run.
    assert!(shared["applied"].as_u64().unwrap() >= 1, "{shared}");
    assert!(health(&a).await["shared"]["published"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn health_shows_no_sharing_without_a_shared_section() {
    let upstream = Simulator::start().await.unwrap();
    let file = format!(
        "[[targets]]\nname = \"primary\"\nbase_url = \"{}/v1\"\n",
        upstream.base_url()
    );
    let (section, stack_config) = config::parse_file(&file).unwrap();
    assert!(section.shared.connect().unwrap().is_none());
    let client = Client::builder(TokioExecutor::new()).build_http();
    let stack = stack_config.build(client).unwrap();
    let app = router(stack, &section.options().unwrap(), None, &Closing::new());
    assert!(health(&app).await["shared"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_single_target_share_its_429_and_neither_calls_it_during_the_hint() {
    let redis = RedisServer::start();
    let only = limited_once().await;
    let targets = format!(
        "[[targets]]\nname = \"only\"\nbase_url = \"{}/v1\"\n",
        only.base_url()
    );
    let [(a, stack_a), (b, stack_b)] = two_replicas(&redis, "gateway-test-alone", &targets).await;

    // A meets the 429 (its retry would wait the 30 s out: the call is
    // given up after it was answered).
    let _ = tokio::time::timeout(Duration::from_millis(300), chat(&a)).await;
    assert_eq!(only.requests().len(), 1);
    heard(&stack_b).await;
    for stack in [&stack_a, &stack_b] {
        let cooling =
            stack.circuits().snapshot().into_iter().any(|key| {
                key.key.to_string() == "only/gpt-4o" && key.cooldown_remaining.is_some()
            });
        assert!(cooling, "the key cools down on both replicas");
    }
    // Neither replica calls the provider while the hint runs.
    for app in [&a, &b] {
        let _ = tokio::time::timeout(Duration::from_millis(300), chat(app)).await;
    }
    assert_eq!(only.requests().len(), 1, "no call during the hint");
}
