//! The circuit over real HTTP: hyper client, `ClassifyLayer`, the
//! testkit's simulated providers; paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_llm_circuit::{
    Circuit, CircuitConfig, CircuitHandle, CircuitLayer, CircuitState, Transition, WindowKind,
};
use tower_llm_classify::{Classify, ClassifyLayer, ErrorKind, LlmError};
use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};

type Stack = Circuit<Classify<Client<HttpConnector, Full<Bytes>>>>;

fn config() -> tower_llm_circuit::CircuitConfigBuilder {
    CircuitConfig::builder()
        .window(WindowKind::Count(10))
        .minimum_calls(5)
        .consecutive_failures(Some(3))
        .open_duration(Duration::from_secs(10), 2.0, Duration::from_secs(60))
        .open_jitter(0.0)
        .half_open_probes(2)
}

fn stack(layer: &CircuitLayer) -> Stack {
    layer.layer(ClassifyLayer::new().layer(Client::builder(TokioExecutor::new()).build_http()))
}

fn request(sim: &Simulator, model: &str, stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    Request::post(sim.url(Api::OpenAiChat))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap()
}

/// One call, body read to the end; the error of the call or of its body.
async fn call(service: &Stack, request: Request<Full<Bytes>>) -> Result<(), ErrorKind> {
    match service.clone().oneshot(request).await {
        Ok(response) => match response.into_body().collect().await {
            Ok(_) => Ok(()),
            Err(error) => Err(error.kind()),
        },
        Err(error) => Err(error.kind()),
    }
}

fn state(handle: &CircuitHandle, model: &str) -> Option<CircuitState> {
    handle.state(&format!("openai_compatible/{model}"))
}

#[tokio::test(start_paused = true)]
async fn consecutive_overloads_open_the_circuit_and_spare_the_provider() {
    let sim = Simulator::builder()
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    for _ in 0..3 {
        assert_eq!(
            call(&service, request(&sim, "m", false)).await,
            Err(ErrorKind::Overloaded)
        );
    }
    let error = service
        .clone()
        .oneshot(request(&sim, "m", false))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    assert!(!error.retryable());
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(10))
    );
    assert!(error.to_string().contains("openai_compatible/m"), "{error}");
    assert_eq!(sim.requests().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn client_errors_count_as_successes_of_the_target() {
    let sim = Simulator::start().await.unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    for fault in [
        Fault::context_length_exceeded(),
        Fault::content_filtered(),
        Fault::model_not_found(),
        Fault::status(400),
    ] {
        sim.set_plan(fault);
        for _ in 0..5 {
            assert!(call(&service, request(&sim, "m", false)).await.is_err());
        }
    }
    let snapshot = &layer.handle().snapshot()[0];
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!((snapshot.totals.calls, snapshot.totals.failures), (10, 0));
}

#[tokio::test(start_paused = true)]
async fn a_mid_stream_error_counts_as_a_failure_when_the_stream_ends() {
    let sim = Simulator::builder()
        .reply_tokens(4)
        .plan(Fault::stream_error_after(2))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    let handle = layer.handle();
    // The head is a 200: nothing is recorded until the body ends.
    let response = service
        .clone()
        .oneshot(request(&sim, "m", true))
        .await
        .unwrap();
    assert_eq!(handle.snapshot()[0].totals.calls, 0);
    assert!(response.into_body().collect().await.is_err());
    assert_eq!(handle.snapshot()[0].totals.failures, 1);
    for _ in 0..2 {
        assert_eq!(
            call(&service, request(&sim, "m", true)).await,
            Err(ErrorKind::Overloaded)
        );
    }
    assert_eq!(state(&handle, "m"), Some(CircuitState::Open));
}

#[tokio::test(start_paused = true)]
async fn a_hinted_rate_limit_cools_the_key_down_without_counting_a_failure() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::rate_limited(
            Duration::from_secs(5),
        )]))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::RateLimited)
    );
    // During the cooldown: fail fast, with the wait, as a retryable rate limit.
    tokio::time::advance(Duration::from_secs(2)).await;
    let error = service
        .clone()
        .oneshot(request(&sim, "m", false))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert!(error.retryable());
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(3))
    );
    assert_eq!(sim.requests().len(), 1, "the provider was spared");
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    let snapshot = &layer.handle().snapshot()[0];
    assert_eq!(
        (snapshot.state, snapshot.totals.failures),
        (CircuitState::Closed, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn without_rate_limit_cooldowns_the_next_call_still_reaches_the_provider() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::rate_limited(
            Duration::from_secs(5),
        )]))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().rate_limit_cooldown(false).build().unwrap());
    let service = stack(&layer);
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::RateLimited)
    );
    // No cooldown: the next call is the provider's to answer.
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(sim.requests().len(), 2);
    assert_eq!(layer.handle().snapshot()[0].cooldown_remaining, None);
}

