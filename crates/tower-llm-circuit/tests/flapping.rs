//! A primary that answers 503 for a minute, then recovers (the chaos
//! suite's `flapping` scenario): its half-open probes come from different
//! requests, not from one request's own retries, and open intervals stop
//! growing, so that the recovered primary is found within 30 s. Paused
//! time, a scripted upstream, the real retry layer above.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_llm_circuit::{
    Circuit, CircuitConfig, CircuitLayer, CircuitState, RequestToken, WindowKind,
};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::{ReplayBody, RetryLayer, RetryPolicy};
use tower_test::mock;

const KEY: &str = "openai/gpt-4o";

fn request() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::from(r#"{"model":"gpt-4o"}"#))
        .unwrap()
}

fn unavailable() -> LlmError {
    LlmError::new(
        Classification::new(ErrorKind::ServerError)
            .with_status(http::StatusCode::SERVICE_UNAVAILABLE)
            .with_phase(Phase::BeforeHeaders),
    )
}

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

/// Opens after two failures in a row for 10 s; three probes.
fn tripped_circuit() -> (Circuit<Mock>, Handle, CircuitLayer) {
    let layer = CircuitLayer::new(
        CircuitConfig::builder()
            .window(WindowKind::Count(10))
            .consecutive_failures(Some(2))
            .open_duration(Duration::from_secs(10), 1.5, Duration::from_secs(30))
            .open_jitter(0.0)
            .half_open_probes(3)
            .build()
            .unwrap(),
    );
    let (mock, handle) = mock::pair();
    (layer.layer(mock), handle, layer)
}

async fn call(
    service: &mut Circuit<Mock>,
    handle: &mut Handle,
    token: Option<RequestToken>,
    answer: Option<LlmError>,
) -> Result<(), ErrorKind> {
    let mut request = request();
    if let Some(token) = token {
        request.extensions_mut().insert(token);
    }
    let call = service.ready().await.unwrap().call(request);
    if let Some(error) = answer {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(error);
    }
    call.await.map(drop).map_err(|e| e.kind())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_whose_probe_failed_is_refused_as_open_and_another_request_probes() {
    let (mut service, mut handle, layer) = tripped_circuit();
    handle.allow(100);
    for _ in 0..2 {
        let failed = call(&mut service, &mut handle, None, Some(unavailable())).await;
        assert_eq!(failed, Err(ErrorKind::ServerError));
    }
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::Open));
    tokio::time::advance(Duration::from_secs(10)).await;

    let (first, second) = (RequestToken::new(), RequestToken::new());
    let probe = call(&mut service, &mut handle, Some(first), Some(unavailable())).await;
    assert_eq!(probe, Err(ErrorKind::ServerError));
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::HalfOpen));
    // Its own retry: refused without reaching the upstream (no answer is
    // scripted; the mock would hang if it were called), probes left.
    let again = call(&mut service, &mut handle, Some(first), None).await;
    assert_eq!(again, Err(ErrorKind::CircuitOpen));
    // Another request takes the next probe.
    let other = call(&mut service, &mut handle, Some(second), Some(unavailable())).await;
    assert_eq!(other, Err(ErrorKind::ServerError));
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::HalfOpen));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_a_token_every_attempt_may_probe_as_before() {
    let (mut service, mut handle, layer) = tripped_circuit();
    handle.allow(100);
    for _ in 0..2 {
        let _ = call(&mut service, &mut handle, None, Some(unavailable())).await;
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..3 {
        let probe = call(&mut service, &mut handle, None, Some(unavailable())).await;
        assert_eq!(probe, Err(ErrorKind::ServerError));
    }
    assert_eq!(layer.handle().state(KEY), Some(CircuitState::Open));
}

/// Every upstream call: when, and the token of its request.
type Calls = Arc<Mutex<Vec<(Instant, Option<RequestToken>)>>>;

/// What one run of the scenario saw.
#[derive(Debug, Default)]
struct Run {
    /// Seconds (since the start) of each request the primary served.
    primary_served: Vec<u64>,
    /// Upstream calls while the primary was down.
    calls_while_down: usize,
    /// Upstream calls of a request sent while the key was not closed,
    /// most.
    most_probes_of_one_request: usize,
    requests: usize,
}

/// 160 s, one request every 4 s, the primary 503 until 60 s; the default
/// presets (`standard` breaker, `sdk_default` retry) seeded with `seed`.
/// A request the primary's stack fails goes to a backup that always
/// answers (not modelled: it is counted as served).
async fn flapping(seed: u64) -> Run {
    let start = Instant::now();
    let recovery = start + Duration::from_secs(60);
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let upstream = service_fn(move |request: Request<ReplayBody>| {
        let seen = Arc::clone(&seen);
        async move {
            let token = request.extensions().get::<RequestToken>().copied();
            seen.lock().unwrap().push((Instant::now(), token));
            if Instant::now() < recovery {
                Err(unavailable())
            } else {
                Ok::<_, LlmError>(Response::new(Full::<Bytes>::from("{}")))
            }
        }
    });
    let circuit = CircuitLayer::new(
        CircuitConfig::standard()
            .to_builder()
            .seed(seed)
            .build()
            .unwrap(),
    );
    let retry = RetryLayer::new(
        RetryPolicy::sdk_default()
            .to_builder()
            .seed(seed)
            .build()
            .unwrap(),
    );
    let stack = retry.layer(circuit.layer(upstream));
    let mut run = Run::default();
    for n in 0..40u64 {
        tokio::time::sleep_until(start + Duration::from_secs(4 * n)).await;
        let mut request = request();
        let token = RequestToken::get_or_insert(&mut request);
        let before = calls.lock().unwrap().len();
        let probing = matches!(
            circuit.handle().state(KEY),
            Some(CircuitState::Open | CircuitState::HalfOpen)
        );
        // Read to its end, as a caller does: the outcome is known then.
        let served = match stack.clone().oneshot(request).await {
            Ok(response) => response.into_body().collect().await.is_ok(),
            Err(_) => false,
        };
        run.requests += 1;
        if served {
            run.primary_served.push(4 * n);
        }
        let calls = calls.lock().unwrap();
        assert!(calls[before..].iter().all(|(_, t)| *t == Some(token)));
        if probing {
            let mine = calls.len() - before;
            run.most_probes_of_one_request = run.most_probes_of_one_request.max(mine);
        }
    }
    run.calls_while_down = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at < recovery)
        .count();
    run
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_flapping_primary_is_used_again_within_30_s_of_its_recovery_with_the_default_presets() {
    for seed in 0..16 {
        let run = flapping(seed).await;
        // From then on, every request is the primary's.
        let back = (0..40u64)
            .map(|n| 4 * n)
            .rev()
            .take_while(|at| run.primary_served.contains(at))
            .last();
        assert!(
            back.is_some_and(|at| (60..=90).contains(&at)),
            "seed {seed}: back on the primary at {back:?} s: {run:?}"
        );
        // Probes come from different requests: one call each.
        assert_eq!(run.most_probes_of_one_request, 1, "seed {seed}: {run:?}");
        // Probes bounded: the requests that tripped it (three attempts
        // each), then at most three probes per open interval (10, 15,
        // 22.5 s ±20 % fit at most 3 in 60 s).
        assert!(
            run.calls_while_down <= 4 * 3 + 3 * 3,
            "seed {seed}: {run:?}"
        );
    }
}
