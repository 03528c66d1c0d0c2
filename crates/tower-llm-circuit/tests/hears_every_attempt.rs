//! The breaker hears every failed attempt, including those the retry layer
//! above it ends: an attempt timeout, the deadline, an error the
//! first-content guard read before the caller saw anything. A caller that
//! goes away is still not a verdict on the target. Retry → Circuit →
//! Classify → hyper over real HTTP against the testkit; paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_llm_circuit::{
    Circuit, CircuitConfig, CircuitConfigBuilder, CircuitHandle, CircuitLayer, CircuitState,
    WindowKind,
};
use tower_llm_classify::{Classify, ClassifyLayer, ErrorKind};
use tower_llm_retry::{Backoff, ReplayBody, Retry, RetryLayer, RetryPolicy, RetryPolicyBuilder};
use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};

type Stack = Retry<Circuit<Classify<Client<HttpConnector, ReplayBody>>>>;

/// Opens after three failures in a row, for 10 s, one probe.
fn breaker() -> CircuitConfigBuilder {
    CircuitConfig::builder()
        .window(WindowKind::Count(10))
        .minimum_calls(10)
        .consecutive_failures(Some(3))
        .open_duration(Duration::from_secs(10), 2.0, Duration::from_secs(60))
        .open_jitter(0.0)
        .half_open_probes(1)
}

/// Three attempts, a short constant backoff, no budget (every retry is made).
fn retry() -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .seed(1)
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .no_budget()
}

fn stack(policy: RetryPolicy, circuit: &CircuitLayer) -> Stack {
    let client = Client::builder(TokioExecutor::new()).build_http();
    RetryLayer::new(policy).layer(circuit.layer(ClassifyLayer::new().layer(client)))
}

async fn sim(plan: impl Into<FaultPlan>) -> Simulator {
    Simulator::builder()
        .reply_tokens(4)
        .plan(plan)
        .start()
        .await
        .unwrap()
}

fn request(sim: &Simulator, api: Api, stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"m","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    Request::post(sim.url(api))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap()
}

/// One call, body read to the end: `Ok` or the kind of the failure.
async fn call(service: &Stack, request: Request<Full<Bytes>>) -> Result<(), ErrorKind> {
    match service.clone().oneshot(request).await {
        Ok(response) => match response.into_body().collect().await {
            Ok(_) => Ok(()),
            Err(error) => Err(error.kind()),
        },
        Err(error) => Err(error.kind()),
    }
}

fn only_key(handle: &CircuitHandle) -> tower_llm_circuit::KeySnapshot {
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    snapshot[0].clone()
}