#[tokio::test(start_paused = true)]
async fn quota_exhausted_cools_the_key_down_for_long() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::quota_exhausted()]))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(
        config()
            .quota_cooldown(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    let service = stack(&layer);
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::QuotaExhausted)
    );
    tokio::time::advance(Duration::from_secs(1800)).await;
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::RateLimited)
    );
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent() {
    let sim = Simulator::start().await.unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    sim.set_plan(Fault::server_error(500));
    for _ in 0..3 {
        let _ = call(&service, request(&sim, "broken", false)).await;
    }
    sim.set_plan(Fault::ok());
    assert_eq!(
        call(&service, request(&sim, "healthy", false)).await,
        Ok(())
    );
    let handle = layer.handle();
    assert_eq!(state(&handle, "broken"), Some(CircuitState::Open));
    assert_eq!(state(&handle, "healthy"), Some(CircuitState::Closed));
}

#[tokio::test(start_paused = true)]
async fn an_outage_then_recovery_closes_the_circuit_after_the_probes() {
    let sim = Simulator::builder()
        .plan(Fault::server_error(503))
        .start()
        .await
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let layer = CircuitLayer::with_events(config().build().unwrap(), move |t: &Transition| {
        sink.lock().unwrap().push((t.from, t.to));
    });
    let service = stack(&layer);
    for _ in 0..3 {
        let _ = call(&service, request(&sim, "m", false)).await;
    }
    sim.set_plan(Fault::ok()); // the provider recovers
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::CircuitOpen)
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(state(&layer.handle(), "m"), Some(CircuitState::Closed));
    assert_eq!(
        *events.lock().unwrap(),
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed)
        ]
    );
    assert_eq!(sim.requests().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_midway_releases_its_permit() {
    let sim = Simulator::builder()
        .plan(Fault::server_error(503))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().half_open_probes(1).build().unwrap());
    let service = stack(&layer);
    for _ in 0..3 {
        let _ = call(&service, request(&sim, "m", false)).await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    sim.set_plan(Fault::stall());
    // The one probe hangs; its caller gives up.
    let probe = service.clone().oneshot(request(&sim, "m", false));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), probe)
            .await
            .is_err()
    );
    // The permit came back: the next caller probes, and it succeeds.
    sim.set_plan(Fault::ok());
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(state(&layer.handle(), "m"), Some(CircuitState::Closed));
}

