//! `LlmStack` over real HTTP: routes by model, fallback, per-target
//! breakers and retry budgets, build errors, against the testkit's
//! simulated providers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_llm::circuit::CircuitState as State;
use tower_llm::fallback::FallbackReport;
use tower_llm::retry::{Backoff, ReplayBody, RetryPolicy};
use tower_llm::stack::{LlmStack, ModelRoute, Stack, StackError, served_by};
use tower_llm::{ErrorKind, LlmError, Phase};
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

type HttpClient = Client<HttpConnector, ReplayBody>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn base(sim: &Simulator) -> Uri {
    sim.base_url().parse().unwrap()
}

async fn healthy() -> Simulator {
    Simulator::start().await.unwrap()
}

async fn failing(plan: impl Into<FaultPlan>) -> Simulator {
    Simulator::builder().plan(plan).start().await.unwrap()
}

fn chat(model: &str) -> Request<String> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .unwrap()
}

fn bearer(key: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("authorization"),
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    )
}

/// A stack with one plain target per simulator (name, simulator), in order.
fn over(stack: LlmStack, targets: &[(&str, &Simulator)]) -> LlmStack {
    targets.iter().fold(stack, |stack, (name, sim)| {
        stack.target(name, client(), |t| t.base_url(base(sim)))
    })
}

async fn call(stack: &Stack, request: Request<String>) -> Result<String, LlmError> {
    let response = stack.clone().oneshot(request).await?;
    assert_eq!(response.status(), 200);
    Ok(served_by(&response).unwrap().to_owned())
}

fn report(error: &LlmError) -> FallbackReport {
    error.extensions().get::<FallbackReport>().unwrap().clone()
}

fn build_error(stack: LlmStack) -> String {
    let error: StackError = stack.build().unwrap_err();
    error.to_string()
}

// ---- routing by model -------------------------------------------------

