//! The layers by hand, over a hyper client: each target is
//! Retry → Circuit → Classify → `hyper_util` client, composed with
//! `tower::ServiceBuilder`, and a `Fallback` sits over two such targets.
//!
//! The primary is a simulated provider that answers 429 with
//! `retry-after: 1`, then 503s; the backup is healthy. One chat completion
//! goes in: the primary's retry layer honours the hint, backs off after the
//! 503, gives up after three attempts, and the fallback hands the same
//! conversation (model rewritten) to the backup. The example prints what
//! each layer did: the status, the serving target, the retry stats, the
//! failures the fallback passed, what the primary received and when, each
//! target's breaker, and the body.
//!
//! No network and no keys: both providers are `tower_llm_testkit`
//! simulators on 127.0.0.1.
//!
//! Run: `cargo run --example hyper_client`

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm::ClassifyLayer;
use tower_llm::circuit::{Circuit, CircuitConfig, CircuitHandle, CircuitLayer};
use tower_llm::classify::Classify;
use tower_llm::fallback::{Fallback, FallbackReport, Target};
use tower_llm::retry::{Retry, RetryLayer, RetryPolicy, RetryStats};
use tower_llm_testkit::{FaultPlan, Simulator, gaps};

/// The request every target gets (the fallback rewrites `model` for the
/// backup and puts its base URL in front of the path).
const CONVERSATION: &str = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hello."}]}"#;

/// One target's stack, outermost first: Retry → Circuit → Classify → client
/// (what `ServiceBuilder` below produces).
type TargetStack = Retry<Circuit<Classify<Client<HttpConnector, Full<Bytes>>>>>;

/// A target named `name` sending to `simulator`, and its breaker's handle
/// (to print its state).
fn target(
    name: &str,
    simulator: &Simulator,
    client: Client<HttpConnector, Full<Bytes>>,
) -> Result<(Target<TargetStack>, CircuitHandle), Box<dyn std::error::Error>> {
    // Each target gets its own breaker registry and its own retry budget:
    // a dead primary must not spend the backup's retries.
    let circuit = CircuitLayer::new(CircuitConfig::standard());
    let handle = circuit.handle();
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::sdk_default()))
        .layer(circuit)
        .layer(ClassifyLayer::new())
        .service(client);
    let target = Target::new(name, service).base_url(simulator.base_url().parse()?);
    Ok((target, handle))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The fault plan in the testkit's text syntax: request 0 is rate
    // limited for 1 s, every later one is a 503.
    let plan: FaultPlan = "script=rate_limited@1s;then=503".parse()?;
    let primary = Simulator::builder().plan(plan.clone()).start().await?;
    let backup = Simulator::start().await?;
    println!("primary {} plan `{plan}`", primary.base_url());
    println!("backup  {} healthy\n", backup.base_url());

    let client = Client::builder(TokioExecutor::new()).build_http();
    let (primary_target, primary_circuit) = target("primary", &primary, client.clone())?;
    let (backup_target, backup_circuit) = target("backup", &backup, client)?;
    let fallback = Fallback::builder()
        .target(primary_target)
        .target(backup_target.model("llama3.2"))
        .build()?;

    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CONVERSATION.as_bytes())))?;
    let started = tokio::time::Instant::now();
    let response = fallback.oneshot(request).await?;
    let elapsed = started.elapsed();

    let stats = RetryStats::of(response.extensions());
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .cloned()
        .unwrap_or_default();
    println!("status      {}", response.status());
    println!(
        "served by   {}",
        tower_llm::stack::served_by(&response).unwrap_or("?")
    );
    println!("elapsed     {elapsed:.2?}");
    println!(
        "retry stats {} attempt(s), {:.2?} slept on the serving target",
        stats.attempts, stats.slept
    );
    for (name, failure) in &report.failures {
        println!("passed over {name}: {failure}");
    }

    let received = primary.requests();
    println!("\nthe primary received {} request(s):", received.len());
    let waits = std::iter::once(Duration::ZERO).chain(gaps(&received));
    for (request, wait) in received.iter().zip(waits) {
        let fault = request
            .fault
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        println!("  #{} after {wait:>9.2?}: {fault}", request.index);
    }
    let sent = backup.requests();
    if let Some(first) = sent.first() {
        println!(
            "the backup received model {:?}",
            first.model.as_deref().unwrap_or("-")
        );
    }

    println!("\nbreakers:");
    for (name, handle) in [("primary", &primary_circuit), ("backup", &backup_circuit)] {
        for key in handle.snapshot() {
            println!(
                "  {name:<8} {:<24} {:?}, {} failure(s) in a row",
                key.key, key.state, key.consecutive_failures
            );
        }
    }

    let body = response.into_body().collect().await?.to_bytes();
    println!("\nbody: {}", String::from_utf8_lossy(&body));
    Ok(())
}
