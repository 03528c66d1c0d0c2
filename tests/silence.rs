//! Silent targets and stalled streams, out of the box: stacks built from a
//! configuration that names only targets and routes (no tuning), over real
//! HTTP to the testkit's simulators, on tokio's paused clock — 30 s or
//! 5 minutes of silence cost nothing, and the times read are the virtual
//! clock's, exact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error as _;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_llm::config::StackConfig;
use tower_llm::retry::{GiveUp, ReplayBody, RetryStats};
use tower_llm::stack::{Stack, served_by};
use tower_llm::{ErrorKind, LlmError};
use tower_llm_testkit::{Delay, Fault, Simulator};

fn client() -> Client<HttpConnector, ReplayBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn simulator(fault: Fault) -> Simulator {
    Simulator::builder().plan(fault).start().await.unwrap()
}

/// The configuration a gateway user writes: targets and a route, plus
/// `extra` (nothing, for out of the box).
fn config(targets: &[(&str, &Simulator)], extra: &str) -> StackConfig {
    let mut text = String::new();
    for (name, sim) in targets {
        text += &format!(
            "[[targets]]\nname = \"{name}\"\nbase_url = \"{}/v1\"\n\n",
            sim.base_url()
        );
    }
    let names: Vec<String> = targets.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    text += &format!(
        "[[routes]]\nmodel = \"gpt-4o\"\ntargets = [{}]\n\n{extra}",
        names.join(", ")
    );
    StackConfig::from_toml(&text).unwrap()
}

fn stack(targets: &[(&str, &Simulator)], extra: &str) -> Stack {
    config(targets, extra).build(client()).unwrap()
}

