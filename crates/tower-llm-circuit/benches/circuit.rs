//! Closed-state overhead per call of the circuit layer, beside the bare
//! service, tower-resilience's circuit breaker and failsafe's, in one run
//! (with a stack's `target/model` key written by a function, and compared
//! in place with `KeyBy::TargetModel`), and with its decisions shared
//! with other replicas (a listener attached, as tower-llm-redis does); and
//! calls on one key from two threads.
//!
//! ```text
//! cargo bench -p tower-llm-circuit --bench circuit
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};
use tower_llm_circuit::{CircuitConfig, CircuitLayer, KeyBy};
use tower_llm_classify::RequestMeta;

use tower_llm_testkit::ReadyUpstream;

/// An upstream that answers at once, so that what is timed is the layer
/// in front of it.
type Upstream = ReadyUpstream<tower_llm_classify::LlmError>;

const BODY: &str =
    r#"{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":"Say hello"}]}"#;

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

/// What an outer layer (or Classify, once) would have computed.
fn request_with_meta() -> Request<Full<Bytes>> {
    let mut request = request();
    RequestMeta::get_or_insert(&mut request);
    request
}

fn closed_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("circuit_closed");

    let bare = Upstream::EMPTY;
    group.bench_function("bare_service", |b| {
        b.iter_batched(
            request_with_meta,
            |r| rt.block_on(async { black_box(bare.oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });

    let ours = CircuitLayer::new(CircuitConfig::standard()).layer(Upstream::EMPTY);
    group.bench_function("tower_llm_circuit", |b| {
        b.iter_batched(
            request_with_meta,
            |r| rt.block_on(async { black_box(ours.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("tower_llm_circuit_meta_computed", |b| {
        b.iter_batched(
            request,
            |r| rt.block_on(async { black_box(ours.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });

    // Decisions shared with other replicas (what tower-llm-redis attaches):
    // a healthy call takes none, so this should cost what the plain layer
    // does.
    let sharing_layer = CircuitLayer::new(CircuitConfig::standard());
    sharing_layer
        .handle()
        .share_decisions(|decision| {
            black_box(decision);
        })
        .unwrap();
    let sharing = sharing_layer.layer(Upstream::EMPTY);
    group.bench_function("tower_llm_circuit_sharing_decisions", |b| {
        b.iter_batched(
            request_with_meta,
            |r| rt.block_on(async { black_box(sharing.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });

    // A stack's key, `target/model`: written by a function on every call,
    // or compared where it is.
    let custom = CircuitLayer::new(CircuitConfig::standard())
        .key_by(KeyBy::Custom(Arc::new(|input, out: &mut String| {
            out.push_str("primary/");
            out.push_str(input.meta.model.as_deref().unwrap_or("-"));
        })))
        .layer(Upstream::EMPTY);
    group.bench_function("tower_llm_circuit_custom_key", |b| {
        b.iter_batched(
            request_with_meta,
            |r| rt.block_on(async { black_box(custom.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });
    let target_model = CircuitLayer::new(CircuitConfig::standard())
        .key_by(KeyBy::TargetModel("primary".into()))
        .layer(Upstream::EMPTY);
    group.bench_function("tower_llm_circuit_target_model_key", |b| {
        b.iter_batched(
            request_with_meta,
            |r| rt.block_on(async { black_box(target_model.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });

    let resilience = tower_resilience_circuitbreaker::CircuitBreakerLayer::standard()
        .build()
        .unwrap()
        .layer(Upstream::EMPTY);
    group.bench_function("tower_resilience_circuitbreaker", |b| {
        b.iter_batched(
            request_with_meta,
            |r| rt.block_on(async { black_box(resilience.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });

    let failsafe_breaker = failsafe::Config::new().build();
    group.bench_function("failsafe", |b| {
        b.iter_batched(
            request_with_meta,
            |r| {
                rt.block_on(async {
                    use failsafe::futures::CircuitBreaker as _;
                    black_box(
                        failsafe_breaker
                            .call({
                                let mut upstream = Upstream::EMPTY;
                                upstream.call(r)
                            })
                            .await
                            .unwrap(),
                    )
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn contention(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("circuit_one_key_two_threads");
    group.throughput(criterion::Throughput::Elements(1));
    let run = |service: tower_llm_circuit::Circuit<Upstream>, iters: u64| {
        rt.block_on(async move {
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..2 {
                let service = service.clone();
                tasks.spawn(async move {
                    for _ in 0..iters / 2 {
                        black_box(service.clone().oneshot(request_with_meta()).await.unwrap());
                    }
                });
            }
            tasks.join_all().await;
            started.elapsed()
        })
    };
    let ours = CircuitLayer::new(CircuitConfig::standard()).layer(Upstream::EMPTY);
    group.bench_function("tower_llm_circuit", |b| {
        b.iter_custom(|iters| run(ours.clone(), iters))
    });
    group.finish();
    let _ = Duration::ZERO;
}

criterion_group!(benches, closed_overhead, contention);
criterion_main!(benches);