/// The breaker is open after `failures` counted failures; the next call is
/// refused without reaching the upstream, which saw `upstream_calls` in all.
async fn assert_open_and_spared(
    service: &Stack,
    circuit: &CircuitLayer,
    sim: &Simulator,
    (api, stream): (Api, bool),
    failures: u64,
    upstream_calls: usize,
) {
    let key = only_key(&circuit.handle());
    assert_eq!(
        (key.state, key.totals.failures),
        (CircuitState::Open, failures),
        "{key:?}"
    );
    assert_eq!(
        call(service, request(sim, api, stream)).await,
        Err(ErrorKind::CircuitOpen)
    );
    assert_eq!(sim.requests().len(), upstream_calls);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_silent_upstream_opens_the_breaker_through_attempt_timeouts_and_is_no_longer_called() {
    let sim = sim(Fault::stall()).await;
    let circuit = CircuitLayer::new(breaker().build().unwrap());
    let service = stack(
        retry()
            .attempt_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        &circuit,
    );
    // Three attempts, each ended by its timeout: three timeout failures.
    assert_eq!(
        call(&service, request(&sim, Api::OpenAiChat, false)).await,
        Err(ErrorKind::Timeout)
    );
    // The next call fails at once; the silent upstream is spared.
    assert_open_and_spared(&service, &circuit, &sim, (Api::OpenAiChat, false), 3, 3).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn attempts_the_deadline_ends_count_as_timeouts() {
    let sim = sim(Fault::stall()).await;
    let circuit = CircuitLayer::new(breaker().build().unwrap());
    // One attempt per call, cut by the deadline (no attempt timeout).
    let service = stack(
        retry()
            .max_attempts(1)
            .deadline(Duration::from_secs(5))
            .build()
            .unwrap(),
        &circuit,
    );
    for _ in 0..3 {
        assert_eq!(
            call(&service, request(&sim, Api::OpenAiChat, false)).await,
            Err(ErrorKind::Timeout)
        );
    }
    assert_eq!(only_key(&circuit.handle()).state, CircuitState::Open);
    assert_eq!(
        call(&service, request(&sim, Api::OpenAiChat, false)).await,
        Err(ErrorKind::CircuitOpen)
    );
    assert_eq!(sim.requests().len(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_overloaded_error_as_the_first_stream_event_opens_the_breaker_with_the_guard_on() {
    // A 200 whose first SSE event is Anthropic's `overloaded_error`.
    let sim = sim(Fault::stream_error_after(0)).await;
    let circuit = CircuitLayer::new(breaker().build().unwrap());
    let service = stack(retry().first_content_guard(true).build().unwrap(), &circuit);
    // The guard retries each one invisibly; the breaker still hears all three.
    assert_eq!(
        call(&service, request(&sim, Api::AnthropicMessages, true)).await,
        Err(ErrorKind::Overloaded)
    );
    assert_open_and_spared(
        &service,
        &circuit,
        &sim,
        (Api::AnthropicMessages, true),
        3,
        3,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_dropped_before_content_counts_with_the_guard_on() {
    let sim = sim(Fault::stream_drop_after(0)).await;
    let circuit = CircuitLayer::new(breaker().build().unwrap());
    let service = stack(retry().first_content_guard(true).build().unwrap(), &circuit);
    assert!(
        call(&service, request(&sim, Api::AnthropicMessages, true))
            .await
            .is_err()
    );
    assert_open_and_spared(
        &service,
        &circuit,
        &sim,
        (Api::AnthropicMessages, true),
        3,
        3,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stream_silent_before_content_counts_when_the_attempt_timeout_ends_it() {
    // Headers at once, then keep-alives and no content: the guard holds
    // the stream, the attempt timeout ends it.
    let sim = sim(Fault::stream_stall_after(0)).await;
    let circuit = CircuitLayer::new(breaker().build().unwrap());
    let service = stack(
        retry()
            .attempt_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        &circuit,
    );
    assert_eq!(
        call(&service, request(&sim, Api::AnthropicMessages, true)).await,
        Err(ErrorKind::Timeout)
    );
    assert_eq!(only_key(&circuit.handle()).state, CircuitState::Open);
    assert_eq!(sim.requests().len(), 3);
}

/// A breaker opened by three overloads (answers it hears without this
/// change too), over a stack with one attempt of at most 2 s per call.
async fn opened_by_overloads() -> (Simulator, CircuitLayer, Stack) {
    let sim = sim(Fault::overloaded()).await;
    let circuit = CircuitLayer::new(breaker().build().unwrap());
    let service = stack(
        retry()
            .max_attempts(1)
            .attempt_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        &circuit,
    );
    for _ in 0..3 {
        assert_eq!(
            call(&service, request(&sim, Api::OpenAiChat, false)).await,
            Err(ErrorKind::Overloaded)
        );
    }
    assert_eq!(only_key(&circuit.handle()).state, CircuitState::Open);
    (sim, circuit, service)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_half_open_probe_ended_by_the_attempt_timeout_reopens_the_breaker() {
    let (sim, circuit, service) = opened_by_overloads().await;
    let handle = circuit.handle();
    sim.set_plan(Fault::stall());
    tokio::time::advance(Duration::from_secs(10)).await;
    // The one probe: still silent, ended by the attempt timeout.
    assert_eq!(
        call(&service, request(&sim, Api::OpenAiChat, false)).await,
        Err(ErrorKind::Timeout)
    );
    assert_eq!(sim.requests().len(), 4);
    // The probe concluded: open again (for 20 s now), not half-open with
    // its permit handed back for the next caller to wait out.
    let key = only_key(&handle);
    assert_eq!(key.state, CircuitState::Open, "{key:?}");
    assert_eq!(key.open_remaining, Some(Duration::from_secs(20)));
    assert_eq!(
        call(&service, request(&sim, Api::OpenAiChat, false)).await,
        Err(ErrorKind::CircuitOpen)
    );
    assert_eq!(sim.requests().len(), 4);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_caller_dropping_the_call_is_not_counted_with_or_without_an_attempt_timeout() {
    let sim = sim(Fault::stall()).await;
    for policy in [
        retry().build().unwrap(),
        retry()
            .attempt_timeout(Duration::from_secs(30))
            .deadline(Duration::from_secs(120))
            .build()
            .unwrap(),
    ] {
        let circuit = CircuitLayer::new(breaker().build().unwrap());
        let service = stack(policy, &circuit);
        for _ in 0..5 {
            // The caller gives up after a second (its own timeout, a
            // client that went away): not the target's failure.
            let called = tokio::time::timeout(
                Duration::from_secs(1),
                call(&service, request(&sim, Api::OpenAiChat, false)),
            )
            .await;
            assert!(called.is_err(), "the upstream never answers");
        }
        let key = only_key(&circuit.handle());
        assert_eq!(
            (key.state, key.totals.calls, key.totals.failures),
            (CircuitState::Closed, 0, 0),
            "{key:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_half_open_probe_the_caller_drops_gives_its_permit_back() {
    let (sim, circuit, service) = opened_by_overloads().await;
    let handle = circuit.handle();
    sim.set_plan(Fault::stall());
    tokio::time::advance(Duration::from_secs(10)).await;
    // The probe's caller goes away before the attempt timeout.
    let dropped = tokio::time::timeout(
        Duration::from_secs(1),
        call(&service, request(&sim, Api::OpenAiChat, false)),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(only_key(&handle).state, CircuitState::HalfOpen);
    // The permit is back: the next caller is the probe.
    sim.set_plan(Fault::ok());
    assert_eq!(
        call(&service, request(&sim, Api::OpenAiChat, false)).await,
        Ok(())
    );
    assert_eq!(only_key(&handle).state, CircuitState::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_a_time_limit_the_guard_reports_an_error_event_even_without_classify_below() {
    // Retry → Circuit → a client that answers 200 with Anthropic's
    // overload as the first event and keeps the stream open; nothing below
    // the circuit reads it.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&calls);
    let client = tower::service_fn(move |_: Request<ReplayBody>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(OpenAfter::new(
                        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                    ))
                    .unwrap(),
            )
        }
    });
    let circuit = CircuitLayer::new(breaker().build().unwrap());
    let service = RetryLayer::new(
        retry()
            .attempt_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
    .layer(circuit.layer(client));
    let request = || {
        Request::post("https://api.anthropic.com/v1/messages")
            .header("content-type", "application/json")
            .body(Full::<Bytes>::from(
                r#"{"model":"m","max_tokens":64,"stream":true,"messages":[]}"#,
            ))
            .unwrap()
    };
    let error = service.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert_eq!(only_key(&circuit.handle()).state, CircuitState::Open);
    let error = service.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A body that sends one frame, then stays open without another.
struct OpenAfter(Option<Bytes>);

impl OpenAfter {
    fn new(frame: &'static str) -> Self {
        OpenAfter(Some(Bytes::from_static(frame.as_bytes())))
    }
}

impl http_body::Body for OpenAfter {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(data) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
            None => std::task::Poll::Pending,
        }
    }
}