fn chat(stream: bool) -> Request<String> {
    Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_primary_that_never_sends_a_streamed_head_is_left_for_the_backup_after_one_attempt_of_30_s()
 {
    let primary = simulator(Fault::stall()).await;
    let backup = Simulator::start().await.unwrap();
    let stack = stack(&[("primary", &primary), ("backup", &backup)], "");

    let started = Instant::now();
    let response = stack.oneshot(chat(true)).await.unwrap();
    let waited = started.elapsed();

    assert_eq!(served_by(&response), Some("backup"));
    assert_eq!(
        primary.requests().len(),
        1,
        "one attempt on the silent route"
    );
    assert_eq!(backup.requests().len(), 1);
    // The stream head timeout of `sdk_default`, then the backup at once.
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(text.ends_with(b"data: [DONE]\n\n"), "a whole stream");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_whole_answer_whose_head_takes_minutes_is_waited_for_not_left() {
    // Without streaming the head comes when generation ends.
    let primary = simulator(Fault::latency(Delay::fixed(Duration::from_secs(200)))).await;
    let backup = Simulator::start().await.unwrap();
    let stack = stack(&[("primary", &primary), ("backup", &backup)], "");

    let response = stack.oneshot(chat(false)).await.unwrap();
    assert_eq!(served_by(&response), Some("primary"));
    assert_eq!(RetryStats::of(response.extensions()).attempts, 1);
    assert!(backup.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_last_target_of_a_route_retries_a_silent_head_having_nowhere_else_to_go() {
    let primary = simulator(Fault::stall()).await;
    let backup = simulator(Fault::stall()).await;
    let stack = stack(&[("primary", &primary), ("backup", &backup)], "");

    let error = stack.oneshot(chat(true)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(primary.requests().len(), 1, "left for the backup at once");
    assert_eq!(backup.requests().len(), 3, "sdk_default's three attempts");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lone_silent_target_is_retried_and_then_gives_up_with_a_timeout() {
    let only = simulator(Fault::stall()).await;
    let error = stack(&[("only", &only)], "")
        .oneshot(chat(true))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(only.requests().len(), 3);
    let stats = RetryStats::of(error.extensions());
    assert_eq!(stats.gave_up, Some(GiveUp::AttemptsExhausted));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_without_content_moves_to_the_backup_when_a_first_content_timeout_is_set() {
    // The head at once, then only keep-alives: no first token.
    let primary = simulator(Fault::stream_stall_after(0)).await;
    let backup = Simulator::start().await.unwrap();
    let stack = stack(
        &[("primary", &primary), ("backup", &backup)],
        "[retry]\nfirst_content_timeout_ms = 20000\n",
    );

    let started = Instant::now();
    let response = stack.oneshot(chat(true)).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(served_by(&response), Some("backup"));
    assert_eq!(primary.requests().len(), 1);
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_a_first_content_timeout_the_backup_answers_before_a_slow_first_token_would_come() {
    // A model that thinks 25 s before it writes; the limit is 20 s.
    let primary = simulator(Fault::slow_first_token(Duration::from_secs(25))).await;
    let backup = Simulator::start().await.unwrap();
    let stack = stack(
        &[("primary", &primary), ("backup", &backup)],
        "[retry]\nfirst_content_timeout_ms = 20000\n",
    );

    let started = Instant::now();
    let response = stack.oneshot(chat(true)).await.unwrap();
    assert_eq!(served_by(&response), Some("backup"));
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(text.ends_with(b"data: [DONE]\n\n"));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the whole answer before the primary's first token: {:?}",
        started.elapsed()
    );
    assert_eq!(primary.requests().len(), 1);
}

/// Reads `response`'s body to its end or its error: the error, how long
/// after the head it came, and how many keep-alives came before it.
async fn read_until_error(
    response: http::Response<tower_llm::stack::StackBody>,
) -> (LlmError, Duration, usize) {
    let started = Instant::now();
    let mut body = response.into_body();
    let mut keep_alives = 0;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if frame.data_ref().is_some_and(|d| d.starts_with(b":")) {
                    keep_alives += 1;
                }
            }
            Some(Err(error)) => return (error, started.elapsed(), keep_alives),
            None => panic!("the stalled stream ended cleanly"),
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_stalled_after_content_ends_with_a_typed_error_at_the_idle_timeout_despite_keep_alives()
 {
    // Three tokens, then only a keep-alive comment every 5 s.
    let only = simulator(Fault::stream_stall_after(3)).await;
    let response = stack(&[("only", &only)], "")
        .oneshot(chat(true))
        .await
        .unwrap();
    let (error, after, keep_alives) = read_until_error(response).await;

    // `sdk_default`'s stream idle timeout, from the last content:
    // keep-alives do not reset it.
    assert!(
        after >= Duration::from_secs(60) && after < Duration::from_secs(61),
        "{after:?}"
    );
    assert!(
        keep_alives >= 10,
        "{keep_alives} keep-alives came meanwhile"
    );
    assert_eq!(error.kind(), ErrorKind::StreamIncomplete);
    let cause = error
        .source()
        .and_then(|source| source.downcast_ref::<LlmError>())
        .expect("the stall is the cause");
    assert_eq!(cause.kind(), ErrorKind::Timeout);
    assert_eq!(
        only.requests().len(),
        1,
        "content reached the caller: no replay"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_stream_idle_timeout_is_set_in_the_file_and_from_the_environment() {
    let only = simulator(Fault::stream_stall_after(3)).await;
    let from_file = stack(
        &[("only", &only)],
        "[classify]\nstream_idle_timeout_ms = 45000\n",
    );
    let (_, after, _) = read_until_error(from_file.oneshot(chat(true)).await.unwrap()).await;
    assert!(
        after >= Duration::from_secs(45) && after < Duration::from_secs(46),
        "{after:?}"
    );

    let from_env = config(&[("only", &only)], "")
        .from_env_with(|name| {
            (name == "TOWER_LLM_STREAM_IDLE_TIMEOUT_MS").then(|| "20000".to_owned())
        })
        .unwrap();
    assert_eq!(from_env.stream_idle_timeout(), Ok(Duration::from_secs(20)));
    let stack = from_env.build(client()).unwrap();
    let (_, after, _) = read_until_error(stack.oneshot(chat(true)).await.unwrap()).await;
    assert!(
        after >= Duration::from_secs(20) && after < Duration::from_secs(21),
        "{after:?}"
    );
}

#[test]
fn stream_timeouts_of_zero_or_unknown_keys_are_refused_by_name() {
    let zero = StackConfig::from_toml("[classify]\nstream_idle_timeout_ms = 0\n")
        .unwrap()
        .stream_idle_timeout()
        .unwrap_err()
        .to_string();
    assert!(zero.contains("stream_idle_timeout_ms"), "{zero}");
    let typo = StackConfig::from_toml("[classify]\nstream_idle_timeout = 1000\n")
        .unwrap_err()
        .to_string();
    assert!(typo.contains("stream_idle_timeout"), "{typo}");
    let unguarded = StackConfig::from_toml(
        "[retry]\nfirst_content_guard = false\nfirst_content_timeout_ms = 20000\n\
         [[targets]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\n",
    )
    .unwrap()
    .build(client())
    .unwrap_err()
    .to_string();
    assert!(
        unguarded.contains("[retry]") && unguarded.contains("guard"),
        "{unguarded}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_preset_named_in_the_retry_section_brings_the_stack_preset_timeouts() {
    let primary = simulator(Fault::stall()).await;
    let backup = Simulator::start().await.unwrap();
    let stack = stack(
        &[("primary", &primary), ("backup", &backup)],
        "[retry]\npreset = \"high_availability\"\n",
    );
    let started = Instant::now();
    let response = stack.oneshot(chat(true)).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(served_by(&response), Some("backup"));
    // `high_availability`'s stream head timeout.
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(16),
        "{waited:?}"
    );
}
