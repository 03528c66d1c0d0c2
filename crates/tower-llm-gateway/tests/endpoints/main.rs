//! Every API endpoint of the gateway, over real HTTP against the testkit's
//! simulated providers: served whole and streamed, retried and failed over
//! through the same stack as chat, and failed in the shape of its API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod demo;
mod messages;
mod models;
mod openai;
#[path = "../support/mod.rs"]
mod support;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tower_llm::config::StackConfig;
use tower_llm_gateway::GatewayOptions;
use tower_llm_testkit::{FaultPlan, Simulator};

use support::{PRIMARY_KEY, two_targets};

/// The Anthropic-protocol simulators' key (`api_key_env = "CLAUDE_KEY"`).
const CLAUDE_KEY: &str = "sk-ant-claude-secret";

/// A running gateway (stopped when dropped: its stop signal goes with it).
struct Gateway {
    base: String,
    _running: support::Running,
}

impl Gateway {
    async fn start(config: &str) -> Gateway {
        let config = StackConfig::from_toml(config).unwrap();
        let env = |name: &str| match name {
            "PRIMARY_KEY" => Some(PRIMARY_KEY.to_owned()),
            "CLAUDE_KEY" => Some(CLAUDE_KEY.to_owned()),
            // A key no simulator accepts.
            "WRONG_KEY" => Some("sk-ant-wrong".to_owned()),
            _ => None,
        };
        Gateway::start_with(config, env).await
    }

    async fn start_with(config: StackConfig, env: impl Fn(&str) -> Option<String>) -> Gateway {
        let stack = config
            .stack_with_env(support::upstream_client(), env)
            .unwrap()
            .build()
            .unwrap();
        let running = support::serve_stack(stack, &GatewayOptions::default()).await;
        Gateway {
            base: running.base.clone(),
            _running: running,
        }
    }

    async fn post(&self, path: &str, body: &str) -> Response<Incoming> {
        self.post_with(path, body, HeaderMap::new()).await
    }

    async fn post_with(&self, path: &str, body: &str, headers: HeaderMap) -> Response<Incoming> {
        let mut request = Request::post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        request.headers_mut().extend(headers);
        support::client().request(request).await.unwrap()
    }

    async fn get_with(&self, path: &str, headers: HeaderMap) -> (StatusCode, Value) {
        let mut request = Request::get(format!("{}{path}", self.base))
            .body(Full::<Bytes>::default())
            .unwrap();
        request.headers_mut().extend(headers);
        let response = support::client().request(request).await.unwrap();
        let status = response.status();
        (status, serde_json::from_str(&text(response).await).unwrap())
    }
}

async fn text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn json(response: Response<Incoming>) -> Value {
    let body = text(response).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn header_of<'a>(response: &'a Response<Incoming>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

/// The events of an SSE stream: each event's name (empty when it has
/// none) and its `data:` parsed (`Null` for `[DONE]`).
fn events(stream: &str) -> Vec<(String, Value)> {
    stream
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, serde_json::from_str(data).unwrap_or(Value::Null)))
        })
        .collect()
}

async fn sim(plan: impl Into<FaultPlan>) -> Simulator {
    Simulator::builder().plan(plan).start().await.unwrap()
}

/// An Anthropic-protocol simulator needing [`CLAUDE_KEY`].
async fn claude_sim(plan: impl Into<FaultPlan>) -> Simulator {
    Simulator::builder()
        .plan(plan)
        .api_key(CLAUDE_KEY)
        .start()
        .await
        .unwrap()
}

/// An Anthropic-protocol target named `name`, keyed with [`CLAUDE_KEY`].
fn anthropic_target(name: &str, sim: &Simulator) -> String {
    format!(
        r#"
        [[targets]]
        name = "{name}"
        provider = "anthropic"
        protocol = "anthropic"
        base_url = "{}/v1"
        api_key_env = "CLAUDE_KEY"
        "#,
        sim.base_url()
    )
}