#[tokio::test(start_paused = true)]
async fn forced_open_fails_every_call_until_reset() {
    let sim = Simulator::start().await.unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    let handle = layer.handle();
    handle.force_open("openai_compatible/m");
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::CircuitOpen)
    );
    handle.reset("openai_compatible/m");
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_to_keep_the_registry_bounded() {
    let sim = Simulator::start().await.unwrap();
    let layer = CircuitLayer::new(
        config()
            .max_keys(16)
            .idle_eviction(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let service = stack(&layer);
    for i in 0..200 {
        assert_eq!(
            call(&service, request(&sim, &format!("model-{i}"), false)).await,
            Ok(())
        );
    }
    assert!(layer.handle().keys() <= 16, "{}", layer.handle().keys());
}

#[tokio::test(start_paused = true)]
async fn clones_and_relayered_services_share_the_breakers() {
    let sim = Simulator::builder()
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let (a, b) = (stack(&layer), stack(&layer));
    let _ = call(&a, request(&sim, "m", false)).await;
    let _ = call(&b, request(&sim, "m", false)).await;
    let _ = call(&a.clone(), request(&sim, "m", false)).await;
    assert_eq!(
        call(&b, request(&sim, "m", false)).await,
        Err(ErrorKind::CircuitOpen)
    );
}

#[tokio::test(start_paused = true)]
async fn retry_over_circuit_stops_at_an_open_circuit() {
    use tower_llm_retry::{RetryLayer, RetryPolicy, RetryStats};
    let sim = Simulator::builder()
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let circuit = CircuitLayer::new(config().build().unwrap());
    let client = Client::builder(TokioExecutor::new()).build_http();
    let service = RetryLayer::new(
        RetryPolicy::builder()
            .max_attempts(10)
            .seed(1)
            .build()
            .unwrap(),
    )
    .layer(circuit.layer(ClassifyLayer::new().layer(client)));
    let error: LlmError = service
        .oneshot(request(&sim, "m", false))
        .await
        .unwrap_err();
    // Three overloads trip the circuit; the fourth attempt meets it open and
    // the retry layer gives up at once (a fallback would move on).
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    assert_eq!(RetryStats::of(error.extensions()).attempts, 4);
    assert_eq!(sim.requests().len(), 3);
}

#[test]
fn counts_are_exact_when_several_threads_hammer_one_key() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = CircuitLayer::new(
            config()
                .window(WindowKind::Time(600))
                .minimum_calls(1_000_000)
                .consecutive_failures(None)
                .build()
                .unwrap(),
        );
        let upstream = tower::service_fn(|request: Request<Full<Bytes>>| async move {
            let failing = request.headers().contains_key("x-fail");
            if failing {
                Err(LlmError::new(tower_llm_classify::Classification::new(
                    ErrorKind::ServerError,
                )))
            } else {
                Ok(http::Response::new(Full::<Bytes>::from("ok")))
            }
        });
        let service = layer.layer(upstream);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16 {
            let service = service.clone();
            tasks.spawn(async move {
                for i in 0..12_500 {
                    let mut request = Request::post("http://api.openai.com/v1/chat/completions")
                        .body(Full::<Bytes>::from(r#"{"model":"gpt-4o"}"#))
                        .unwrap();
                    if (i + t) % 5 == 0 {
                        request.headers_mut().insert("x-fail", "1".parse().unwrap());
                    }
                    if let Ok(response) = service.clone().oneshot(request).await {
                        let _ = response.into_body().collect().await;
                    }
                }
            });
        }
        tasks.join_all().await;
        let snapshot = &layer.handle().snapshot()[0];
        assert_eq!(snapshot.totals.calls, 200_000);
        assert_eq!(snapshot.totals.failures, 40_000);
        assert_eq!(snapshot.state, CircuitState::Closed);
    });
}

#[tokio::test(start_paused = true)]
async fn a_stream_slow_to_its_first_event_counts_as_slow() {
    let sim = Simulator::builder()
        .reply_tokens(2)
        .plan(Fault::latency(Duration::from_secs(8)))
        .start()
        .await
        .unwrap();
    let config = config()
        .consecutive_failures(None)
        .slow_calls(Duration::from_secs(600), 100.0)
        .slow_first_content(Duration::from_secs(5))
        .build()
        .unwrap();
    let layer = CircuitLayer::new(config);
    let service = stack(&layer);
    for _ in 0..5 {
        assert_eq!(call(&service, request(&sim, "m", true)).await, Ok(()));
    }
    let snapshot = &layer.handle().snapshot()[0];
    assert_eq!((snapshot.totals.calls, snapshot.totals.slow), (5, 5));
    assert_eq!(snapshot.state, CircuitState::Open, "every call slow: 100 %");
}

#[tokio::test(start_paused = true)]
async fn a_slow_failure_opens_for_the_full_interval_from_when_it_ended() {
    // A 60 s timeout-like failure with a count window (no clock needed on
    // success): the open interval starts when the failure is known.
    let sim = Simulator::builder()
        .plan(Fault::server_error(500).with_latency(Duration::from_secs(60)))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().consecutive_failures(Some(1)).build().unwrap());
    let service = stack(&layer);
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::ServerError)
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    let error = service
        .clone()
        .oneshot(request(&sim, "m", false))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    assert_eq!(
        error.classification().retry_after(),
        Some(Duration::from_secs(5))
    );
}

