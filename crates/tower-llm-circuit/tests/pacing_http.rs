//! Pacing over real HTTP against the testkit's rate-limited simulator: a
//! single key under a load above its limit gets no 429 once its headers
//! have been seen; the excess is answered at once with the wait, or, with
//! a retry layer and a deadline that fits, waits for the reset and is
//! served. Retry → Circuit → Classify → hyper; paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_llm_circuit::{Circuit, CircuitConfig, CircuitLayer, PaceLimits, PacingConfig};
use tower_llm_classify::{Classify, ClassifyLayer, ErrorKind, LlmError};
use tower_llm_retry::{Backoff, ReplayBody, RetryLayer, RetryPolicy};
use tower_llm_testkit::{Api, ProviderLimits, Simulator};

type Stack = Circuit<Classify<Client<HttpConnector, Full<Bytes>>>>;

fn stack(layer: &CircuitLayer) -> Stack {
    layer.layer(ClassifyLayer::new().layer(Client::builder(TokioExecutor::new()).build_http()))
}

/// A circuit paced by `pacing` over classify and a plain client.
fn paced(pacing: PacingConfig) -> Stack {
    stack(&CircuitLayer::new(
        CircuitConfig::builder().pacing(pacing).build().unwrap(),
    ))
}

/// A provider counting as `limits` say, answering after 2 s (so that
/// calls overlap).
async fn provider(limits: ProviderLimits) -> Simulator {
    Simulator::builder()
        .rate_limits(limits)
        .latency(Duration::from_secs(2))
        .start()
        .await
        .unwrap()
}

fn body(api: Api) -> String {
    match api {
        Api::AnthropicMessages => {
            r#"{"model":"m","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#.into()
        }
        _ => r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.into(),
    }
}

fn request<B: From<String>>(sim: &Simulator, api: Api) -> Request<B> {
    Request::post(sim.url(api))
        .header("content-type", "application/json")
        .body(B::from(body(api)))
        .unwrap()
}

/// How one call ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Served,
    /// Refused by the provider: a 429 that went upstream.
    Upstream429,
    /// Refused by pacing, without a call: the wait it carried.
    Paced(Duration),
    Other(ErrorKind),
}

fn end_of(result: Result<(), LlmError>) -> End {
    match result {
        Ok(()) => End::Served,
        Err(error) => match error.response_head().map(|h| h.status) {
            Some(StatusCode::TOO_MANY_REQUESTS) => End::Upstream429,
            None if error.kind() == ErrorKind::RateLimited => {
                End::Paced(error.classification().retry_after().unwrap())
            }
            _ => End::Other(error.kind()),
        },
    }
}

/// An open-loop load on one key: a call every `every` for `calls` calls,
/// each in its own task; the simulator answers each after `latency`, so
/// calls overlap. Returns how each ended.
async fn open_loop(
    service: &Stack,
    sim: &Simulator,
    api: Api,
    calls: usize,
    every: Duration,
) -> Vec<End> {
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let service = service.clone();
        let request = request(sim, api);
        tasks.push(tokio::spawn(async move {
            let result = match service.oneshot(request).await {
                Ok(response) => response.into_body().collect().await.map(|_| ()),
                Err(error) => Err(error),
            };
            end_of(result)
        }));
        tokio::time::sleep(every).await;
    }
    let mut ends = Vec::new();
    for task in tasks {
        ends.push(task.await.unwrap());
    }
    ends
}

/// A key loaded at twenty times its limit, its provider counting as
/// `limits` say, paced by `pacing`.
async fn single_key_over_its_limit(api: Api, limits: ProviderLimits, pacing: PacingConfig) {
    let sim = provider(limits).await;
    let service = paced(pacing);
    // The first answer's headers: the key's view starts.
    let first = open_loop(&service, &sim, api, 1, Duration::ZERO).await;
    assert_eq!(first, [End::Served]);

    // 150 s at 200 calls a minute, twenty times the limit, ten in flight.
    let ends = open_loop(&service, &sim, api, 500, Duration::from_millis(300)).await;
    let served = ends.iter().filter(|e| **e == End::Served).count();
    let paced: Vec<Duration> = ends
        .iter()
        .filter_map(|e| match e {
            End::Paced(wait) => Some(*wait),
            _ => None,
        })
        .collect();
    let refused = ends.iter().filter(|e| **e == End::Upstream429).count();
    println!(
        "{api:?}, {limits:?}: {} calls at 200/min once the headers were seen: {served} served, \
         {} answered at once with the wait (longest {:?}), {refused} upstream 429s",
        ends.len(),
        paced.len(),
        paced.iter().max().copied().unwrap_or_default(),
    );
    assert!(refused == 0, "{refused} upstream 429s");
    assert_eq!(served + paced.len(), ends.len(), "{ends:?}");
    // Every call that reached the provider was served.
    assert_eq!(sim.requests().len(), served + 1);
    // The excess carried the wait until the window empties again.
    assert!(
        paced
            .iter()
            .all(|w| !w.is_zero() && *w <= Duration::from_secs(61))
    );
    // More than one window's worth got through: pacing let the key refill.
    assert!(served > 10, "{served} served");
}

// OpenAI and Anthropic count in token buckets (Anthropic: "continuously
// replenished"; OpenAI's reset is the time until the bucket is full): the
// default pacing refills evenly until the reset.
#[tokio::test(start_paused = true)]
async fn a_single_key_above_its_openai_limit_gets_no_429_once_its_headers_are_seen() {
    let bucket = ProviderLimits::rpm(10).token_bucket();
    single_key_over_its_limit(Api::OpenAiChat, bucket, PacingConfig::default()).await;
}

