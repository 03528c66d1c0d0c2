//! What pacing costs a closed circuit per call, in one run: pacing off
//! (the circuit as it was before pacing), on with answers that carry no
//! rate-limit headers (each answer's header names are looked at), on with
//! OpenAI's six `x-ratelimit-*` headers on every answer (the key is paced:
//! each call reserves and hands back, each answer is parsed), and
//! configured `rpm`/`tpm` for a target that sends none (each call is
//! logged in its key's last minute). Beside the bare service answering
//! the same headers.
//!
//! ```text
//! cargo bench -p tower-llm-circuit --bench pacing
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};
use tower_llm_circuit::{CircuitConfig, CircuitLayer, PaceLimits, PacingConfig};
use tower_llm_classify::RequestMeta;
use tower_llm_classify::hint::RateLimitHeaders;

use tower_llm_testkit::ReadyUpstream;

/// An upstream that answers at once, so that what is timed is the layer
/// in front of it.
type Upstream = ReadyUpstream<tower_llm_classify::LlmError>;

const BODY: &str = r#"{"model":"gpt-4o","stream":false,"max_tokens":100,"messages":[{"role":"user","content":"Say hello"}]}"#;

fn request_with_meta() -> Request<Full<Bytes>> {
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    RequestMeta::get_or_insert(&mut request);
    request
}

/// What every answer carries: a content type and a request id.
const PLAIN: Upstream = Upstream::new(
    b"",
    &[
        ("content-type", "application/json"),
        ("x-request-id", "req_1"),
    ],
);
/// The same with OpenAI's rate-limit headers, plenty left, as on every
/// answer.
const LIMITED: Upstream = Upstream::new(
    b"",
    &[
        ("content-type", "application/json"),
        ("x-request-id", "req_1"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-tokens", "29999000"),
        ("x-ratelimit-reset-tokens", "2ms"),
    ],
);

fn pacing_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("pacing_closed");
    macro_rules! bench {
        ($name:expr, $service:expr) => {{
            let service = $service;
            group.bench_function($name, |b| {
                b.iter_batched(
                    request_with_meta,
                    |r| rt.block_on(async { black_box(service.clone().oneshot(r).await.unwrap()) }),
                    BatchSize::SmallInput,
                )
            });
        }};
    }
    let circuit = |pacing: PacingConfig| {
        CircuitLayer::new(CircuitConfig::builder().pacing(pacing).build().unwrap())
    };
    bench!("bare", PLAIN);
    bench!("bare_with_headers", LIMITED);
    bench!(
        "circuit/pacing_off",
        circuit(PacingConfig::off()).layer(PLAIN)
    );
    bench!(
        "circuit/no_headers",
        circuit(PacingConfig::default()).layer(PLAIN)
    );
    bench!(
        "circuit/pacing_off_with_headers",
        circuit(PacingConfig::off()).layer(LIMITED)
    );
    bench!(
        "circuit/paced_by_headers",
        circuit(PacingConfig::default()).layer(LIMITED)
    );
    // High enough never to refuse in a run: every call is logged.
    bench!(
        "circuit/configured_rpm_tpm",
        circuit(
            PacingConfig::default()
                .default_limit(PaceLimits::rpm(u64::MAX / 2).with_tpm(u64::MAX / 2))
        )
        .layer(PLAIN)
    );
    group.finish();

    // Where a paced call's time goes: reading an answer's headers, and
    // the wall clock that read needs.
    let mut group = c.benchmark_group("pacing_parts");
    let answer = { LIMITED }.call(request_with_meta()).into_inner().unwrap();
    group.bench_function("read_openai_headers", |b| {
        b.iter(|| {
            black_box(RateLimitHeaders::read_with(
                black_box(answer.headers()),
                SystemTime::now,
            ))
        })
    });
    let plain = { PLAIN }.call(request_with_meta()).into_inner().unwrap();
    group.bench_function("read_no_headers", |b| {
        b.iter(|| {
            black_box(RateLimitHeaders::read_with(
                black_box(plain.headers()),
                SystemTime::now,
            ))
        })
    });
    // What a picker pays per candidate: a key no answer has paced, and
    // one whose headers have been read.
    let idle = CircuitLayer::new(CircuitConfig::standard()).handle();
    group.bench_function("paced_for/no_view_yet", |b| {
        b.iter(|| black_box(idle.paced_for_tokens(black_box("primary/gpt-4o"), 100)))
    });
    let layer = CircuitLayer::new(CircuitConfig::standard());
    let paced = layer.handle();
    rt.block_on(layer.layer(LIMITED).oneshot(request_with_meta()))
        .unwrap();
    let key = &paced.shared_pacing()[0].key;
    group.bench_function("paced_for/paced_key", |b| {
        b.iter(|| black_box(paced.paced_for_tokens(black_box(key), 100)))
    });
    group.bench_function("system_time_now", |b| b.iter(SystemTime::now));
    group.bench_function("instant_now", |b| b.iter(std::time::Instant::now));
    group.finish();
}

criterion_group!(benches, pacing_overhead);
criterion_main!(benches);
