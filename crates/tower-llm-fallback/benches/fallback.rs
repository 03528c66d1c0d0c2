//! Overhead of the fallback service when its first target succeeds, beside
//! the bare target, in one run; the model rewrite on a realistic 4 KiB
//! chat body; and picking one of three deployments of a group, beside
//! tower's `balance::p2c` over `PeakEwma` making the same choice.
//!
//! ```text
//! cargo bench -p tower-llm-fallback --bench fallback
//! cargo bench -p tower-llm-fallback --bench fallback -- pick    # the picks only
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use tower::{Service, ServiceExt};
use tower_llm_classify::LlmError;
use tower_llm_fallback::{Fallback, Target, normalise_model, rewrite_model};
use tower_llm_testkit::ReadyUpstream;

fn chat_body() -> String {
    let filler =
        "Summarise the quarterly report in three bullet points, keeping numbers exact. ".repeat(40);
    format!(
        r#"{{"model":"gpt-4o","temperature":0.2,"stream":false,"messages":[{{"role":"system","content":"You are a careful analyst."}},{{"role":"user","content":"{filler}"}}]}}"#
    )
}

fn request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-caller")
        .body(Full::new(body.clone()))
        .unwrap()
}

/// The targets' upstream: an empty answer, at once.
const UPSTREAM: ReadyUpstream<LlmError> = ReadyUpstream::EMPTY;

/// Picking one of three deployments: ours (no installed check; a check
/// that finds nothing paced, as a stack's while no key has rate-limit
/// headers; a check weighing every member by its headroom, as a stack's
/// once every key has them) and tower's p2c over `PeakEwma`, whose
/// `poll_ready` makes the same choice (two at random, the lower
/// latency-times-load) and whose `call` dispatches to it.
fn pick(c: &mut Criterion) {
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PeakEwma};
    use tower_llm_fallback::{Availability, Candidate, CheckAvailability, Strategy};

    struct Check(Option<f64>);
    impl CheckAvailability for Check {
        fn check(&self, _: &Candidate<'_>) -> Availability {
            Availability::Available
        }
        fn headroom(&self, _: &Candidate<'_>) -> Option<f64> {
            self.0
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let body = Bytes::from(chat_body());
    let mut parts = request(&body).into_parts().0;
    parts
        .extensions
        .insert(tower_llm_classify::RequestMeta::from_request(
            &parts.uri,
            &parts.headers,
            Some(&body),
        ));
    let three = || ["a", "b", "c"].map(|name| Target::new(name, UPSTREAM));
    let mut group = c.benchmark_group("pick_one_of_three");
    let checks: [(&str, Option<Check>); 3] = [
        ("tower_llm_latency", None),
        ("tower_llm_latency_check_nothing_paced", Some(Check(None))),
        ("tower_llm_latency_check_headroom", Some(Check(Some(0.5)))),
    ];
    for (name, check) in checks {
        let mut builder = Fallback::builder()
            .group(Strategy::Latency, three())
            .seed(1);
        if let Some(check) = check {
            builder = builder.check_availability(std::sync::Arc::new(check));
        }
        let fallback = builder.build().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| black_box(fallback.pick_first(black_box(&parts), &body).is_some()))
        });
    }
    let list = ServiceList::new::<Request<Full<Bytes>>>(
        (0..3)
            .map(|_| {
                PeakEwma::new(
                    UPSTREAM,
                    Duration::from_millis(100),
                    10e9,
                    CompleteOnResponse::default(),
                )
            })
            .collect::<Vec<_>>(),
    );
    let mut p2c = Balance::new(list);
    let mut cx = Context::from_waker(Waker::noop());
    // An empty request (no headers, no body to drop): what is timed is
    // the choice and the hand-over.
    group.bench_function("tower_balance_p2c_peak_ewma", |b| {
        b.iter_batched(
            || Request::new(Full::new(Bytes::new())),
            |r| {
                assert!(matches!(
                    Service::<Request<Full<Bytes>>>::poll_ready(&mut p2c, &mut cx),
                    Poll::Ready(Ok(()))
                ));
                black_box(p2c.call(r))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from(chat_body());
    let mut group = c.benchmark_group("fallback_first_target_succeeds");
    group.bench_function("bare_target", |b| {
        b.iter_batched(
            || request(&body),
            |r| rt.block_on(async { black_box(UPSTREAM.oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });
    let same = Fallback::builder()
        .target(
            Target::new("primary", UPSTREAM)
                .base_url("https://api.openai.com".parse().unwrap())
                .credential(
                    HeaderName::from_static("authorization"),
                    HeaderValue::from_static("Bearer sk-primary"),
                ),
        )
        .target(Target::new("backup", UPSTREAM))
        .build()
        .unwrap();
    group.bench_function("fallback_same_model", |b| {
        b.iter_batched(
            || request(&body),
            |r| rt.block_on(async { black_box(same.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });
    let rewritten = Fallback::builder()
        .target(Target::new("primary", UPSTREAM).model("claude-sonnet-4-5"))
        .target(Target::new("backup", UPSTREAM))
        .build()
        .unwrap();
    group.bench_function("fallback_model_rewrite_4k", |b| {
        b.iter_batched(
            || request(&body),
            |r| rt.block_on(async { black_box(rewritten.clone().oneshot(r).await.unwrap()) }),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("model_rewrite");
    assert!(body.len() >= 3_000, "{}", body.len());
    group.bench_function("rewrite_model_4k_body", |b| {
        b.iter(|| black_box(rewrite_model(black_box(&body), "claude-sonnet-4-5").unwrap()))
    });
    let model_last = Bytes::from(
        chat_body()
            .replacen(r#""model":"gpt-4o","#, "", 1)
            .replacen("}]}", r#"}],"model":"gpt-4o"}"#, 1),
    );
    group.bench_function("rewrite_model_4k_body_model_last", |b| {
        b.iter(|| black_box(rewrite_model(black_box(&model_last), "claude-sonnet-4-5").unwrap()))
    });
    // What the stack reads of a body before routing it: one walk for the
    // model and whether the body is unambiguous.
    group.bench_function("stack_reads_the_model_4k_body", |b| {
        b.iter(|| {
            let found = tower_llm_classify::json::model_members(black_box(&body));
            black_box((found.last.is_some(), found.is_unambiguous()))
        })
    });
    group.bench_function("normalise_model_4k_body", |b| {
        b.iter(|| black_box(normalise_model(black_box(&body), "gpt-4o").unwrap()))
    });
    let uri: http::Uri = "https://api.openai.com/v1/chat/completions"
        .parse()
        .unwrap();
    let headers = http::HeaderMap::new();
    group.bench_function("request_meta_4k_body", |b| {
        b.iter(|| {
            black_box(tower_llm_classify::RequestMeta::from_request(
                &uri,
                &headers,
                Some(black_box(&body)),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, overhead, pick);
criterion_main!(benches);
