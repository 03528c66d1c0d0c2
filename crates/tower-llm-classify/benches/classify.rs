//! What the classify layer costs, beside the bare service and tower-http's
//! classifier, in one run:
//!
//! - `passthrough_2xx`: one call returning a 2xx response whose body is read
//!   to the end — bare service / `ClassifyLayer` (computing `RequestMeta`, and
//!   with it already present) / tower-http `TraceLayer::new_for_http()` (its
//!   response classification and body wrapper; no subscriber installed).
//! - `classify_429`: classifying an OpenAI 429 JSON error — ours (reads the
//!   body, tells `insufficient_quota` from a rate limit, reads the hint) /
//!   tower-http `ServerErrorsAsFailures` (status only).
//! - `sse_scan`: scanning a realistic 2,000-event OpenAI chat stream split in
//!   network-sized chunks — our `EventScanner` / a bare newline count
//!   (`memchr`, the floor any line-based scanner pays).
//!
//! Futures are polled by hand with a no-op waker (every service here is ready
//! at once), so no runtime overhead is measured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower::{Layer, Service};
use tower_http::classify::{ClassifyResponse, ServerErrorsAsFailures};
use tower_llm_classify::stream::{Dialect, EventScanner, Framing};
use tower_llm_classify::{ClassifyLayer, Provider, RequestMeta, classify_response};

const REQUEST_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi."}],"stream":false}"#;
const RESPONSE_BODY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi."},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":2,"total_tokens":21}}"#;

fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked service is always ready"),
    }
}

fn drain<B: Body + Unpin>(mut body: B) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut frames = 0;
    while let Poll::Ready(Some(frame)) = std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        if frame.is_ok() {
            frames += 1;
        } else {
            break;
        }
    }
    frames
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REQUEST_BODY.as_bytes())))
        .unwrap()
}

fn request_with_meta() -> Request<Full<Bytes>> {
    let mut request = request();
    let meta = RequestMeta::from_request(
        request.uri(),
        request.headers(),
        Some(REQUEST_BODY.as_bytes()),
    );
    request.extensions_mut().insert(meta);
    request
}

#[allow(clippy::type_complexity)] // the concrete future type keeps polling by hand simple
fn upstream() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
> + Clone {
    tower::service_fn(|_req: Request<Full<Bytes>>| {
        let mut response = Response::new(Full::new(Bytes::from_static(RESPONSE_BODY.as_bytes())));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        std::future::ready(Ok(response))
    })
}

fn call<S, B>(service: &mut S, request: Request<Full<Bytes>>) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
{
    now_or_never(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
    let response = now_or_never(service.call(request)).unwrap();
    drain(response.into_body())
}

fn passthrough(c: &mut Criterion) {
    let mut group = c.benchmark_group("passthrough_2xx");
    let mut bare = upstream();
    group.bench_function("bare", |b| {
        b.iter_batched(request, |req| call(&mut bare, req), BatchSize::SmallInput)
    });
    // The same request as "classify (meta present)": dropping its extension
    // map is part of both.
    group.bench_function("bare (request with meta)", |b| {
        b.iter_batched(
            request_with_meta,
            |req| call(&mut bare, req),
            BatchSize::SmallInput,
        )
    });
    let mut classify = ClassifyLayer::new().layer(upstream());
    group.bench_function("classify (meta computed)", |b| {
        b.iter_batched(
            request,
            |req| call(&mut classify, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("classify (meta present)", |b| {
        b.iter_batched(
            request_with_meta,
            |req| call(&mut classify, req),
            BatchSize::SmallInput,
        )
    });
    let mut trace = tower_http::trace::TraceLayer::new_for_http().layer(upstream());
    group.bench_function("tower-http TraceLayer", |b| {
        b.iter_batched(request, |req| call(&mut trace, req), BatchSize::SmallInput)
    });
    group.finish();
}

fn classify_429(c: &mut Criterion) {
    let body = Bytes::from_static(br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29760, Requested 1200. Please try again in 1.92s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#);
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("x-request-id", "req_6e2f8d3c9b1a4e7f"),
        ("retry-after", "2"),
        ("retry-after-ms", "1920"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "1.92s"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    let now = SystemTime::now();
    let mut group = c.benchmark_group("classify_429");
    group.bench_function("tower-llm classify_response", |b| {
        b.iter(|| {
            classify_response(
                black_box(Provider::OpenAi),
                black_box(StatusCode::TOO_MANY_REQUESTS),
                black_box(&headers),
                black_box(&body),
                now,
            )
        })
    });
    let response = {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        *r.headers_mut() = headers.clone();
        r
    };
    group.bench_function("tower-http ServerErrorsAsFailures (status only)", |b| {
        b.iter(|| ServerErrorsAsFailures::new().classify_response(black_box(&response)))
    });
    group.finish();
}

/// A realistic OpenAI chat stream: a role chunk, 2,000 content chunks, a
/// finish chunk, a usage chunk and `[DONE]`, split in 1,400-byte chunks.
fn openai_stream() -> (Vec<Bytes>, usize) {
    let mut text = String::new();
    text.push_str("data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1763899200,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    let words = [
        "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
    ];
    for i in 0..2000 {
        text.push_str(&format!("data: {{\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1763899200,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n", words[i % words.len()]));
    }
    text.push_str("data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1763899200,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n");
    text.push_str("data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1763899200,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2000,\"total_tokens\":2019}}\n\ndata: [DONE]\n\n");
    let bytes = Bytes::from(text);
    let total = bytes.len();
    let chunks = (0..total)
        .step_by(1400)
        .map(|at| bytes.slice(at..(at + 1400).min(total)))
        .collect();
    (chunks, total)
}

fn sse_scan(c: &mut Criterion) {
    let (chunks, total) = openai_stream();
    let mut group = c.benchmark_group("sse_scan");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("newline count (floor)", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|chunk| memchr::memchr_iter(b'\n', chunk).count())
                .sum::<usize>()
        })
    });
    group.bench_function("tower-llm EventScanner", |b| {
        b.iter(|| {
            let mut scanner =
                EventScanner::new(Framing::Sse, Dialect::OpenAiChat, Provider::OpenAi);
            for chunk in &chunks {
                black_box(scanner.feed(chunk));
            }
            assert!(scanner.finish().is_none());
            scanner.content_events()
        })
    });
    group.finish();
}

criterion_group!(benches, passthrough, classify_429, sse_scan);
criterion_main!(benches);
