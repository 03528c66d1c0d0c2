//! The gateway out of the box (a file with only targets and routes) facing
//! silent upstreams, started as `main` starts it, over real HTTP on tokio's
//! paused clock: a silent primary is left for the backup after one attempt
//! of 30 s, the stack's idle timer fires before the gateway's own, and a
//! gateway timer that would fire first is refused at start-up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower_llm_gateway::{GatewayOptions, config, prometheus};
use tower_llm_testkit::{Fault, Simulator};

/// A gateway file naming `primary` and `backup` (in that order) for
/// `gpt-4o`, and nothing else.
fn out_of_the_box(primary: &Simulator, backup: &Simulator) -> String {
    format!(
        r#"
        [[targets]]
        name = "primary"
        base_url = "{}/v1"

        [[targets]]
        name = "backup"
        base_url = "{}/v1"

        [[routes]]
        model = "gpt-4o"
        targets = ["primary", "backup"]
        "#,
        primary.base_url(),
        backup.base_url()
    )
}

/// The options and the stack of a gateway file, checked as `main` checks
/// them.
fn load(file: &str) -> Result<(GatewayOptions, tower_llm::stack::Stack), String> {
    let (section, config) = config::parse_file(file)?;
    let mut options = section.options_with_env(|_| None)?;
    let stack_idle = config.stream_idle_timeout().map_err(|e| e.to_string())?;
    section.fit_idle_timeout(&mut options, stack_idle)?;
    let stack = config
        .build(support::upstream_client())
        .map_err(|e| e.to_string())?;
    Ok((options, stack))
}

/// Serves `file` on an ephemeral port.
async fn start(file: &str) -> support::Running {
    let (options, stack) = load(file).unwrap();
    support::serve_stack(stack, &options).await
}

async fn post_stream(base: &str) -> Response<Incoming> {
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = Request::post(format!("{base}/v1/chat/completions"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    Client::builder(TokioExecutor::new())
        .build_http()
        .request(request)
        .await
        .unwrap()
}

fn header<'a>(response: &'a Response<Incoming>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

fn stream_idle_cuts() -> f64 {
    let line = r#"tower_llm_gateway_timeouts_total{stage="stream_idle"}"#;
    let handle = prometheus().unwrap();
    handle.run_upkeep();
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn out_of_the_box_a_primary_that_never_sends_a_streamed_head_is_left_for_the_backup_within_30_s()
 {
    let primary = Simulator::builder()
        .plan(Fault::stall())
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let gateway = start(&out_of_the_box(&primary, &backup)).await;
    let base = gateway.base.clone();

    let started = Instant::now();
    let response = post_stream(&base).await;
    let waited = started.elapsed();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-tower-llm-target"), "backup");
    assert!(
        header(&response, "x-tower-llm-fallbacks").contains("primary"),
        "{:?}",
        response.headers()
    );
    assert_eq!(
        primary.requests().len(),
        1,
        "one attempt on the silent route"
    );
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        text.ends_with(b"data: [DONE]\n\n"),
        "the backup's whole stream"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_gone_silent_after_content_is_ended_by_the_stacks_timer_before_the_gateways() {
    // Three tokens, then nothing at all (no keep-alives): both timers see
    // the same silence; out of the box the stack's is 60 s after content,
    // the gateway's 300 s.
    let primary = Simulator::builder()
        .plan(Fault::stream_stall_after(3))
        .keepalive_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let gateway = start(&out_of_the_box(&primary, &backup)).await;
    let base = gateway.base.clone();
    let cuts = stream_idle_cuts();

    let response = post_stream(&base).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-tower-llm-target"), "primary");
    let started = Instant::now();
    let read = response.into_body().collect().await.unwrap().to_bytes();
    let read = String::from_utf8(read.to_vec()).unwrap();
    // Ended with an error event the caller's SDK reads (no target here
    // continues an answer: loopback simulators name no such provider).
    assert!(
        read.contains("\"error\"") && !read.contains("[DONE]"),
        "the stalled stream was ended: {read}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(60) && started.elapsed() < Duration::from_secs(61),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        stream_idle_cuts(),
        cuts,
        "the stack's timer, not the gateway's"
    );
    assert!(
        backup.requests().is_empty(),
        "content had reached the caller"
    );
}

#[test]
fn a_gateway_idle_timer_shorter_than_the_stacks_is_refused_and_an_unset_one_follows_it() {
    let refused = load(
        "[gateway]\nstream_idle_timeout_ms = 30000\n\
         [[targets]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\n",
    )
    .err()
    .unwrap();
    assert!(
        refused.contains("[gateway] stream_idle_timeout_ms")
            && refused.contains("[classify] stream_idle_timeout_ms"),
        "{refused}"
    );

    let (section, _) = config::parse_file("[classify]\nstream_idle_timeout_ms = 900000\n").unwrap();
    let mut options = section.options_with_env(|_| None).unwrap();
    section
        .fit_idle_timeout(&mut options, Duration::from_secs(900))
        .unwrap();
    assert_eq!(options.stream_idle_timeout, Duration::from_secs(900));

    let (section, _) = config::parse_file("[gateway]\nstream_idle_timeout_ms = 900000\n").unwrap();
    let mut options = section.options_with_env(|_| None).unwrap();
    section
        .fit_idle_timeout(&mut options, Duration::from_secs(300))
        .unwrap();
    assert_eq!(
        options.stream_idle_timeout,
        Duration::from_secs(900),
        "longer is kept"
    );
}
