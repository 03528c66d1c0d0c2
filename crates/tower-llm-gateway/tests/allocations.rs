//! What the gateway's router allocates around a request, counted: a
//! caller key costs the request what its check records (the caller, in the
//! request's extensions), not another layer of axum's boxing.
//!
//! `cargo test -p tower-llm-gateway --test allocations -- --nocapture`
//! prints the counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_llm::config::StackConfig;
use tower_llm_gateway::{Closing, GatewayOptions, config, router};

#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

const KEYS_VAR: &str = "TOWER_LLM_TEST_ALLOCATION_KEYS";
const KEY: &str = "sk-gw-caller-allocations-0123456789";

fn gateway(options: &GatewayOptions) -> Router {
    let stack = StackConfig::from_toml(
        r#"
        [[targets]]
        name = "only"
        base_url = "http://127.0.0.1:9/v1"
        "#,
    )
    .unwrap()
    .build(tower_llm_gateway::upstream_client())
    .unwrap();
    router(stack, options, None, &Closing::new())
}

fn with_key() -> GatewayOptions {
    let (section, _) =
        config::parse_file(&format!("[gateway]\napi_keys_env = \"{KEYS_VAR}\"\n")).unwrap();
    section
        .options_with_env(|name| (name == KEYS_VAR).then(|| KEY.to_owned()))
        .unwrap()
}

/// Allocations of the last of a few `GET /v1/models` (the model list: no
/// upstream call), answer read to its end.
async fn allocations_per_request(router: &Router, key: Option<&str>) -> u64 {
    let mut last = 0;
    for _ in 0..4 {
        let mut request = Request::get("/v1/models");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request.body(Body::empty()).unwrap();
        let before = GLOBAL.stats();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        drop(body);
        let after = GLOBAL.stats();
        last = (after.allocations + after.reallocations) as u64
            - (before.allocations + before.reallocations) as u64;
    }
    last
}

#[tokio::test(flavor = "current_thread")]
async fn a_caller_key_costs_a_request_only_the_caller_it_records() {
    let open = allocations_per_request(&gateway(&GatewayOptions::default()), None).await;
    let keyed = allocations_per_request(&gateway(&with_key()), Some(KEY)).await;
    println!("GET /v1/models: {open} allocations without keys, {keyed} with a key");
    // What the check costs is the caller's index in the request's
    // extensions: its box, and the map made for it when the request had
    // none (4 in all today). It was 13 when the check was axum's
    // `middleware::from_fn` (the rest of the route boxed for its `Next`,
    // its future boxed) in a `Router::layer` of its own (the route boxed
    // again, a boxed clone and a boxed future per request).
    assert!(
        keyed <= open + 4,
        "{keyed} allocations with a key, {open} without"
    );
}
