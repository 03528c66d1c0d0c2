//! Deployment groups through `LlmStack` and `StackConfig`, over real HTTP
//! against the testkit's simulated providers: a route's group spreads its
//! requests, skips a deployment whose breaker is open, and the groups a
//! file describes are the ones built; and, over in-process deployments on
//! the paused clock, a member told to wait leaves the request to its
//! siblings, while the last one left waits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_llm::circuit::{PaceBucket, SharedPacing};
use tower_llm::config::StackConfig;
use tower_llm::fallback::Strategy;
use tower_llm::retry::ReplayBody;
use tower_llm::stack::{LlmStack, ModelRoute, Stack, served_by};
use tower_llm_testkit::Simulator;

type HttpClient = Client<HttpConnector, ReplayBody>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn base(sim: &Simulator) -> Uri {
    sim.base_url().parse().unwrap()
}

fn chat(model: &str) -> Request<String> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .unwrap()
}

async fn call(stack: &Stack) -> String {
    let response = stack.clone().oneshot(chat("gpt-4o")).await.unwrap();
    assert_eq!(response.status(), 200);
    served_by(&response).unwrap().to_owned()
}

/// Three healthy deployments `a`, `b`, `c` and a backup `local`, the first
/// three in one group picked by `strategy`.
async fn grouped(strategy: Strategy, weights: [u32; 3]) -> (Stack, Vec<Simulator>) {
    let mut sims = Vec::new();
    for _ in 0..4 {
        sims.push(Simulator::start().await.unwrap());
    }
    let mut stack = LlmStack::development().seed(5);
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let weight = weights[i];
        stack = stack.target(name, client(), |t| {
            t.base_url(base(&sims[i])).weight(weight)
        });
    }
    let stack = stack
        .target("local", client(), |t| t.base_url(base(&sims[3])))
        .route(
            ModelRoute::new("gpt-4o", Vec::<String>::new())
                .group(strategy, ["a", "b", "c"])
                .then("local"),
        )
        .build()
        .unwrap();
    (stack, sims)
}

#[tokio::test]
async fn a_weighted_group_sends_every_deployment_its_share_and_counts_the_picks() {
    let (stack, sims) = grouped(Strategy::Weighted, [2, 1, 1]).await;
    let mut served = std::collections::HashMap::<String, usize>::new();
    for _ in 0..200 {
        *served.entry(call(&stack).await).or_default() += 1;
    }
    assert_eq!(served.get("local"), None, "the group served everything");
    for name in ["a", "b", "c"] {
        assert!(served.get(name).copied().unwrap_or(0) > 0, "{served:?}");
    }
    assert!(
        served["a"] > served["b"] && served["a"] > served["c"],
        "{served:?}"
    );
    assert_eq!(sims[3].stats().requests, 0);

    let groups = stack.groups();
    assert_eq!(groups.len(), 1);
    let (model, route) = &groups[0];
    assert_eq!(model, "gpt-4o");
    assert_eq!(route.len(), 2, "the group, then local alone");
    assert_eq!(route[0].strategy, Strategy::Weighted);
    let picks: Vec<(&str, u64)> = route[0]
        .deployments
        .iter()
        .map(|d| (&*d.target, d.picks))
        .collect();
    for (name, picks) in picks {
        assert_eq!(picks as usize, served[name], "{name}");
    }
    assert!(route[0].deployments.iter().all(|d| d.in_flight == 0));
}

#[tokio::test]
async fn a_deployment_whose_breaker_is_forced_open_is_left_to_its_siblings() {
    let (stack, sims) = grouped(Strategy::LeastBusy, [1, 1, 1]).await;
    stack.circuits().force_open("b/gpt-4o");
    for _ in 0..20 {
        let served = call(&stack).await;
        assert!(served == "a" || served == "c", "{served}");
    }
    assert_eq!(sims[1].stats().requests, 0, "nothing reached b");
    assert_eq!(sims[3].stats().requests, 0, "nor the backup");
}

#[tokio::test]
async fn a_whole_group_forced_open_falls_back_to_the_next_group() {
    let (stack, _sims) = grouped(Strategy::Latency, [1, 1, 1]).await;
    for name in ["a", "b", "c"] {
        stack.circuits().force_open(&format!("{name}/gpt-4o"));
    }
    assert_eq!(call(&stack).await, "local");
}

