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
//!   (`memchr`, the floor any line-based scanner pays); and the same stream
//!   as a response body of 1,400-byte frames read to its end, bare / through
//!   `ClassifyLayer` (the streamed path: the body wrapper, the scan and the
//!   `StreamProgress` it publishes) — each without and with a transcript
//!   of what the stream delivered (`capture_transcript`).
//! - `request_meta`: the one parse of a request, `RequestMeta::from_whole_body`
//!   (the outermost layer's), on the 80-byte chat request of the root
//!   `stack` bench and on a 100 KiB conversation — beside serde_json reading
//!   the same `model` and `stream` into a struct (the peer: what a router
//!   that parses the body pays) and a bare `memchr` count of the body's
//!   quotes (the floor of any reader that finds its strings).
//! - `request_parts`: what the parse does besides the body, per call —
//!   `Provider::detect` on hosted and local URIs, and
//!   `Framing::from_header_value` on a JSON and an SSE `content-type`.
//!
//! Futures are polled by hand with a no-op waker (every service here is ready
//! at once), so no runtime overhead is measured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, Request, Response, StatusCode};
use http::{HeaderValue, Uri};
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
    group.bench_function("tower-llm EventScanner + transcript", |b| {
        b.iter(|| {
            let mut scanner =
                EventScanner::new(Framing::Sse, Dialect::OpenAiChat, Provider::OpenAi)
                    .capture_transcript();
            for chunk in &chunks {
                black_box(scanner.feed(chunk));
            }
            assert!(scanner.finish().is_none());
            scanner.content_events()
        })
    });
    let chunks: Arc<[Bytes]> = chunks.into();
    let mut bare = frames_upstream(chunks.clone());
    group.bench_function("body: bare stream (floor)", |b| {
        b.iter_batched(request, |req| call(&mut bare, req), BatchSize::SmallInput)
    });
    let mut classify = ClassifyLayer::new().layer(frames_upstream(chunks.clone()));
    // The stream completes cleanly: every frame, no error after them.
    assert_eq!(call(&mut classify, request()), chunks.len());
    group.bench_function("body: tower-llm Classify streamed", |b| {
        b.iter_batched(
            request,
            |req| call(&mut classify, req),
            BatchSize::SmallInput,
        )
    });
    let mut capturing = ClassifyLayer::new()
        .capture_transcripts(true)
        .layer(frames_upstream(chunks.clone()));
    assert_eq!(call(&mut capturing, request()), chunks.len());
    group.bench_function("body: tower-llm Classify streamed + transcript", |b| {
        b.iter_batched(
            request,
            |req| call(&mut capturing, req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A streamed body: the shared chunks, one frame each (a refcount per
/// frame, as hyper hands out its read buffers).
struct Frames {
    chunks: Arc<[Bytes]>,
    next: usize,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.get(self.next).cloned();
        self.next += 1;
        Poll::Ready(chunk.map(|chunk| Ok(http_body::Frame::data(chunk))))
    }
}

#[allow(clippy::type_complexity)] // the concrete future type keeps polling by hand simple
fn frames_upstream(
    chunks: Arc<[Bytes]>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Frames>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Frames>, Infallible>>,
> {
    tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let body = Frames {
            chunks: chunks.clone(),
            next: 0,
        };
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        std::future::ready(Ok(response))
    })
}

/// The request of the root `stack` bench: 80 bytes.
const STACK_REQUEST_BODY: &[u8] =
    br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in one word."}]}"#;

/// A 100 KiB conversation: 200 turns of chat text with escaped quotes and
/// newlines, the model and stream flag after it.
fn long_request_body() -> Vec<u8> {
    let mut body = String::from(r#"{"messages":["#);
    let turn = r#"{"role":"user","content":"Line one of a question with \"quotes\" and a path C:\\tmp.\nLine two: {\"json\": [1, 2]} and more text to make a turn about half a kilobyte long, as chat turns are. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur."}"#;
    while body.len() < 100 * 1024 {
        body.push_str(turn);
        body.push(',');
    }
    body.push_str(turn);
    body.push_str(r#"],"temperature":0.2,"model":"gpt-4o-mini","stream":true}"#);
    body.into_bytes()
}

/// What a router that parses the body reads: serde_json's peer reading.
#[derive(serde::Deserialize)]
struct ModelAndStream {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

fn request_meta(c: &mut Criterion) {
    let uri: Uri = "https://api.openai.com/v1/chat/completions"
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer sk-test-0123456789abcdef"),
    );
    let long = long_request_body();
    for (name, body) in [("80 B", STACK_REQUEST_BODY), ("100 KiB", &long[..])] {
        let mut group = c.benchmark_group(format!("request_meta/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("tower-llm RequestMeta::from_whole_body", |b| {
            b.iter(|| RequestMeta::from_whole_body(black_box(&uri), &headers, black_box(body)))
        });
        group.bench_function("serde_json into a struct (peer)", |b| {
            b.iter(|| {
                let parsed: ModelAndStream = serde_json::from_slice(black_box(body)).unwrap();
                (parsed.model, parsed.stream)
            })
        });
        group.bench_function("memchr quote count (floor)", |b| {
            b.iter(|| memchr::memchr_iter(b'"', black_box(body)).count())
        });
        group.finish();
    }
}

fn request_parts(c: &mut Criterion) {
    let uris: Vec<Uri> = [
        "https://api.openai.com/v1/chat/completions",
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke",
        "https://api.fireworks.ai/inference/v1/chat/completions",
        "http://localhost:11434/api/chat",
    ]
    .iter()
    .map(|uri| uri.parse().unwrap())
    .collect();
    let mut group = c.benchmark_group("request_parts");
    for uri in &uris {
        let host = uri.host().unwrap();
        group.bench_function(format!("Provider::detect {host}"), |b| {
            b.iter(|| Provider::detect(black_box(uri)))
        });
    }
    for value in ["application/json", "text/event-stream; charset=utf-8"] {
        let value = HeaderValue::from_static(value);
        group.bench_function(format!("Framing::from_header_value {value:?}"), |b| {
            b.iter(|| Framing::from_header_value(black_box(&value)))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    passthrough,
    classify_429,
    sse_scan,
    request_meta,
    request_parts
);
criterion_main!(benches);