#[tokio::test(start_paused = true)]
async fn without_classify_below_an_error_status_still_counts() {
    let sim = Simulator::builder()
        .plan(Fault::server_error(503))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let bare: Circuit<Client<HttpConnector, Full<Bytes>>> =
        layer.layer(Client::builder(TokioExecutor::new()).build_http());
    for _ in 0..3 {
        let response = bare
            .clone()
            .oneshot(request(&sim, "m", false))
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
    }
    let error = bare
        .clone()
        .oneshot(request(&sim, "m", false))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn a_new_layer_never_sees_a_dropped_layer_s_breakers() {
    let sim = Simulator::start().await.unwrap();
    for _ in 0..20 {
        // Each layer forces the key open, is used, then dropped; the next
        // one (perhaps at the same address) starts closed.
        let layer = CircuitLayer::new(config().build().unwrap());
        let service = stack(&layer);
        assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
        layer.handle().force_open("openai_compatible/m");
        assert_eq!(
            call(&service, request(&sim, "m", false)).await,
            Err(ErrorKind::CircuitOpen)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_state_set_by_hand_survives_idle_eviction() {
    let sim = Simulator::start().await.unwrap();
    let layer = CircuitLayer::new(
        config()
            .max_keys(16)
            .idle_eviction(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let service = stack(&layer);
    layer.handle().force_open("openai_compatible/pinned");
    tokio::time::advance(Duration::from_secs(3600)).await;
    for i in 0..100 {
        let _ = call(&service, request(&sim, &format!("model-{i}"), false)).await;
    }
    assert_eq!(
        state(&layer.handle(), "pinned"),
        Some(CircuitState::ForcedOpen)
    );
}

#[tokio::test(start_paused = true)]
async fn a_health_probe_closes_an_open_key_before_its_interval_ends() {
    use tower_llm_circuit::ProbeResult;
    let sim = Simulator::builder()
        .plan(Fault::server_error(503))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    for _ in 0..3 {
        let _ = call(&service, request(&sim, "m", false)).await;
    }
    let handle = layer.handle();
    let key = "openai_compatible/m";
    assert_eq!(handle.open_keys(), vec![std::sync::Arc::<str>::from(key)]);
    // The provider's health endpoint says it is back (the plan is healthy).
    sim.set_plan(Fault::ok());
    let health = format!("{}/health", sim.base_url());
    let probe = async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        client
            .get(health.parse().unwrap())
            .await
            .is_ok_and(|r| r.status().is_success())
    };
    assert_eq!(
        handle.probe(key, async { false }).await,
        ProbeResult::StillOpen
    );
    assert_eq!(handle.probe(key, probe).await, ProbeResult::Closed);
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(
        handle.probe(key, async { true }).await,
        ProbeResult::NotOpen
    );
}

/// An Anthropic stream whose preamble and ping come at once and whose
/// first content event comes `gap` later.
struct LateContent {
    step: u8,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for LateContent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match self.step {
            0 => {
                self.step = 1;
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                    b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n",
                )))))
            }
            1 => {
                std::task::ready!(self.sleep.as_mut().poll(cx));
                self.step = 2;
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                    b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
                )))))
            }
            _ => Poll::Ready(None),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_content_not_the_first_bytes_times_a_stream() {
    let layer = CircuitLayer::new(
        config()
            .consecutive_failures(None)
            .slow_calls(Duration::from_secs(600), 100.0)
            .slow_first_content(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let upstream = tower::service_fn(|_: Request<Full<Bytes>>| async {
        let body = LateContent {
            step: 0,
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(8))),
        };
        let mut response = http::Response::new(body);
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        Ok::<_, LlmError>(response)
    });
    let service = layer.layer(upstream);
    let request = Request::post("https://api.anthropic.com/v1/messages")
        .body(Full::from(
            r#"{"model":"claude","stream":true,"messages":[]}"#,
        ))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let _ = response.into_body().collect().await.unwrap();
    let snapshot = &layer.handle().snapshot()[0];
    // The ping came at once; the content 8 s later: a slow start.
    assert_eq!((snapshot.totals.calls, snapshot.totals.slow), (1, 1));
    let _ = std::pin::pin!(async {})
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
}

