//! What the gateway's router allocates around a request, counted: a
//! caller key and a request limit cost the request what they record (the
//! caller in the request's extensions, its standing in the answer's
//! headers), not a layer of axum's boxing each.
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
/// What a request limit adds to an answer: the caller's standing in three
/// headers (the two numbers and the reset's text, each value made), and
/// the answer's header map grown for them.
const LIMIT_HEADERS: u64 = 6;

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
    with_key_and("")
}

/// Caller keys and `extra` lines of `[gateway]`.
fn with_key_and(extra: &str) -> GatewayOptions {
    let (section, _) = config::parse_file(&format!(
        "[gateway]\napi_keys_env = \"{KEYS_VAR}\"\n{extra}"
    ))
    .unwrap();
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

/// One test: the counts are of the whole process, so no other test may
/// run beside them.
#[tokio::test(flavor = "current_thread")]
async fn a_caller_key_and_a_request_limit_cost_a_request_only_what_they_record() {
    let open = allocations_per_request(&gateway(&GatewayOptions::default()), None).await;
    let keyed = allocations_per_request(&gateway(&with_key()), Some(KEY)).await;
    let limited = gateway(&with_key_and(
        "[gateway.rate_limits]\nrequests_per_minute = 1000000\n",
    ));
    let paced = allocations_per_request(&limited, Some(KEY)).await;
    println!(
        "GET /v1/models: {open} allocations without keys, {keyed} with a key, {paced} with a key and a request limit"
    );
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
    // The limit's bucket is a cell of atomics; what it costs is the
    // caller's standing written into the answer ([`LIMIT_HEADERS`]). As
    // axum's `middleware::from_fn` it cost 4 more (61 against 57).
    assert!(
        paced <= keyed + LIMIT_HEADERS,
        "{paced} allocations under a request limit, {keyed} without"
    );
}