#[tokio::test]
async fn routes_with_groups_from_toml_build_their_strategies_weights_and_order() {
    let sims = [
        Simulator::start().await.unwrap(),
        Simulator::start().await.unwrap(),
        Simulator::start().await.unwrap(),
    ];
    let file = format!(
        r#"
        preset = "development"

        [[targets]]
        name = "east"
        base_url = "{}"
        weight = 3

        [[targets]]
        name = "west"
        base_url = "{}"

        [[targets]]
        name = "local"
        base_url = "{}"

        [[routes]]
        model = "gpt-4o"
        groups = [
            {{ strategy = "weighted", targets = ["east", "west"] }},
            {{ targets = ["local"] }},
        ]
        "#,
        sims[0].base_url(),
        sims[1].base_url(),
        sims[2].base_url()
    );
    let stack = StackConfig::from_toml(&file)
        .unwrap()
        .build(client())
        .unwrap();
    let groups = stack.groups();
    let route = &groups[0].1;
    assert_eq!(route[0].strategy, Strategy::Weighted);
    let members: Vec<(&str, u32)> = route[0]
        .deployments
        .iter()
        .map(|d| (&*d.target, d.weight))
        .collect();
    assert_eq!(members, [("east", 3), ("west", 1)]);
    assert_eq!(route[1].strategy, Strategy::Latency, "the default");
    assert_eq!(&*route[1].deployments[0].target, "local");
    assert_eq!(
        stack.targets_for(Some("gpt-4o")).unwrap(),
        ["east", "west", "local"]
    );
    let served = call(&stack).await;
    assert!(served == "east" || served == "west", "{served}");
}

fn config_error(file: &str) -> String {
    StackConfig::from_toml(file)
        .unwrap()
        .build(client())
        .unwrap_err()
        .to_string()
}

const TWO_TARGETS: &str = r#"
    [[targets]]
    name = "a"
    base_url = "http://127.0.0.1:1/v1"
    [[targets]]
    name = "b"
    base_url = "http://127.0.0.1:2/v1"
"#;

#[test]
fn an_unknown_strategy_is_refused_by_name_and_place() {
    let error = config_error(&format!(
        "{TWO_TARGETS}\n[[routes]]\nmodel = \"m\"\ngroups = [{{ strategy = \"fastest\", targets = [\"a\", \"b\"] }}]"
    ));
    assert!(
        error.contains("routes[0].groups[0]") && error.contains("`fastest`"),
        "{error}"
    );
}

#[test]
fn a_route_with_both_targets_and_groups_or_an_empty_group_is_refused() {
    let error = config_error(&format!(
        "{TWO_TARGETS}\n[[routes]]\nmodel = \"m\"\ntargets = [\"a\"]\ngroups = [{{ targets = [\"b\"] }}]"
    ));
    assert!(error.contains("not both"), "{error}");
    let error = config_error(&format!(
        "{TWO_TARGETS}\n[[routes]]\nmodel = \"m\"\ngroups = [{{ strategy = \"latency\" }}]"
    ));
    assert!(error.contains("at least one target"), "{error}");
}

#[test]
fn a_weight_of_zero_is_refused_naming_the_target() {
    let error = config_error(
        r#"
        [[targets]]
        name = "a"
        base_url = "http://127.0.0.1:1/v1"
        weight = 0
        "#,
    );
    assert!(
        error.contains("`a`") && error.contains("weight 0"),
        "{error}"
    );
}

/// One scripted answer: after a delay, a 429 with its `retry-after` in
/// seconds, or (`None`) a completion.
type Scripted = (Duration, Option<u64>);

/// An in-process deployment: answers `script` in turn, each after its
/// delay (a `retry-after` in seconds: a 429 saying so; `None`: a
/// completion), then completions at once, counting its calls.
#[derive(Clone)]
struct Deployment {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    calls: Arc<AtomicUsize>,
}

impl Deployment {
    /// Answers at once.
    fn new(script: impl IntoIterator<Item = Option<u64>>) -> Self {
        Self::after(script.into_iter().map(|answer| (Duration::ZERO, answer)))
    }

