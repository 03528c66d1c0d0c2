//! The happy path in one run: the overhead per call of each layer and of
//! the whole stack, beside the equivalent layer of each peer crate, on the
//! same in-process upstream — so the ratios hold on a noisy machine.
//!
//! ```text
//! cargo bench -p tower-llm-bench --bench stack -- --warm-up-time 1 --measurement-time 3
//! cargo bench -p tower-llm-bench --bench stack -- group_pick   # picking a deployment among three
//! ```
//!
//! Every call builds nothing inside the timing (the request is made by
//! `iter_batched`), answers a whole JSON completion at once, and reads the
//! body to its end (so a layer that holds the answer back pays for it).
//! Futures run on a current-thread runtime.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};
use tower_llm::LlmError;
use tower_llm::circuit::{CircuitConfig, CircuitLayer};
use tower_llm::retry::{RetryLayer, RetryPolicy};
use tower_llm::stack::LlmStack;
use tower_llm::{ClassifyLayer, RequestMeta};
use tower_llm_testkit::ReadyUpstream;

const BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in one word."}]}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}]}"#;

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer sk-bench")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

/// `request()` with its `RequestMeta` already attached, as the outermost
/// layer of a stack leaves it for the ones below.
fn request_with_meta() -> Request<Full<Bytes>> {
    let mut request = request();
    let meta = RequestMeta::from_request(request.uri(), request.headers(), Some(BODY.as_bytes()));
    request.extensions_mut().insert(meta);
    request
}

/// The upstream: a whole JSON completion, at once.
const UPSTREAM: ReadyUpstream<LlmError> =
    ReadyUpstream::new(ANSWER.as_bytes(), &[("content-type", "application/json")]);

/// A streamed answer: 50 content events, each its own frame, then the
/// finish and `[DONE]` — what a healthy stream costs each layer per event.
fn stream_events() -> Vec<Bytes> {
    let mut events = vec![Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    )];
    for i in 0..50 {
        events.push(Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"finish_reason\":null}}]}}\n\n"
        )));
    }
    events.push(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    ));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// A body handing out its events one frame per poll.
struct Events(std::collections::VecDeque<Bytes>);

impl http_body::Body for Events {
    type Data = Bytes;
    type Error = LlmError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, LlmError>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|e| Ok(http_body::Frame::data(e))))
    }
}

/// The upstream of streamed requests: [`stream_events`], one per frame.
#[derive(Clone)]
struct StreamUpstream(Arc<Vec<Bytes>>);

impl<B> Service<Request<B>> for StreamUpstream {
    type Response = Response<Events>;
    type Error = LlmError;
    type Future = Ready<Result<Self::Response, LlmError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), LlmError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        drop(black_box(request));
        let mut response = Response::new(Events(self.0.iter().cloned().collect()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        ready(Ok(response))
    }
}

fn stream_request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer sk-bench")
        .body(Full::new(Bytes::from_static(STREAM_BODY.as_bytes())))
        .unwrap()
}

const STREAM_BODY: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Count to fifty."}]}"#;

/// tower's retry as a user writes it for an LLM API: errors retried,
/// 3 attempts, a `TpsBudget`.
#[derive(Clone)]
struct TowerPolicy {
    attempts: usize,
    budget: Arc<TpsBudget>,
}

impl<Res> tower::retry::Policy<Request<Full<Bytes>>, Res, LlmError> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        result: &mut Result<Res, LlmError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(e) if e.retryable() && self.attempts > 1 && self.budget.withdraw() => {
                self.attempts -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        Some(request.clone())
    }
}

