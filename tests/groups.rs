//! Deployment groups through `LlmStack` and `StackConfig`, over real HTTP
//! against the testkit's simulated providers: a route's group spreads its
//! requests, skips a deployment whose breaker is open, and the groups a
//! file describes are the ones built.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
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
