//! A stack's groups skip a deployment its rate-limit headers say has
//! nothing left, and spread deployments in proportion to their limits,
//! over real HTTP against simulators with provider limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_llm::circuit::PacingConfig;
use tower_llm::fallback::Strategy;
use tower_llm::retry::ReplayBody;
use tower_llm::stack::{LlmStack, ModelRoute, Preset, Stack, served_by};
use tower_llm_testkit::{ProviderLimits, Simulator};

fn client() -> Client<HttpConnector, ReplayBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn base(sim: &Simulator) -> Uri {
    sim.base_url().parse().unwrap()
}

async fn call(stack: &Stack) -> String {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#.to_owned())
        .unwrap();
    let response = stack.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    served_by(&response).unwrap().to_owned()
}

/// `small` allows 3 requests a minute and says so in its headers; `large`
/// has no limit. Both in one least-busy group.
async fn small_and_large(pacing: PacingConfig) -> (Stack, Simulator, Simulator) {
    let small = Simulator::builder()
        .rate_limits(ProviderLimits::rpm(3))
        .start()
        .await
        .unwrap();
    let large = Simulator::start().await.unwrap();
    let circuit = Preset::Development
        .circuit()
        .to_builder()
        .pacing(pacing)
        .build()
        .unwrap();
    let stack = LlmStack::development()
        .circuit(circuit)
        .seed(3)
        .target("small", client(), |t| t.base_url(base(&small)))
        .target("large", client(), |t| t.base_url(base(&large)))
        .route(
            ModelRoute::new("gpt-4o", Vec::<String>::new())
                .group(Strategy::LeastBusy, ["small", "large"]),
        )
        .build()
        .unwrap();
    (stack, small, large)
}

#[tokio::test]
async fn a_deployment_its_headers_say_is_spent_is_left_to_its_sibling_without_a_429() {
    let (stack, small, large) = small_and_large(PacingConfig::default()).await;
    for _ in 0..30 {
        call(&stack).await;
    }
    let small = small.stats();
    assert_eq!(small.requests, 3, "its three, then nothing: {small:?}");
    assert_eq!(small.errors, 0, "no 429: {small:?}");
    assert_eq!(large.stats().requests, 27);
    let groups = stack.groups();
    let picks: Vec<u64> = groups[0].1[0].deployments.iter().map(|d| d.picks).collect();
    assert_eq!(picks, [3, 27]);
}

#[tokio::test]
async fn without_pacing_the_same_group_meets_the_429_first() {
    let (stack, small, _large) = small_and_large(PacingConfig::off()).await;
    for _ in 0..30 {
        call(&stack).await;
    }
    assert!(small.stats().errors > 0, "{:?}", small.stats());
}

// The paused clock makes every answer take exactly its 10 ms: latency
// estimates are equal, and only the headroom tells the deployments apart
// (on a busy machine, a real clock's scheduling noise moves peak-EWMA
// estimates more than one call moves a share).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_latency_group_spreads_deployments_in_proportion_to_their_limits() {
    const LIMITS: [u64; 3] = [60, 30, 10];
    let mut sims = Vec::new();
    for rpm in LIMITS {
        let sim = Simulator::builder()
            .rate_limits(ProviderLimits::rpm(rpm))
            .latency(std::time::Duration::from_millis(10))
            .start()
            .await
            .unwrap();
        sims.push(sim);
    }
    let mut builder = LlmStack::development().seed(11);
    for (i, sim) in sims.iter().enumerate() {
        builder = builder.target(["d0", "d1", "d2"][i], client(), |t| t.base_url(base(sim)));
    }
    let stack = builder
        .route(
            ModelRoute::new("gpt-4o", Vec::<String>::new())
                .group(Strategy::Latency, ["d0", "d1", "d2"]),
        )
        .build()
        .unwrap();
    // 60 % of their limits together, within the minute. (Near 100 % the
    // power of two choices cannot keep the shares equal: a third of the
    // draws pair the two small deployments, and one of them takes the
    // request, however little it has left. Over minutes, as the chaos
    // suite's `deployments` scenario runs, refills keep them level.)
    for _ in 0..60 {
        call(&stack).await;
    }
    let served: Vec<u64> = sims.iter().map(|s| s.stats().requests).collect();
    assert!(sims.iter().all(|s| s.stats().errors == 0), "no 429");
    // Each used in proportion to its limit (36 / 18 / 6), give or take
    // the calls that first read each one's headers. Drawn without the
    // weighing, each would take a third until the smallest ran out.
    for (count, limit) in served.iter().zip(LIMITS) {
        let share = limit * 6 / 10;
        assert!(count.abs_diff(share) <= 3, "{served:?} for {LIMITS:?}");
    }
}