#[tokio::test(start_paused = true)]
async fn a_single_key_above_its_anthropic_limit_gets_no_429_once_its_headers_are_seen() {
    let bucket = ProviderLimits::rpm(10).token_bucket();
    single_key_over_its_limit(Api::AnthropicMessages, bucket, PacingConfig::default()).await;
}

// A provider counting a sliding window frees a slot only as an old call
// leaves: held until the reset, the key meets no 429 there either.
#[tokio::test(start_paused = true)]
async fn held_until_the_reset_a_key_over_a_sliding_window_limit_gets_no_429() {
    let window = ProviderLimits::rpm(10);
    let hold = PacingConfig::default().continuous_refill(false);
    single_key_over_its_limit(Api::OpenAiChat, window, hold).await;
}

#[tokio::test(start_paused = true)]
async fn without_pacing_the_same_load_meets_the_providers_429s() {
    let sim = provider(ProviderLimits::rpm(10)).await;
    let layer = CircuitLayer::new(
        CircuitConfig::builder()
            .pacing(PacingConfig::off())
            .rate_limit_cooldown(false)
            .build()
            .unwrap(),
    );
    let service = stack(&layer);
    let ends = open_loop(
        &service,
        &sim,
        Api::OpenAiChat,
        100,
        Duration::from_millis(300),
    )
    .await;
    assert!(ends.contains(&End::Upstream429));
}

#[tokio::test(start_paused = true)]
async fn configured_rpm_keeps_a_target_without_headers_under_its_limit() {
    // Ollama sends no rate-limit headers; the simulator still enforces.
    let sim = provider(ProviderLimits::rpm(5)).await;
    let service = paced(PacingConfig::default().default_limit(PaceLimits::rpm(5)));
    let ends = open_loop(
        &service,
        &sim,
        Api::OllamaChat,
        300,
        Duration::from_millis(500),
    )
    .await;
    assert!(!ends.contains(&End::Upstream429));
    let served = ends.iter().filter(|e| **e == End::Served).count();
    assert_eq!(sim.requests().len(), served);
    assert!(served > 5, "{served} served");
}

#[tokio::test(start_paused = true)]
async fn with_a_deadline_that_fits_the_excess_waits_for_the_reset_and_is_served() {
    let sim = Simulator::builder()
        .rate_limits(ProviderLimits::rpm(5))
        .start()
        .await
        .unwrap();
    let circuit = CircuitLayer::default();
    let retry = |deadline| {
        RetryPolicy::builder()
            .max_attempts(5)
            .backoff(Backoff::constant(Duration::from_millis(100)))
            .deadline(deadline)
            .no_budget()
            .seed(1)
            .build()
            .unwrap()
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let patient = RetryLayer::new(retry(Duration::from_secs(300)))
        .layer(circuit.layer(ClassifyLayer::new().layer(client.clone())));
    let hurried = RetryLayer::new(retry(Duration::from_secs(10)))
        .layer(circuit.layer(ClassifyLayer::new().layer(client)));
    let run = |service: tower_llm_retry::Retry<_>| {
        let request = request::<Full<Bytes>>(&sim, Api::OpenAiChat);
        async move {
            let result = match service.oneshot(request).await {
                Ok(response) => response.into_body().collect().await.map(|_| ()),
                Err(error) => Err(error),
            };
            end_of(result)
        }
    };
    assert_eq!(run(patient.clone()).await, End::Served);
    // Twelve more at once: four fit, the rest wait for the window.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        tasks.push(tokio::spawn(run(patient.clone())));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), End::Served);
    }
    // A deadline shorter than the wait: answered at once, rate limited.
    let window_full = sim.requests().len();
    let mut hurried_ends = Vec::new();
    for _ in 0..20 {
        hurried_ends.push(run(hurried.clone()).await);
    }
    assert!(hurried_ends.iter().any(|e| matches!(e, End::Paced(_))));
    assert!(!hurried_ends.contains(&End::Upstream429));
    assert_eq!(
        sim.requests().len() - window_full,
        hurried_ends.iter().filter(|e| **e == End::Served).count()
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_loaded_below_its_limit_is_never_paced() {
    let sim = provider(ProviderLimits::rpm(60)).await;
    let service = paced(PacingConfig::default());
    // 54 calls a minute for five minutes: 90 % of the limit.
    let ends = open_loop(
        &service,
        &sim,
        Api::OpenAiChat,
        300,
        Duration::from_millis(1111),
    )
    .await;
    assert!(ends.iter().all(|e| *e == End::Served), "{ends:?}");
    assert_eq!(sim.requests().len(), 300);
}

#[tokio::test(start_paused = true)]
async fn with_continuous_refill_a_token_bucket_key_at_its_limit_serves_nearly_all_and_no_429() {
    let mut served = Vec::new();
    for continuous in [false, true] {
        let sim = provider(ProviderLimits::rpm(60).token_bucket()).await;
        let service = paced(PacingConfig::default().continuous_refill(continuous));
        // 60 calls a minute for five minutes, after a burst that empties
        // the bucket: the limit exactly.
        let burst = open_loop(&service, &sim, Api::OpenAiChat, 60, Duration::ZERO).await;
        assert!(!burst.contains(&End::Upstream429));
        let ends = open_loop(&service, &sim, Api::OpenAiChat, 300, Duration::from_secs(1)).await;
        assert!(!ends.contains(&End::Upstream429), "{ends:?}");
        let count = ends.iter().filter(|e| **e == End::Served).count();
        served.push(count);
    }
    // Held until the full reset, a key that ran out waits for a full
    // bucket; refilled evenly, it is called as soon as there is room.
    assert!(served[1] > served[0], "{served:?}");
}