/// Three routes: `gpt-4o` exactly to `a`, `gpt-4o*` to `b`, the rest to `c`.
async fn routed() -> (Stack, [Simulator; 3]) {
    let sims = [healthy().await, healthy().await, healthy().await];
    let stack = over(
        LlmStack::development(),
        &[("a", &sims[0]), ("b", &sims[1]), ("c", &sims[2])],
    )
    .route(ModelRoute::new("*", ["c"]))
    .route(ModelRoute::new("gpt-4o*", ["b"]))
    .route(ModelRoute::new("gpt-4o", ["a"]))
    .build()
    .unwrap();
    (stack, sims)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_exact_route_serves_its_model_before_a_prefix_that_also_matches() {
    let (stack, [a, b, c]) = routed().await;
    assert_eq!(call(&stack, chat("gpt-4o")).await.unwrap(), "a");
    assert_eq!(a.requests().len(), 1);
    assert!(b.requests().is_empty() && c.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_shared_reference_to_the_stack_routes_and_serves_as_the_stack_does() {
    let (stack, [a, b, c]) = routed().await;
    // No clone: what a server holding the stack in its state does.
    let response = (&stack).oneshot(chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(served_by(&response), Some("b"));
    let response = (&stack).oneshot(chat("o1")).await.unwrap();
    assert_eq!(served_by(&response), Some("c"));
    assert!(a.requests().is_empty());
    assert_eq!((b.requests().len(), c.requests().len()), (1, 1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_prefix_route_serves_every_model_that_starts_with_it() {
    let (stack, [a, b, c]) = routed().await;
    assert_eq!(call(&stack, chat("gpt-4o-mini")).await.unwrap(), "b");
    assert_eq!(b.requests()[0].model.as_deref(), Some("gpt-4o-mini"));
    assert!(a.requests().is_empty() && c.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_star_route_serves_models_no_other_route_names() {
    let (stack, [a, b, c]) = routed().await;
    assert_eq!(call(&stack, chat("claude-sonnet-4-5")).await.unwrap(), "c");
    assert_eq!(c.requests().len(), 1);
    assert!(a.requests().is_empty() && b.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn routes_lists_exact_names_then_prefixes_then_the_default_with_their_targets() {
    let (stack, _sims) = routed().await;
    let routes = stack.routes();
    let listed: Vec<(&str, Vec<&str>)> = routes
        .iter()
        .map(|(model, targets)| (model.as_str(), targets.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("gpt-4o", vec!["a"]),
            ("gpt-4o*", vec!["b"]),
            ("*", vec!["c"])
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_model_no_route_serves_is_a_local_not_found_without_any_upstream_call() {
    let sim = healthy().await;
    let stack = over(LlmStack::development(), &[("a", &sim)])
        .route(ModelRoute::new("gpt-4o", ["a"]))
        .build()
        .unwrap();
    assert_eq!(stack.targets_for(Some("claude-sonnet-4-5")), None);
    let error = stack
        .clone()
        .oneshot(chat("claude-sonnet-4-5"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(error.classification().phase(), Phase::Local);
    assert!(sim.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_model_name_longer_than_any_models_is_refused_before_it_becomes_a_key() {
    // Routed by `*` to a target that passes the caller's model on, a
    // made-up name would key a breaker and a pacing view, and show in
    // `/health`: one per request, as large as the body allows.
    let sim = healthy().await;
    let stack = over(LlmStack::development(), &[("a", &sim)])
        .build()
        .unwrap();
    let longest = "m".repeat(tower_llm::RequestMeta::MAX_MODEL_LEN);
    assert_eq!(call(&stack, chat(&longest)).await.unwrap(), "a");
    let keys = stack.circuits().keys();
    for i in 0..3 {
        let name = format!("{i}{}", "x".repeat(1 << 20));
        let error = stack.clone().oneshot(chat(&name)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);
        assert_eq!(error.classification().phase(), Phase::Local);
        assert!(error.to_string().len() < 1024, "the name is not echoed");
    }
    assert_eq!(stack.circuits().keys(), keys, "no key was made for them");
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_routes_every_request_goes_to_every_target_in_order() {
    let a = failing(Fault::quota_exhausted()).await;
    let b = failing(Fault::quota_exhausted()).await;
    let c = healthy().await;
    let stack = over(LlmStack::development(), &[("a", &a), ("b", &b), ("c", &c)])
        .build()
        .unwrap();
    assert_eq!(
        stack.targets_for(Some("any-model-at-all")),
        Some(vec!["a", "b", "c"])
    );
    let response = stack
        .clone()
        .oneshot(chat("any-model-at-all"))
        .await
        .unwrap();
    let report = response.extensions().get::<FallbackReport>().unwrap();
    assert_eq!(report.served_by.as_deref(), Some("c"));
    assert_eq!(
        report.failed_kinds(),
        [
            ("a", ErrorKind::QuotaExhausted),
            ("b", ErrorKind::QuotaExhausted)
        ]
    );
    assert_eq!(
        (a.requests().len(), b.requests().len(), c.requests().len()),
        (1, 1, 1)
    );
}

// ---- what reaches the upstream --------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_target_model_reaches_the_upstream_and_every_other_byte_is_unchanged() {
    let sim = healthy().await;
    let stack = LlmStack::development()
        .target("local", client(), |t| {
            t.base_url(base(&sim)).model("llama3.2")
        })
        .build()
        .unwrap();
    // Odd spacing, key order, an escaped quote, non-ASCII text, a nested
    // `model` that is not the request's, a number written as given.
    let body = "{ \"temperature\" : 0.20,\n  \"model\" :\t\"gpt-4o\" ,\"messages\":[{\"role\":\"user\",\"content\":\"Say \\\"model\\\" \u{e9}t\u{e9} \u{1f980}\",\"metadata\":{\"model\":\"gpt-4o\"}}],\"stream\":false}";
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap();
    let response = stack.clone().oneshot(request).await.unwrap();
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        std::str::from_utf8(&answer)
            .unwrap()
            .contains("chat.completion")
    );

    let sent = &sim.requests()[0];
    assert_eq!(sent.model.as_deref(), Some("llama3.2"));
    assert_eq!(sent.path, "/v1/chat/completions");
    let expected = body.replacen(":\t\"gpt-4o\"", ":\t\"llama3.2\"", 1);
    assert_eq!(sent.body_text(), expected);
}

// ---- fallback, breakers, budgets -------------------------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_overloaded_primary_falls_back_to_the_backup_which_served_by_names() {
    let primary = failing(Fault::overloaded()).await;
    let backup = healthy().await;
    let stack = over(
        LlmStack::development(),
        &[("primary", &primary), ("backup", &backup)],
    )
    .build()
    .unwrap();
    let response = stack.clone().oneshot(chat("gpt-4o")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), Some("backup"));
    // The development preset: two attempts at the primary, then move on.
    assert_eq!(primary.requests().len(), 2);
    assert_eq!(backup.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_primary_that_says_come_back_in_30_s_leaves_the_request_to_the_backup_at_once() {
    let primary = failing(Fault::rate_limited(Duration::from_secs(30))).await;
    let backup = healthy().await;
    let stack = over(
        LlmStack::high_availability(),
        &[("primary", &primary), ("backup", &backup)],
    )
    .build()
    .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(call(&stack, chat("gpt-4o")).await.unwrap(), "backup");
    assert_eq!(primary.requests().len(), 1);
    // Nothing waited out the hint: the paused clock counts every sleep.
    assert!(started.elapsed() < Duration::from_secs(1));
    // While the hint lasts the primary's key cools down: the next request
    // goes to the backup without calling it.
    assert_eq!(call(&stack, chat("gpt-4o")).await.unwrap(), "backup");
    assert_eq!(primary.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lone_target_waits_out_its_hint_and_is_served() {
    // With nowhere else to go, the hint is waited out (up to the policy's
    // `max_hint`): the second attempt is answered.
    let target = failing(FaultPlan::script([Fault::rate_limited(
        Duration::from_secs(2),
    )]))
    .await;
    let stack = over(LlmStack::high_availability(), &[("only", &target)])
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(call(&stack, chat("gpt-4o")).await.unwrap(), "only");
    assert_eq!(target.requests().len(), 2);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn two_targets_on_one_provider_and_model_have_separate_breakers() {
    let sim = healthy().await;
    let (east_header, east_key) = bearer("sk-east");
    let (west_header, west_key) = bearer("sk-west");
    let stack = LlmStack::development()
        .target("east", client(), |t| {
            t.base_url(base(&sim)).credential(east_header, east_key)
        })
        .target("west", client(), |t| {
            t.base_url(base(&sim)).credential(west_header, west_key)
        })
        .build()
        .unwrap();
    stack.circuits().force_open("east/gpt-4o");

    let response = stack.clone().oneshot(chat("gpt-4o")).await.unwrap();
    assert_eq!(served_by(&response), Some("west"));
    let report = response.extensions().get::<FallbackReport>().unwrap();
    assert_eq!(report.failed_kinds(), [("east", ErrorKind::CircuitOpen)]);

    let sent = sim.requests();
    assert_eq!(sent.len(), 1, "east's open breaker sent nothing");
    assert!(sent[0].carries_credential("sk-west"));
    assert!(!sent[0].carries_credential("sk-east"));
    assert_eq!(
        stack.circuits().state("east/gpt-4o"),
        Some(State::ForcedOpen)
    );
    assert_eq!(stack.circuits().state("west/gpt-4o"), Some(State::Closed));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_primary_that_spent_its_retry_budget_leaves_the_backup_its_own() {
    // One retry per second whatever the traffic (ratio 0, floor 1/s over
    // 1 s): the primary's second retry is refused. Were the budget shared,
    // the backup's one retry would be refused too.
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .budget(Duration::from_secs(1), 1, 0.0)
        .build()
        .unwrap();
    let primary = failing(Fault::overloaded()).await;
    let backup = failing(FaultPlan::script([Fault::overloaded(), Fault::ok()])).await;
    let stack = over(
        LlmStack::development().retry(policy),
        &[("primary", &primary), ("backup", &backup)],
    )
    .build()
    .unwrap();

    let response = stack.clone().oneshot(chat("gpt-4o")).await.unwrap();
    assert_eq!(served_by(&response), Some("backup"));
    let report = response.extensions().get::<FallbackReport>().unwrap();
    assert_eq!(
        report.failed_kinds(),
        [("primary", ErrorKind::BudgetExhausted)]
    );
    assert_eq!(primary.requests().len(), 2, "one retry, then no budget");
    assert_eq!(backup.requests().len(), 2, "the backup's own retry");
}

// ---- request limits and failure-specific routes ----------------------------

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_over_max_body_is_payload_too_large_without_any_upstream_call() {
    let sim = healthy().await;
    let stack = over(LlmStack::development().max_body(64), &[("only", &sim)])
        .build()
        .unwrap();
    let request = chat(&"x".repeat(100));
    assert!(request.body().len() > 64);
    let error = stack.clone().oneshot(request).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PayloadTooLarge);
    assert!(sim.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_context_length_failure_goes_to_the_routes_context_length_target() {
    let primary = failing(Fault::context_length_exceeded()).await;
    let backup = healthy().await;
    let long = healthy().await;
    let stack = over(
        LlmStack::development(),
        &[("primary", &primary), ("backup", &backup), ("long", &long)],
    )
    .route(ModelRoute::new("gpt-4o", ["primary", "backup"]).context_length(["long"]))
    .build()
    .unwrap();
    let response = stack.clone().oneshot(chat("gpt-4o")).await.unwrap();
    assert_eq!(served_by(&response), Some("long"));
    assert_eq!(primary.requests().len(), 1);
    assert!(backup.requests().is_empty(), "not a larger-context target");
    assert_eq!(long.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_ordinary_outage_never_reaches_the_targets_kept_for_length_or_policy() {
    let primary = failing(Fault::overloaded()).await;
    let backup = failing(Fault::overloaded()).await;
    let long = healthy().await;
    let lenient = healthy().await;
    let stack = over(
        LlmStack::development(),
        &[
            ("primary", &primary),
            ("backup", &backup),
            ("long", &long),
            ("lenient", &lenient),
        ],
    )
    .route(
        ModelRoute::new("gpt-4o", ["primary", "backup"])
            .context_length(["long"])
            .content_filter(["lenient"]),
    )
    .build()
    .unwrap();
    let error = stack.clone().oneshot(chat("gpt-4o")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert!(long.requests().is_empty(), "kept for context length");
    assert!(lenient.requests().is_empty(), "kept for content policy");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_content_filter_failure_goes_to_the_routes_content_filter_target() {
    let primary = failing(Fault::content_filtered()).await;
    let backup = healthy().await;
    let lenient = healthy().await;
    let stack = over(
        LlmStack::development(),
        &[
            ("primary", &primary),
            ("backup", &backup),
            ("lenient", &lenient),
        ],
    )
    .route(ModelRoute::new("gpt-4o", ["primary", "backup"]).content_filter(["lenient"]))
    .build()
    .unwrap();
    let response = stack.clone().oneshot(chat("gpt-4o")).await.unwrap();
    assert_eq!(served_by(&response), Some("lenient"));
    assert_eq!(primary.requests().len(), 1);
    assert!(backup.requests().is_empty(), "not a content-filter target");
    assert_eq!(lenient.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_context_length_failure_without_a_context_length_target_is_returned() {
    let primary = failing(Fault::context_length_exceeded()).await;
    let backup = healthy().await;
    let stack = over(
        LlmStack::development(),
        &[("primary", &primary), ("backup", &backup)],
    )
    .build()
    .unwrap();
    let error = stack.clone().oneshot(chat("gpt-4o")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ContextLengthExceeded);
    assert_eq!(
        report(&error).failed_kinds(),
        [("primary", ErrorKind::ContextLengthExceeded)]
    );
    assert!(backup.requests().is_empty());
}

// ---- build errors -----------------------------------------------------------

const NOWHERE: &str = "http://127.0.0.1:9";

fn nowhere(stack: LlmStack, name: &str) -> LlmStack {
    stack.target(name, client(), |t| t.base_url(NOWHERE.parse().unwrap()))
}

#[test]
fn two_targets_with_one_name_are_refused_by_name() {
    let stack = nowhere(nowhere(LlmStack::development(), "openai"), "openai");
    let message = build_error(stack);
    assert!(
        message.contains("two targets") && message.contains("`openai`"),
        "{message}"
    );
}

#[test]
fn a_route_whose_targets_are_all_for_special_failures_is_refused() {
    // `big` is only for a context too long: the route would send nothing.
    let stack = nowhere(LlmStack::development(), "big")
        .route(ModelRoute::new("gpt-4o", Vec::<String>::new()).context_length(["big"]));
    let message = build_error(stack);
    assert!(
        message.contains("gpt-4o") && message.contains("context too long"),
        "{message}"
    );
}

#[test]
fn a_route_naming_an_unknown_target_is_refused_listing_the_known_ones() {
    let stack = nowhere(nowhere(LlmStack::development(), "openai"), "local")
        .route(ModelRoute::new("gpt-4o", ["openai", "azure"]));
    let message = build_error(stack);
    assert!(
        message.contains("gpt-4o") && message.contains("`azure`"),
        "{message}"
    );
    assert!(
        message.contains("openai") && message.contains("local"),
        "{message}"
    );
}

#[test]
fn a_stack_without_targets_is_refused() {
    let message = build_error(LlmStack::development());
    assert!(message.contains("at least one target"), "{message}");
}

#[test]
fn a_target_name_with_a_slash_is_refused_as_it_would_make_breaker_keys_ambiguous() {
    let message = build_error(nowhere(LlmStack::development(), "meta-llama/vllm"));
    assert!(
        message.contains("meta-llama/vllm") && message.contains('/'),
        "{message}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_with_two_models_reaches_the_upstream_with_the_routed_one_only() {
    use std::sync::{Arc, Mutex};
    // A client that keeps what it is sent (the simulator, like serde,
    // refuses duplicate keys before recording).
    let sent: Arc<Mutex<Vec<bytes::Bytes>>> = Arc::default();
    let sink = Arc::clone(&sent);
    let client = tower::service_fn(move |request: Request<ReplayBody>| {
        let sink = Arc::clone(&sink);
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            sink.lock().unwrap().push(body);
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"{}"),
            )))
        }
    });
    let stack = LlmStack::development()
        .target("a", client.clone(), |t| t)
        .target("b", client, |t| t)
        .route(ModelRoute::new("gpt-4o", ["a"]))
        .route(ModelRoute::new("o1-pro", ["b"]))
        .build()
        .unwrap();
    let body = r#"{"model":"gpt-4o","messages":[],"model":"o1-pro"}"#;
    let request = Request::post("http://127.0.0.1:9/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap();
    // Routed by the last duplicate, as serde_json's `Value` and Python
    // read it; the upstream gets that one, once, whatever its parser keeps.
    assert_eq!(call(&stack, request).await.unwrap(), "b");
    let sent = sent.lock().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        String::from_utf8(sent[0].to_vec()).unwrap(),
        r#"{"model":"o1-pro","messages":[]}"#
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_without_a_model_is_an_invalid_request_without_any_upstream_call() {
    let sim = healthy().await;
    let stack = over(LlmStack::development(), &[("a", &sim)])
        .route(ModelRoute::new("gpt-4o", ["a"]))
        .build()
        .unwrap();
    let request = Request::post("/v1/chat/completions")
        .body("not json".to_owned())
        .unwrap();
    let error = stack.clone().oneshot(request).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert!(sim.requests().is_empty());
}

#[test]
fn a_route_without_targets_is_refused_by_model() {
    let stack = nowhere(LlmStack::development(), "openai")
        .route(ModelRoute::new("gpt-4o", Vec::<String>::new()));
    let message = build_error(stack);
    assert!(
        message.contains("`gpt-4o`") && message.contains("at least one target"),
        "{message}"
    );
}

#[test]
fn a_route_without_a_model_is_refused() {
    let stack = nowhere(LlmStack::development(), "openai").route(ModelRoute::new("", ["openai"]));
    let message = build_error(stack);
    assert!(message.contains("needs a model"), "{message}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn on_transition_hears_every_targets_breaker_open() {
    use std::sync::{Arc, Mutex};
    let primary = failing(Fault::overloaded()).await;
    let backup = healthy().await;
    let heard: Arc<Mutex<Vec<(String, State)>>> = Arc::default();
    let sink = Arc::clone(&heard);
    let stack = over(
        LlmStack::development().circuit(
            tower_llm::circuit::CircuitConfig::builder()
                .consecutive_failures(Some(2))
                .build()
                .unwrap(),
        ),
        &[("primary", &primary), ("backup", &backup)],
    )
    .on_transition(move |t| sink.lock().unwrap().push((t.key.to_string(), t.to)))
    .build()
    .unwrap();
    assert_eq!(call(&stack, chat("gpt-4o")).await.unwrap(), "backup");
    assert_eq!(
        *heard.lock().unwrap(),
        [("primary/gpt-4o".to_owned(), State::Open)]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_single_target_waits_out_a_rate_limit_instead_of_cooling_its_key_down() {
    // Alone, a cooldown could only fail the calls that would have passed.
    let sim = failing(FaultPlan::script([Fault::rate_limited(
        Duration::from_secs(2),
    )]))
    .await;
    let stack = over(LlmStack::sdk_default(), &[("only", &sim)])
        .build()
        .unwrap();
    let (first, second) = tokio::join!(call(&stack, chat("gpt-4o")), call(&stack, chat("gpt-4o")));
    assert_eq!(
        (first.unwrap(), second.unwrap()),
        ("only".to_owned(), "only".to_owned())
    );
    // One 429, then both calls answered: nothing failed locally.
    assert_eq!(sim.requests().len(), 3);
    assert_eq!(stack.circuits().snapshot()[0].cooldown_remaining, None);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_single_target_that_sheds_load_is_never_cut_off_by_its_breaker() {
    // Busy is not down: alone, an open breaker would fail every call where
    // a share of them would have passed. A retry backs off instead.
    let sim = failing(FaultPlan::always(Fault::overloaded())).await;
    let stack = over(LlmStack::sdk_default(), &[("only", &sim)])
        .build()
        .unwrap();
    for _ in 0..15 {
        assert!(call(&stack, chat("gpt-4o")).await.is_err());
    }
    let key = &stack.circuits().snapshot()[0];
    assert_eq!(key.state, State::Closed, "{key:?}");
    assert_eq!(key.rejected, 0);
    // Every call reached the provider (retries included).
    assert!(sim.requests().len() >= 15);
}

#[test]
fn a_stack_names_the_protocol_every_target_speaks_if_there_is_one() {
    use tower_llm::fallback::Protocol;
    let openai_only = LlmStack::development()
        .target("a", client(), |t| t)
        .target("b", client(), |t| t)
        .build()
        .unwrap();
    assert_eq!(openai_only.common_protocol(), Some(Protocol::OpenAi));
    let anthropic_only = LlmStack::development()
        .target("claude", client(), |t| t.protocol(Protocol::Anthropic))
        .build()
        .unwrap();
    assert_eq!(anthropic_only.common_protocol(), Some(Protocol::Anthropic));
    // Each route speaks one, but not the same one.
    let mixed = LlmStack::development()
        .target("a", client(), |t| t)
        .target("claude", client(), |t| t.protocol(Protocol::Anthropic))
        .route(ModelRoute::new("gpt-4o", ["a"]))
        .route(ModelRoute::new("claude-*", ["claude"]))
        .build()
        .unwrap();
    assert_eq!(mixed.common_protocol(), None);
}