/// Times one call through `service` with the body read to its end.
macro_rules! bench_call {
    ($group:expr, $rt:expr, $name:expr, $service:expr, $make:expr) => {{
        let service = $service;
        $group.bench_function($name, |b| {
            b.iter_batched(
                $make,
                |request| {
                    $rt.block_on(async {
                        let response = service.clone().oneshot(request).await.unwrap();
                        black_box(response.into_body().collect().await.unwrap())
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }};
}

fn happy_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("happy_path");

    bench_call!(group, rt, "bare", UPSTREAM, request);

    // Classify: ours (the RequestMeta a stack's outer layer leaves), and
    // tower-http's TraceLayer with its default status classifier.
    bench_call!(
        group,
        rt,
        "classify/tower_llm",
        ClassifyLayer::new().layer(UPSTREAM),
        request_with_meta
    );
    bench_call!(
        group,
        rt,
        "classify/tower_http_trace",
        tower_http::trace::TraceLayer::new_for_http().layer(UPSTREAM),
        request
    );

    // Retry.
    bench_call!(
        group,
        rt,
        "retry/tower_llm",
        RetryLayer::new(RetryPolicy::sdk_default()).layer(UPSTREAM),
        request_with_meta
    );
    let tower_retry = tower::retry::RetryLayer::new(TowerPolicy {
        attempts: 3,
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    })
    .layer(UPSTREAM);
    bench_call!(group, rt, "retry/tower", tower_retry, request);
    // tower-resilience 0.14 as its README configures retry: 3 attempts,
    // exponential backoff, a token-bucket budget, a predicate on the error.
    fn resilience_retry<E: 'static>(
        retryable: fn(&E) -> bool,
    ) -> tower_resilience_retry::RetryLayer<Request<Full<Bytes>>, Response<Full<Bytes>>, E> {
        let budget = tower_resilience_retry::RetryBudgetBuilder::new()
            .token_bucket()
            .build()
            .unwrap();
        tower_resilience_retry::RetryLayer::<Request<Full<Bytes>>, Response<Full<Bytes>>, E>::builder()
            .max_attempts(3)
            .exponential_backoff(Duration::from_millis(500))
            .retry_on(retryable)
            .budget(budget)
            .build()
    }
    bench_call!(
        group,
        rt,
        "retry/tower_resilience",
        resilience_retry::<LlmError>(LlmError::retryable).layer(UPSTREAM),
        request
    );

    // Circuit breaker.
    bench_call!(
        group,
        rt,
        "circuit/tower_llm",
        CircuitLayer::new(CircuitConfig::standard()).layer(UPSTREAM),
        request_with_meta
    );
    // With the adaptive limit in the same layer, as each target of a stack
    // has it (issue 15: ≤ 50 ns over the breaker alone while healthy).
    bench_call!(
        group,
        rt,
        "circuit/tower_llm_with_adaptive_limit",
        CircuitLayer::new(CircuitConfig::standard())
            .with_adaptive_limit()
            .layer(UPSTREAM),
        request_with_meta
    );
    let resilience_breaker = tower_resilience_circuitbreaker::CircuitBreakerLayer::standard()
        .build()
        .unwrap();
    bench_call!(
        group,
        rt,
        "circuit/tower_resilience",
        resilience_breaker.clone().layer(UPSTREAM),
        request
    );

    // The whole stack: ours (fallback over one target: retry, circuit,
    // classify) against the peers' closest combination.
    let stack = LlmStack::sdk_default()
        .target("openai", UPSTREAM, |t| t)
        .build()
        .unwrap();
    bench_call!(group, rt, "stack/tower_llm", stack, request);
    // The gateway's usual route: the same primary with a backup that may
    // follow it (the caller's request is kept for the backup).
    let with_backup = LlmStack::sdk_default()
        .target("openai", UPSTREAM, |t| t)
        .target("backup", UPSTREAM, |t| t)
        .build()
        .unwrap();
    bench_call!(
        group,
        rt,
        "stack/tower_llm_with_backup",
        with_backup,
        request
    );
    // The same stack with every per-call feature the default turns on
    // turned off: no time limits per attempt, no first-content guard (the
    // answer is handed over before it is read), no retry budget, no
    // adaptive limit, no stream continuation. What is left is the
    // structure (the request read once, the target picked and adapted,
    // retry, breaker, classify): the row beside `stack/tower_llm` is what
    // the default's features cost on a healthy call.
    let lean = LlmStack::sdk_default()
        .retry(
            RetryPolicy::builder()
                .first_content_guard(false)
                .no_budget()
                .build()
                .unwrap(),
        )
        .adaptive_limit(false)
        .continue_streams(0)
        .target("openai", UPSTREAM, |t| t)
        .build()
        .unwrap();
    bench_call!(group, rt, "stack/tower_llm_lean", lean, request);
    // Retry outside the breaker, not retrying its rejections (its docs'
    // recommended order).
    let combined =
        resilience_retry::<tower_resilience_circuitbreaker::CircuitBreakerError<LlmError>>(|e| {
            !e.is_circuit_open()
        })
        .layer(resilience_breaker.layer(UPSTREAM));
    bench_call!(
        group,
        rt,
        "stack/tower_resilience_retry_circuit",
        combined,
        request
    );
    group.finish();
}

/// A healthy stream of 50 content events through the whole stack: with
/// continuation (the default: Classify keeps the transcript a continuation
/// would need) and without (`continue_streams(0)`), beside the bare
/// upstream and the peers' pair — issue 14's cost of tracking what the
/// caller holds.
fn healthy_stream(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("healthy_stream");
    let upstream = StreamUpstream(Arc::new(stream_events()));
    bench_call!(group, rt, "bare", upstream.clone(), stream_request);
    // A target that can continue (as Anthropic's, Ollama's), so that the
    // stack keeps what a continuation would need.
    let continues = |t: tower_llm::fallback::Target<()>| {
        t.continuation(tower_llm::fallback::continuation::Continuation::TrailingAssistant)
    };
    let continuing = LlmStack::sdk_default()
        .target("openai", upstream.clone(), continues)
        .build()
        .unwrap();
    bench_call!(group, rt, "stack/tower_llm", continuing, stream_request);
    let not_continuing = LlmStack::sdk_default()
        .continue_streams(0)
        .target("openai", upstream.clone(), continues)
        .build()
        .unwrap();
    bench_call!(
        group,
        rt,
        "stack/tower_llm_no_continuation",
        not_continuing,
        stream_request
    );
    group.finish();
}

/// Picking a deployment among three (issue 17's goal: ≤ 100 ns): a call
/// through a fallback whose only group holds three targets, by each
/// strategy, beside the same three targets in order (three groups of one:
/// the first serves, nothing is picked or counted) — the difference is
/// what a group costs per call: the pick, the count in flight, the
/// latency sample. And the same through the whole stack, where the pick
/// also asks the pacing view of the member it picked.
fn group_pick(c: &mut Criterion) {
    use tower_llm::fallback::{Fallback, Strategy, Target};
    use tower_llm::stack::ModelRoute;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("group_pick");
    let targets = || ["a", "b", "c"].map(|name| Target::new(name, UPSTREAM));
    let in_order = targets()
        .into_iter()
        .fold(Fallback::builder(), |b, t| b.target(t))
        .build()
        .unwrap();
    bench_call!(group, rt, "fallback/three_in_order", in_order, request);
    for strategy in [Strategy::Latency, Strategy::LeastBusy, Strategy::Weighted] {
        let three = Fallback::builder()
            .group(strategy, targets())
            .seed(1)
            .build()
            .unwrap();
        bench_call!(
            group,
            rt,
            format!("fallback/three_{strategy}"),
            three,
            request
        );
    }
    let stack = |route: ModelRoute| {
        LlmStack::sdk_default()
            .target("a", UPSTREAM, |t| t)
            .target("b", UPSTREAM, |t| t)
            .target("c", UPSTREAM, |t| t)
            .route(route)
            .seed(1)
            .build()
            .unwrap()
    };
    let in_order = stack(ModelRoute::new("*", ["a", "b", "c"]));
    bench_call!(group, rt, "stack/three_in_order", in_order, request);
    let grouped =
        stack(ModelRoute::new("*", Vec::<String>::new()).group(Strategy::Latency, ["a", "b", "c"]));
    bench_call!(group, rt, "stack/three_latency", grouped, request);
    group.finish();
}

criterion_group!(benches, happy_path, healthy_stream, group_pick);
criterion_main!(benches);
