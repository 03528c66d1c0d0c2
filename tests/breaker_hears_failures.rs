//! A silent primary behind `LlmStack`: its attempts are ended by the retry
//! layer's attempt timeout (one per request: a silent target is left for
//! the next at once), its breaker hears them as timeouts and opens, and the
//! next request goes to the backup at once instead of waiting out the
//! primary again. Real HTTP against the testkit; paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_llm::circuit::{CircuitConfig, CircuitState, WindowKind};
use tower_llm::retry::{Backoff, ReplayBody, RetryPolicy};
use tower_llm::stack::{LlmStack, Stack, served_by};
use tower_llm_testkit::{Fault, Simulator};

fn client() -> Client<HttpConnector, ReplayBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn base(sim: &Simulator) -> Uri {
    sim.base_url().parse().unwrap()
}

fn chat() -> Request<String> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#.to_owned())
        .unwrap()
}

async fn served(stack: &Stack) -> String {
    let response = stack.clone().oneshot(chat()).await.unwrap();
    assert_eq!(response.status(), 200);
    served_by(&response).unwrap().to_owned()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_silent_primary_opens_its_breaker_and_the_next_request_goes_straight_to_the_backup() {
    let primary = Simulator::builder()
        .plan(Fault::stall())
        .start()
        .await
        .unwrap();
    let backup = Simulator::start().await.unwrap();
    let attempt_timeout = Duration::from_secs(5);
    let stack = LlmStack::high_availability()
        .retry(
            RetryPolicy::builder()
                .seed(1)
                .max_attempts(2)
                .backoff(Backoff::constant(Duration::from_millis(100)))
                .attempt_timeout(attempt_timeout)
                .deadline(Duration::from_secs(60))
                .no_budget()
                .build()
                .unwrap(),
        )
        .circuit(
            CircuitConfig::builder()
                .window(WindowKind::Count(20))
                .consecutive_failures(Some(2))
                .open_duration(Duration::from_secs(30), 2.0, Duration::from_secs(120))
                .open_jitter(0.0)
                .build()
                .unwrap(),
        )
        .target("primary", client(), |t| t.base_url(base(&primary)))
        .target("backup", client(), |t| t.base_url(base(&backup)))
        .build()
        .unwrap();

    // The first two requests each wait out one attempt on the primary,
    // then fall back.
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(served(&stack).await, "backup");
        assert!(started.elapsed() >= attempt_timeout);
    }
    assert_eq!(primary.requests().len(), 2, "one attempt per request");
    let open: Vec<_> = stack
        .circuits()
        .snapshot()
        .into_iter()
        .filter(|key| key.state == CircuitState::Open)
        .map(|key| key.key)
        .collect();
    assert_eq!(open.len(), 1, "the primary's breaker heard both timeouts");
    assert!(open[0].starts_with("primary/"), "{open:?}");

    // The next ones go to the backup without touching the primary.
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(served(&stack).await, "backup");
        assert!(
            started.elapsed() < attempt_timeout,
            "waited {:?} on the dead primary",
            started.elapsed()
        );
    }
    assert_eq!(primary.requests().len(), 2);
}
