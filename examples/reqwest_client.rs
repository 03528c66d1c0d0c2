//! `LlmStack` over reqwest: the whole stack (Fallback over targets, each
//! Retry → Circuit → Classify) assembled by the facade over a
//! `reqwest::Client`, with no layer written by hand.
//!
//! Two simulated providers on 127.0.0.1, no network, no keys: a primary
//! and a healthy backup. Two chat completions go in:
//!
//! 1. the primary answers 429 with `retry-after: 1`, then succeeds: the
//!    retry layer waits as told and the primary serves (two attempts);
//! 2. the primary is then overloaded on every request: its retries run
//!    out and the fallback hands the conversation to the backup.
//!
//! For each call the example prints the status, the serving target, the
//! retry stats, the failures the fallback passed, and the reply.
//!
//! Run: `cargo run --example reqwest_client --features reqwest`

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_llm::fallback::FallbackReport;
use tower_llm::retry::RetryStats;
use tower_llm::stack::{LlmStack, ReqwestClient, Stack, served_by};
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

const CONVERSATION: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}]}"#;

/// Sends one chat completion through `stack` and prints what happened.
async fn call(stack: &Stack, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!("== {title}");
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(CONVERSATION.to_owned())?;
    let started = tokio::time::Instant::now();
    let response = match stack.clone().oneshot(request).await {
        Ok(response) => response,
        Err(error) => {
            println!("failed after {:.2?}: {error}", started.elapsed());
            return Ok(());
        }
    };
    let elapsed = started.elapsed();
    let stats = RetryStats::of(response.extensions());
    println!("status      {}", response.status());
    println!("served by   {}", served_by(&response).unwrap_or("?"));
    println!("elapsed     {elapsed:.2?}");
    println!(
        "retry stats {} attempt(s), {:.2?} slept",
        stats.attempts, stats.slept
    );
    if let Some(report) = response.extensions().get::<FallbackReport>() {
        for (name, failure) in &report.failures {
            println!("passed over {name}: {failure}");
        }
    }
    let body = response.into_body().collect().await?.to_bytes();
    let reply: serde_json::Value = serde_json::from_slice(&body)?;
    println!(
        "reply       {} (model {})\n",
        reply["choices"][0]["message"]["content"], reply["model"]
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = Simulator::builder()
        .plan(FaultPlan::script([Fault::rate_limited(
            Duration::from_secs(1),
        )]))
        .start()
        .await?;
    let backup = Simulator::start().await?;

    // Redirects off: reqwest would carry `api-key`/`x-api-key` to another host.
    let client = ReqwestClient::without_redirects()?;
    let primary_url = primary.base_url().parse()?;
    let backup_url = backup.base_url().parse()?;
    let stack = LlmStack::sdk_default()
        .target("primary", client.clone(), |t| t.base_url(primary_url))
        .target("backup", client, |t| {
            t.base_url(backup_url).model("llama3.2")
        })
        .build()?;
    println!(
        "targets for gpt-4o: {:?}\n",
        stack.targets_for(Some("gpt-4o")).unwrap_or_default()
    );

    call(
        &stack,
        "primary rate limited once (`script=rate_limited@1s`)",
    )
    .await?;

    primary.set_plan(FaultPlan::always(Fault::overloaded()));
    call(&stack, "primary overloaded (`overloaded`)").await?;

    println!(
        "the primary received {} request(s), the backup {}",
        primary.stats().requests,
        backup.stats().requests
    );
    for key in stack.circuits().snapshot() {
        println!(
            "breaker {:<18} {:?}, {} failure(s) in a row",
            key.key, key.state, key.consecutive_failures
        );
    }
    Ok(())
}