    /// Answers each after its delay.
    fn after(script: impl IntoIterator<Item = Scripted>) -> Self {
        Deployment {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    fn service(
        &self,
    ) -> BoxCloneSyncService<Request<ReplayBody>, http::Response<Full<Bytes>>, Infallible> {
        let this = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |_: Request<ReplayBody>| {
            this.calls.fetch_add(1, Ordering::Relaxed);
            let (delay, wait) = this
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((Duration::ZERO, None));
            let answer = match wait {
                Some(wait) => http::Response::builder()
                    .status(429)
                    .header("content-type", "application/json")
                    .header("retry-after", wait.to_string())
                    .body(Full::new(Bytes::from_static(
                        br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
                    ))),
                None => http::Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#,
                    ))),
            };
            async move {
                tokio::time::sleep(delay).await;
                Ok(answer.unwrap())
            }
        }))
    }
}

/// A route over `deployments` (name, deployment, weight), one weighted
/// group or in order, with the SDKs' retry settings.
fn route_of(deployments: &[(&str, &Deployment, u32)], grouped: bool, hedge: bool) -> Stack {
    let mut stack = LlmStack::sdk_default().seed(7);
    for (name, deployment, weight) in deployments {
        stack = stack.target(name, deployment.service(), |t| t.weight(*weight));
    }
    if hedge {
        stack = stack.hedge(Duration::from_millis(50), 1.0);
    }
    let names: Vec<&str> = deployments.iter().map(|(name, _, _)| *name).collect();
    let route = if grouped {
        ModelRoute::new("gpt-4o", Vec::<String>::new()).group(Strategy::Weighted, names)
    } else {
        ModelRoute::new("gpt-4o", names)
    };
    stack.route(route).build().unwrap()
}

/// `a`, `b`, `c` as one weighted group, the whole route, `c` added last
/// and picked first (its weight), with the SDKs' retry settings.
fn group_of(deployments: &[Deployment; 3]) -> Stack {
    route_of(
        &[
            ("a", &deployments[0], 1),
            ("b", &deployments[1], 1),
            ("c", &deployments[2], 10_000),
        ],
        true,
        false,
    )
}

