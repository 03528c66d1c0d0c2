//! Happy-path overhead of the retry layer, beside the bare service,
//! tower's own `retry` with an equivalent policy (3 attempts, a
//! `TpsBudget`) and tower-resilience's retry (3 attempts, token bucket), in
//! one run; and the cost of one retry decision. Each
//! iteration is one call on a current-thread runtime; building the request
//! is outside the timed part.
//!
//! ```text
//! cargo bench -p tower-llm-retry --bench retry
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, ServiceExt};
use tower_llm_classify::hint::{Hint, HintSource};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::{ReplayBody, RetryLayer, RetryPolicy};
use tower_llm_testkit::ReadyUpstream;

const BODY: &str =
    r#"{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":"Say hello"}]}"#;

fn request() -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1:1/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

/// The upstream: answers at once.
const UPSTREAM: ReadyUpstream<LlmError> = ReadyUpstream::new(b"{}", &[]);

/// The upstream answering a whole JSON document, as an LLM API does
/// (`content-type: application/json`): the first-content guard holds such
/// an answer to its end, which the benchmark reads.
const JSON_UPSTREAM: ReadyUpstream<LlmError> = ReadyUpstream::new(
    br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#,
    &[("content-type", "application/json")],
);

/// tower's retry with what our default does: 3 attempts, a budget,
/// retry on any error. The request is cloned before the first attempt.
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
            Err(error) if error.retryable() && self.attempts > 1 && self.budget.withdraw() => {
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

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("retry_happy_path");

    let bare = UPSTREAM;
    group.bench_function("bare_service", |b| {
        b.iter_batched(
            request,
            |request| rt.block_on(async { black_box(bare.oneshot(request).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });

    // A whole JSON answer, its body read to the end: the guard's cost.
    let bare_json = JSON_UPSTREAM;
    group.bench_function("bare_service_json_answer_read", |b| {
        b.iter_batched(
            request,
            |request| {
                rt.block_on(async {
                    let response = bare_json.oneshot(request).await.unwrap();
                    black_box(response.into_body().collect().await.unwrap())
                })
            },
            BatchSize::SmallInput,
        )
    });
    let ours_json = RetryLayer::new(RetryPolicy::sdk_default()).layer(JSON_UPSTREAM);
    group.bench_function("tower_llm_retry_json_answer_read", |b| {
        b.iter_batched(
            request,
            |request| {
                rt.block_on(async {
                    let response = ours_json.clone().oneshot(request).await.unwrap();
                    black_box(response.into_body().collect().await.unwrap())
                })
            },
            BatchSize::SmallInput,
        )
    });

    let ours = RetryLayer::new(RetryPolicy::sdk_default()).layer(UPSTREAM);
    group.bench_function("tower_llm_retry", |b| {
        b.iter_batched(
            request,
            |request| {
                rt.block_on(async { black_box(ours.clone().oneshot(request).await.unwrap()) })
            },
            BatchSize::SmallInput,
        )
    });

    let no_budget =
        RetryLayer::new(RetryPolicy::builder().no_budget().build().unwrap()).layer(UPSTREAM);
    group.bench_function("tower_llm_retry_no_budget", |b| {
        b.iter_batched(
            request,
            |request| {
                rt.block_on(async { black_box(no_budget.clone().oneshot(request).await.unwrap()) })
            },
            BatchSize::SmallInput,
        )
    });

    // With an attempt timeout: the timer, and the `AttemptEnd` each attempt
    // carries so that a breaker below can count an attempt the timer ends.
    let timed = RetryLayer::new(
        RetryPolicy::builder()
            .attempt_timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap(),
    )
    .layer(UPSTREAM);
    group.bench_function("tower_llm_retry_attempt_timeout", |b| {
        b.iter_batched(
            request,
            |request| {
                rt.block_on(async { black_box(timed.clone().oneshot(request).await.unwrap()) })
            },
            BatchSize::SmallInput,
        )
    });

    let policy = TowerPolicy {
        attempts: 3,
        budget: Arc::new(TpsBudget::default()),
    };
    let tower_retry = tower::retry::RetryLayer::new(policy).layer(UPSTREAM);
    group.bench_function("tower_retry_tps_budget", |b| {
        b.iter_batched(
            request,
            |request| {
                rt.block_on(async {
                    black_box(tower_retry.clone().oneshot(request).await.unwrap())
                })
            },
            BatchSize::SmallInput,
        )
    });
    // tower-resilience 0.14 as its README configures retry: 3 attempts,
    // exponential backoff, a token-bucket budget, a predicate on the error.
    let budget = tower_resilience_retry::RetryBudgetBuilder::new()
        .token_bucket()
        .build()
        .unwrap();
    let resilience = tower_resilience_retry::RetryLayer::<
        Request<Full<Bytes>>,
        Response<Full<Bytes>>,
        LlmError,
    >::builder()
    .max_attempts(3)
    .exponential_backoff(Duration::from_millis(500))
    .retry_on(|error: &LlmError| error.retryable())
    .budget(budget)
    .build()
    .layer(UPSTREAM);
    group.bench_function("tower_resilience_retry", |b| {
        b.iter_batched(
            request,
            |request| {
                rt.block_on(async { black_box(resilience.clone().oneshot(request).await.unwrap()) })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn decision(c: &mut Criterion) {
    let policy = RetryPolicy::sdk_default();
    let hinted = Classification::new(ErrorKind::RateLimited)
        .with_phase(Phase::BeforeHeaders)
        .with_hint(Some(Hint {
            delay: Duration::from_secs(2),
            source: HintSource::RetryAfter,
        }));
    let plain = Classification::new(ErrorKind::Overloaded).with_phase(Phase::BeforeHeaders);
    let mut group = c.benchmark_group("retry_decision");
    group.bench_function("hinted_429", |b| {
        b.iter(|| {
            black_box(policy.decide(
                black_box(&hinted),
                1,
                Duration::ZERO,
                Some(Duration::from_secs(60)),
                0.5,
            ))
        })
    });
    group.bench_function("backoff_529", |b| {
        b.iter(|| black_box(policy.decide(black_box(&plain), 2, Duration::ZERO, None, 0.5)))
    });
    let budget = policy.budget().unwrap().clone();
    group.bench_function("budget_deposit", |b| b.iter(|| budget.deposit()));
    group.finish();
}

criterion_group!(benches, overhead, decision);
criterion_main!(benches);

#[allow(dead_code)]
fn _assert_types(_: Infallible, _: ReplayBody) {}
