//! `GET /v1/models`.

use http::{HeaderMap, HeaderValue, StatusCode};
use tower_llm_testkit::Fault;

use crate::{Gateway, anthropic_target, claude_sim, sim};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn models_lists_every_route_in_match_order_openai_or_anthropic_shaped() {
    let openai = sim(Fault::ok()).await;
    let claude = claude_sim(Fault::ok()).await;
    let config = format!(
        r#"
        preset = "development"

        [[targets]]
        name = "openai"
        base_url = "{}/v1"
        {}
        [[routes]]
        model = "*"
        targets = ["openai"]

        [[routes]]
        model = "claude-*"
        targets = ["claude"]

        [[routes]]
        model = "gpt-4o"
        targets = ["openai", "claude"]
        "#,
        openai.base_url(),
        anthropic_target("claude", &claude),
    );
    let gateway = Gateway::start(&config).await;

    let (status, list) = gateway.get_with("/v1/models", HeaderMap::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o", "claude-*", "*"]);
    assert_eq!(list["data"][0]["object"], "model");
    assert_eq!(list["data"][1]["owned_by"], "claude");

    let mut anthropic = HeaderMap::new();
    anthropic.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    let (status, list) = gateway.get_with("/v1/models", anthropic).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][1]["type"], "model");
    assert_eq!(list["data"][1]["id"], "claude-*");
    assert_eq!(list["has_more"], false);
    // Nothing was sent upstream to list them.
    assert!(openai.requests().is_empty() && claude.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_model_is_retrieved_when_a_route_serves_it_and_404_in_the_callers_shape_otherwise() {
    let openai = sim(Fault::ok()).await;
    let config = format!(
        r#"
        preset = "development"

        [[targets]]
        name = "openai"
        base_url = "{}/v1"

        [[routes]]
        model = "gpt-*"
        targets = ["openai"]
        "#,
        openai.base_url(),
    );
    let gateway = Gateway::start(&config).await;

    let (status, model) = gateway
        .get_with("/v1/models/gpt-4o-mini", HeaderMap::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(model["id"], "gpt-4o-mini");
    assert_eq!(model["object"], "model");
    assert_eq!(model["owned_by"], "openai");

    let (status, error) = gateway
        .get_with("/v1/models/claude-3-opus", HeaderMap::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "model_not_found");

    let mut anthropic = HeaderMap::new();
    anthropic.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    let (status, error) = gateway
        .get_with("/v1/models/claude-3-opus", anthropic)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "not_found_error");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_model_path_that_is_not_utf8_is_a_400_in_the_callers_shape() {
    let openai = sim(Fault::ok()).await;
    let config = format!(
        "preset = \"development\"\n[[targets]]\nname = \"openai\"\nbase_url = \"{}/v1\"\n",
        openai.base_url(),
    );
    let gateway = Gateway::start(&config).await;
    let (status, error) = gateway.get_with("/v1/models/%FF", HeaderMap::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let mut anthropic = HeaderMap::new();
    anthropic.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    let (status, error) = gateway.get_with("/v1/models/%FF", anthropic).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
}