/// Anthropic answers a spent balance with a 400 whose message alone says
/// so. Read from the text of a 4xx, the verdict may be the caller's own text
/// echoed back, so it is reported as a quota but cools nothing down.
#[tokio::test(start_paused = true)]
async fn a_quota_read_from_a_4xx_message_alone_cools_nothing_down() {
    let billing = "Your credit balance is too low to access the Anthropic API. \
                   Please go to Plans & Billing to upgrade or purchase credits.";
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::fail(
            tower_llm_testkit::Failure::InvalidRequest(billing.into()),
        )]))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(
        config()
            .quota_cooldown(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    let service = stack(&layer);
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::QuotaExhausted)
    );
    // No cooldown: the next call reaches the provider (and is served).
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(sim.requests().len(), 2);
    assert_eq!(state(&layer.handle(), "m"), Some(CircuitState::Closed));
}

/// A capacity phrase echoed in a 400 is the caller's text, not a verdict:
/// only whole provider templates count, so the request is invalid and the
/// breaker stays closed however often it is sent.
#[tokio::test(start_paused = true)]
async fn an_echoed_capacity_phrase_in_a_400_never_opens_the_breaker() {
    let echo = "Unrecognized request argument supplied: no capacity available";
    let sim = Simulator::builder()
        .plan(FaultPlan::always(Fault::fail(
            tower_llm_testkit::Failure::InvalidRequest(echo.into()),
        )))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    for _ in 0..10 {
        assert_eq!(
            call(&service, request(&sim, "m", false)).await,
            Err(ErrorKind::InvalidRequest)
        );
    }
    assert_eq!(sim.requests().len(), 10);
    assert_eq!(state(&layer.handle(), "m"), Some(CircuitState::Closed));
}

/// Mistral's 429 "Service tier capacity exceeded for this model." is read
/// as overload from its message; the text alone starts no cooldown, but
/// the 429's own `retry-after` still does, as for any hinted 429.
#[tokio::test(start_paused = true)]
async fn a_429_read_as_overload_from_its_message_still_cools_down_for_its_hint() {
    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after", http::HeaderValue::from_static("30"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let body = r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"invalid_request_error","param":null,"code":null}"#;
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::raw(
            http::StatusCode::TOO_MANY_REQUESTS,
            headers,
            body,
        )]))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().build().unwrap());
    let service = stack(&layer);
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::Overloaded)
    );
    // Cooling down: refused locally until the hinted instant.
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::RateLimited)
    );
    assert_eq!(sim.requests().len(), 1);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
    assert_eq!(sim.requests().len(), 2);
}

/// A hint may ask for up to two days; a rate limit's cooldown is capped at
/// the quota cooldown, so one header cannot shut a key for days.
#[tokio::test(start_paused = true)]
async fn a_rate_limit_cooldown_is_capped_at_the_quota_cooldown() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::rate_limited(
            Duration::from_secs(99_999_999),
        )]))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(
        config()
            .quota_cooldown(Duration::from_secs(600))
            .build()
            .unwrap(),
    );
    let service = stack(&layer);
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::RateLimited)
    );
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(
        call(&service, request(&sim, "m", false)).await,
        Err(ErrorKind::RateLimited)
    );
    assert_eq!(sim.requests().len(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(call(&service, request(&sim, "m", false)).await, Ok(()));
}

/// With overload not counted (a key with nowhere else to go), a provider
/// that sheds every call stays reachable: busy is not down.
#[tokio::test(start_paused = true)]
async fn with_overload_not_counted_shed_answers_never_open_the_breaker() {
    let sim = Simulator::builder()
        .plan(FaultPlan::always(Fault::overloaded()))
        .start()
        .await
        .unwrap();
    let layer = CircuitLayer::new(config().count_overload(false).build().unwrap());
    let service = stack(&layer);
    for _ in 0..10 {
        assert_eq!(
            call(&service, request(&sim, "m", false)).await,
            Err(ErrorKind::Overloaded)
        );
    }
    assert_eq!(sim.requests().len(), 10);
    assert_eq!(state(&layer.handle(), "m"), Some(CircuitState::Closed));
    // A server error still counts.
    sim.set_plan(FaultPlan::always(Fault::server_error(500)));
    for _ in 0..3 {
        let _ = call(&service, request(&sim, "m", false)).await;
    }
    assert_eq!(state(&layer.handle(), "m"), Some(CircuitState::Open));
}
