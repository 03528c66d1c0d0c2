//! Uncongested overhead per call of the adaptive limit, in one run: the
//! bare service, the circuit alone, the adaptive limit above the circuit
//! (sharing its keys), the two as one layer (`with_adaptive_limit`, as a
//! stack puts them), the limit alone, and tower's fixed `ConcurrencyLimit`
//! (alone and above the circuit). Issue 15 asks ≤ 50 ns for the limit
//! over the circuit alone.
//!
//! ```text
//! cargo bench -p tower-llm-circuit --bench adaptive_limit
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceExt};
use tower_llm_circuit::{AdaptiveLimitConfig, AdaptiveLimitLayer, CircuitConfig, CircuitLayer};
use tower_llm_classify::RequestMeta;

use tower_llm_testkit::ReadyUpstream;

/// An upstream that answers at once, so that what is timed is the layer
/// in front of it.
type Upstream = ReadyUpstream<tower_llm_classify::LlmError>;

const BODY: &str =
    r#"{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":"Say hello"}]}"#;

/// With the metadata an outer layer (or Classify, once) would have left.
fn request() -> Request<Full<Bytes>> {
    // No header: dropping the request is then a small part of each call.
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    RequestMeta::get_or_insert(&mut request);
    request
}

fn uncongested(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("adaptive_limit_uncongested");
    // The requests are made before the clock starts, and the calls run in
    // one `block_on`: what is timed is the call and its drop.
    macro_rules! bench {
        ($name:literal, $service:expr) => {
            let service = $service;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    let requests: Vec<_> = (0..iters).map(|_| request()).collect();
                    let mut service = service.clone();
                    rt.block_on(async {
                        let started = std::time::Instant::now();
                        for r in requests {
                            let ready = ServiceExt::<Request<Full<Bytes>>>::ready(&mut service)
                                .await
                                .unwrap();
                            black_box(ready.call(r).await.unwrap());
                        }
                        started.elapsed()
                    })
                })
            });
        };
    }
    bench!("bare_service", Upstream::EMPTY);
    let circuit = CircuitLayer::new(CircuitConfig::standard());
    bench!("circuit", circuit.layer(Upstream::EMPTY));
    bench!(
        "circuit_and_adaptive_limit",
        circuit
            .adaptive_limit()
            .layer(circuit.layer(Upstream::EMPTY))
    );
    bench!(
        "circuit_with_adaptive_limit",
        circuit.with_adaptive_limit().layer(Upstream::EMPTY)
    );
    bench!(
        "adaptive_limit_alone",
        AdaptiveLimitLayer::new(AdaptiveLimitConfig::standard()).layer(Upstream::EMPTY)
    );
    bench!(
        "tower_concurrency_limit_alone",
        ConcurrencyLimitLayer::new(20).layer(Upstream::EMPTY)
    );
    bench!(
        "circuit_and_tower_concurrency_limit",
        ConcurrencyLimitLayer::new(20).layer(circuit.layer(Upstream::EMPTY))
    );
    group.finish();
}

criterion_group!(benches, uncongested);
criterion_main!(benches);