/// Paces `key` out until `secs` from now, as another replica's view of
/// it would.
fn pace_out(stack: &Stack, key: &str, secs: u64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    let spent = PaceBucket::new(0, until);
    assert!(
        stack
            .circuits()
            .apply_pacing(&SharedPacing::new(key, Some(spent), None))
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deployment_told_to_come_back_later_leaves_the_request_to_a_sibling_wherever_it_was_added()
 {
    let deployments = [
        Deployment::new([]),
        Deployment::new([]),
        Deployment::new([Some(3)]),
    ];
    let stack = group_of(&deployments);
    let started = tokio::time::Instant::now();
    let served = call(&stack).await;
    assert!(served == "a" || served == "b", "{served}");
    assert_eq!(deployments[2].calls(), 1, "c was not called again");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "c's hint was waited out: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_last_deployment_a_request_has_left_waits_out_its_hint() {
    // Every deployment says "in 3 s" once: the first two picked leave the
    // request to their siblings; the third, with none left, waits and
    // serves it.
    let deployments = [
        Deployment::new([Some(3)]),
        Deployment::new([Some(3)]),
        Deployment::new([Some(3)]),
    ];
    let stack = group_of(&deployments);
    let started = tokio::time::Instant::now();
    let served = call(&stack).await;
    let mut calls: Vec<usize> = deployments.iter().map(Deployment::calls).collect();
    let waited = ["a", "b", "c"].iter().position(|n| *n == served).unwrap();
    assert_eq!(
        calls[waited], 2,
        "{served} served after its wait: {calls:?}"
    );
    calls.sort_unstable();
    assert_eq!(calls, [1, 1, 2], "each sibling was tried first");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deployment_cooling_down_on_another_replicas_word_is_left_to_its_siblings() {
    let deployments = [
        Deployment::new([]),
        Deployment::new([]),
        Deployment::new([]),
    ];
    let stack = group_of(&deployments);
    // What a replica sharing decisions applies when another one met a 429.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    assert!(stack.circuits().apply_cooldown_until("c/gpt-4o", until));
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        let served = call(&stack).await;
        assert!(served == "a" || served == "b", "{served}");
    }
    assert_eq!(deployments[2].calls(), 0, "nothing reached c");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hedge_to_the_last_member_left_waits_out_its_hint_as_on_an_ordered_route() {
    for grouped in [false, true] {
        // `a` is slow and then says "in 3 s"; the hedge goes to `b`, which
        // says so at once: with nothing left, `b` waits and serves.
        let a = Deployment::after([(Duration::from_millis(200), Some(3))]);
        let b = Deployment::new([Some(3)]);
        let stack = route_of(&[("a", &a, 10_000), ("b", &b, 1)], grouped, true);
        assert_eq!(call(&stack).await, "b", "grouped: {grouped}");
        assert_eq!(b.calls(), 2, "grouped: {grouped}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_member_beside_a_paced_out_sibling_waits_out_its_own_short_hint_whichever_is_picked_first()
 {
    for weights in [(10_000, 1), (1, 10_000)] {
        let a = Deployment::new([Some(3)]);
        let b = Deployment::new([]);
        let stack = route_of(&[("a", &a, weights.0), ("b", &b, weights.1)], true, false);
        pace_out(&stack, "b/gpt-4o", 20);
        let started = tokio::time::Instant::now();
        assert_eq!(call(&stack).await, "a", "weights {weights:?}");
        assert_eq!((a.calls(), b.calls()), (2, 0), "weights {weights:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "{weights:?}: {took:?}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_every_member_paced_out_the_first_picked_moves_on_and_the_last_left_waits() {
    let a = Deployment::new([]);
    let b = Deployment::new([]);
    let stack = route_of(&[("a", &a, 10_000), ("b", &b, 1)], true, false);
    pace_out(&stack, "a/gpt-4o", 25);
    pace_out(&stack, "b/gpt-4o", 2);
    let started = tokio::time::Instant::now();
    assert_eq!(call(&stack).await, "b");
    assert_eq!((a.calls(), b.calls()), (0, 1));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(25),
        "{took:?}"
    );
}

/// Each member's requests in flight, in the group's order.
fn in_flight(stack: &Stack) -> Vec<u32> {
    stack.groups()[0].1[0]
        .deployments
        .iter()
        .map(|d| d.in_flight)
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hedge_that_wins_counts_in_flight_on_its_own_member_until_its_body_ends() {
    // `a` is picked first and slow; the hedge to `b` answers first.
    let a = Deployment::after([(Duration::from_millis(200), None)]);
    let b = Deployment::new([]);
    let stack = route_of(&[("a", &a, 10_000), ("b", &b, 1)], true, true);
    let response = stack.clone().oneshot(chat("gpt-4o")).await.unwrap();
    assert_eq!(served_by(&response), Some("b"));
    assert_eq!(in_flight(&stack), [0, 1], "the loser's call ended with it");
    drop(response);
    assert_eq!(in_flight(&stack), [0, 0]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_continued_by_a_sibling_counts_in_flight_on_the_sibling_until_its_rest_ends() {
    use http_body_util::BodyExt;
    use tower_llm::fallback::continuation::Continuation;
    use tower_llm_testkit::Fault;
    // `a` is picked first and its stream breaks after 40 tokens; `b`
    // continues it, 10 ms a token.
    let slow = Duration::from_millis(10);
    let a = Simulator::builder()
        .reply_tokens(60)
        .plan(Fault::stream_drop_after(40))
        .start()
        .await
        .unwrap();
    let b = Simulator::builder()
        .reply_tokens(60)
        .plan(Fault::ok().with_token_delay(slow))
        .start()
        .await
        .unwrap();
    let client = || -> Client<HttpConnector, ReplayBody> {
        Client::builder(TokioExecutor::new()).build_http()
    };
    let base = |sim: &Simulator| -> Uri { sim.base_url().parse().unwrap() };
    let stack = LlmStack::sdk_default()
        .seed(7)
        .target("a", client(), |t| t.base_url(base(&a)).weight(10_000))
        .target("b", client(), |t| {
            t.base_url(base(&b))
                .weight(1)
                .continuation(Continuation::TrailingAssistant)
        })
        .route(
            ModelRoute::new("gpt-4o", Vec::<String>::new()).group(Strategy::Weighted, ["a", "b"]),
        )
        .build()
        .unwrap();
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
                .to_owned(),
        )
        .unwrap();
    let response = stack.clone().oneshot(request).await.unwrap();
    assert_eq!(served_by(&response), Some("a"));
    let mut body = response.into_body();
    let mut seen_on_b = false;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        if b.requests().iter().any(|r| r.prefill.is_some()) {
            // The rest is being read from `b`: it counts there, `a`'s
            // broken call has ended.
            assert_eq!(in_flight(&stack), [0, 1]);
            seen_on_b = true;
            break;
        }
    }
    assert!(seen_on_b, "the stream was continued by b");
    drop(body);
    assert_eq!(in_flight(&stack), [0, 0]);
}
