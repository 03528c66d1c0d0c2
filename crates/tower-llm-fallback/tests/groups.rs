//! Deployment groups: which member of a group each request goes to, by
//! strategy, availability and failures, over in-process deployments (and
//! the real circuit breaker where a breaker is the point).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};
use tower_llm_circuit::{CircuitConfig, CircuitLayer, KeyBy};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_fallback::{Fallback, FallbackReport, Strategy, Target};

/// One deployment: answers after `latency` (Tokio's clock), or with a 503
/// when `failing`; waits for a permit of `gate` first when it has one.
/// Counts its calls.
#[derive(Clone)]
struct Deploy {
    latency: Duration,
    failing: bool,
    gate: Option<Arc<Semaphore>>,
    calls: Arc<AtomicUsize>,
}

impl Deploy {
    fn new() -> Self {
        Deploy {
            latency: Duration::ZERO,
            failing: false,
            gate: None,
            calls: Arc::default(),
        }
    }

    fn slow(latency: Duration) -> Self {
        Deploy {
            latency,
            ..Deploy::new()
        }
    }

    fn failing() -> Self {
        Deploy {
            failing: true,
            ..Deploy::new()
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, LlmError>> + Send>>;

impl Service<Request<Full<Bytes>>> for Deploy {
    type Response = Response<Full<Bytes>>;
    type Error = LlmError;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Answer {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        Box::pin(async move {
            if let Some(gate) = &this.gate {
                gate.acquire().await.unwrap().forget();
            }
            tokio::time::sleep(this.latency).await;
            let status = if this.failing { 503 } else { 200 };
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap())
        })
    }
}

/// A failing status as the classified error Classify would make of it.
#[derive(Clone)]
struct Classified(Deploy);

impl Service<Request<Full<Bytes>>> for Classified {
    type Response = Response<Full<Bytes>>;
    type Error = LlmError;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Answer {
        let answer = self.0.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if response.status().is_success() {
                Ok(response)
            } else {
                let c = Classification::new(ErrorKind::ServerError).with_phase(Phase::AfterHeaders);
                Err(LlmError::new(c))
            }
        })
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://caller.test/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[]}"#,
        )))
        .unwrap()
}

async fn served_by<S, RB>(fallback: &Fallback<S>) -> String
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<LlmError>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<LlmError>,
{
    let response = fallback.clone().oneshot(request()).await.unwrap();
    let report = response
        .extensions()
        .get::<FallbackReport>()
        .unwrap()
        .clone();
    response.into_body().collect().await.unwrap();
    report.served_by.unwrap().to_string()
}

fn members(deploys: &[Deploy]) -> Vec<Target<Classified>> {
    deploys
        .iter()
        .enumerate()
        .map(|(i, d)| Target::new(format!("d{i}"), Classified(d.clone())))
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn least_busy_spreads_concurrent_requests() {
    let gate = Arc::new(Semaphore::new(0));
    let deploys: Vec<Deploy> = (0..3)
        .map(|_| Deploy {
            gate: Some(Arc::clone(&gate)),
            ..Deploy::new()
        })
        .collect();
    let fallback = Fallback::builder()
        .group(Strategy::LeastBusy, members(&deploys))
        .seed(7)
        .build()
        .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let fallback = fallback.clone();
            tokio::spawn(async move { served_by(&fallback).await })
        })
        .collect();
    // Every call picked and is held at its deployment's gate.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let in_flight: Vec<u32> = fallback.groups()[0]
        .deployments
        .iter()
        .map(|d| d.in_flight)
        .collect();
    assert_eq!(in_flight, [2, 2, 2]);
    gate.add_permits(6);
    for call in calls {
        call.await.unwrap();
    }
    let counts: Vec<usize> = deploys.iter().map(Deploy::calls).collect();
    assert_eq!(counts, [2, 2, 2]);
    let after: Vec<u32> = fallback.groups()[0]
        .deployments
        .iter()
        .map(|d| d.in_flight)
        .collect();
    assert_eq!(after, [0, 0, 0], "bodies ended: nothing left in flight");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn weighted_follows_the_weights_over_many_requests() {
    let deploys: Vec<Deploy> = (0..3).map(|_| Deploy::new()).collect();
    let weights = [6, 3, 1];
    let targets = members(&deploys)
        .into_iter()
        .zip(weights)
        .map(|(t, w)| t.weight(w));
    let fallback = Fallback::builder()
        .group(Strategy::Weighted, targets)
        .seed(42)
        .build()
        .unwrap();
    for _ in 0..10_000 {
        served_by(&fallback).await;
    }
    let counts: Vec<usize> = deploys.iter().map(Deploy::calls).collect();
    // Expected 6,000 / 3,000 / 1,000; a binomial's standard deviation is
    // under 50 here, so ±300 is more than six of them (and the seed makes
    // the run the same every time).
    for (count, expected) in counts.iter().zip([6_000, 3_000, 1_000]) {
        assert!(count.abs_diff(expected) < 300, "{counts:?}");
    }
    let picks: Vec<u64> = fallback.groups()[0]
        .deployments
        .iter()
        .map(|d| d.picks)
        .collect();
    assert_eq!(picks.iter().sum::<u64>(), 10_000);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn latency_prefers_a_fast_deployment_over_a_ten_times_slower_one() {
    let fast = Deploy::slow(Duration::from_millis(100));
    let slow = Deploy::slow(Duration::from_millis(1_000));
    let fallback = Fallback::builder()
        .group(Strategy::Latency, members(&[slow.clone(), fast.clone()]))
        .seed(3)
        .build()
        .unwrap();
    for _ in 0..200 {
        served_by(&fallback).await;
    }
    // The slow one is tried at the start and again only as its estimate
    // decays (~23 s of the fast one's answers per try).
    assert!(
        slow.calls() * 10 < 200,
        "slow {} fast {}",
        slow.calls(),
        fast.calls()
    );
    assert_eq!(slow.calls() + fast.calls(), 200);
    let latency = fallback.groups()[0].deployments[1].latency.unwrap();
    assert!(
        latency >= Duration::from_millis(90) && latency <= Duration::from_millis(110),
        "{latency:?}"
    );
}

/// Every member available; each with the share of its rate limits left
/// given by name.
struct Left(&'static [(&'static str, f64)]);

impl tower_llm_fallback::CheckAvailability for Left {
    fn check(&self, _: &tower_llm_fallback::Candidate<'_>) -> tower_llm_fallback::Availability {
        tower_llm_fallback::Availability::Available
    }

    fn headroom(&self, candidate: &tower_llm_fallback::Candidate<'_>) -> Option<f64> {
        let found = self.0.iter().find(|(name, _)| *name == candidate.target);
        found.map(|(_, left)| *left)
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn latency_prefers_the_member_with_more_of_its_rate_limits_left() {
    let deploys: Vec<Deploy> = (0..3)
        .map(|_| Deploy::slow(Duration::from_millis(100)))
        .collect();
    let fallback = Fallback::builder()
        .group(Strategy::Latency, members(&deploys))
        .check_availability(Arc::new(Left(&[("d0", 1.0), ("d1", 0.5), ("d2", 0.1)])))
        .seed(5)
        .build()
        .unwrap();
    for _ in 0..200 {
        served_by(&fallback).await;
    }
    let calls: Vec<usize> = deploys.iter().map(Deploy::calls).collect();
    // Equal latencies: the one with more left wins each pair (d2 only
    // once its estimate has decayed for want of samples).
    assert!(calls[0] > calls[1] && calls[1] > calls[2], "{calls:?}");
    assert!(calls[2] * 10 < 200, "{calls:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failure_moves_on_within_the_group_before_the_next_group() {
    let broken = Deploy::failing();
    let healthy = Deploy::new();
    let backup = Deploy::new();
    let fallback = Fallback::builder()
        .group(
            Strategy::LeastBusy,
            members(&[broken.clone(), healthy.clone()]),
        )
        .target(Target::new("backup", Classified(backup.clone())))
        .seed(1)
        .build()
        .unwrap();
    for _ in 0..20 {
        assert_eq!(served_by(&fallback).await, "d1");
    }
    assert_eq!(backup.calls(), 0, "the group served every request");
    assert!(broken.calls() > 0, "the broken member was picked too");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_whole_group_down_moves_to_the_next_group() {
    let down = [Deploy::failing(), Deploy::failing()];
    let backup = Deploy::new();
    let fallback = Fallback::builder()
        .group(Strategy::Latency, members(&down))
        .target(Target::new("backup", Classified(backup.clone())))
        .build()
        .unwrap();
    let response = fallback.clone().oneshot(request()).await.unwrap();
    let report = response.extensions().get::<FallbackReport>().unwrap();
    assert_eq!(report.served_by.as_deref(), Some("backup"));
    let mut failed: Vec<&str> = report.failures.iter().map(|(n, _)| &**n).collect();
    failed.sort();
    assert_eq!(failed, ["d0", "d1"], "both members were tried first");
    assert_eq!((down[0].calls(), down[1].calls()), (1, 1));
}

/// Three deployments, each behind the real breaker keyed `name/model`.
fn behind_breakers(
    deploys: &[Deploy],
) -> (
    Vec<Target<tower_llm_circuit::Circuit<Deploy>>>,
    tower_llm_circuit::CircuitHandle,
) {
    let layer = CircuitLayer::new(CircuitConfig::standard());
    let handle = layer.handle();
    let targets = deploys
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name: Arc<str> = Arc::from(format!("d{i}"));
            let circuit = layer.clone().key_by(KeyBy::TargetModel(Arc::clone(&name)));
            Target::new(name, circuit.layer(d.clone()))
        })
        .collect();
    (targets, handle)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_member_whose_breaker_is_open_is_skipped() {
    let deploys: Vec<Deploy> = (0..3).map(|_| Deploy::new()).collect();
    let (targets, breakers) = behind_breakers(&deploys);
    breakers.force_open("d0/gpt-4o");
    let fallback = Fallback::builder()
        .group(Strategy::LeastBusy, targets)
        .seed(11)
        .build()
        .unwrap();
    for _ in 0..30 {
        let served = served_by(&fallback).await;
        assert_ne!(served, "d0");
    }
    assert_eq!(deploys[0].calls(), 0, "nothing reached the open member");
    let groups = fallback.groups();
    let open = &groups[0].deployments[0];
    // Its first refusal told the group; it is not picked again while it
    // is kept out (no time passes here).
    assert!(open.picks <= 1, "{open:?}");
    assert!(open.unavailable_for.is_some(), "{open:?}");
    assert_eq!(deploys[1].calls() + deploys[2].calls(), 30);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_group_whose_every_breaker_is_open_answers_with_the_breakers_refusal() {
    let deploys: Vec<Deploy> = (0..2).map(|_| Deploy::new()).collect();
    let (targets, breakers) = behind_breakers(&deploys);
    breakers.force_open("d0/gpt-4o");
    breakers.force_open("d1/gpt-4o");
    let fallback = Fallback::builder()
        .group(Strategy::Latency, targets)
        .build()
        .unwrap();
    for _ in 0..3 {
        let error = fallback.clone().oneshot(request()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    }
    assert_eq!(deploys[0].calls() + deploys[1].calls(), 0);
}

#[test]
fn a_group_with_a_weight_of_zero_or_no_member_is_refused_at_build() {
    let error = Fallback::builder()
        .group(
            Strategy::Weighted,
            [Target::new("a", ()), Target::new("b", ()).weight(0)],
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`b`") && error.contains("weight 0"),
        "{error}"
    );
    let error = Fallback::builder()
        .target(Target::new("a", ()))
        .group(Strategy::Latency, Vec::<Target<()>>::new())
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("at least one target"), "{error}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_member_the_availability_check_refuses_is_never_called_while_others_can_serve() {
    use tower_llm_fallback::{Availability, Candidate};
    let deploys: Vec<Deploy> = (0..3).map(|_| Deploy::new()).collect();
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    let check = move |candidate: &Candidate<'_>| {
        counted.fetch_add(1, Ordering::SeqCst);
        if candidate.target == "d1" {
            Availability::Unavailable { retry_after: None }
        } else {
            Availability::Available
        }
    };
    let fallback = Fallback::builder()
        .group(Strategy::Weighted, members(&deploys))
        .check_availability(Arc::new(check))
        .seed(9)
        .build()
        .unwrap();
    for _ in 0..30 {
        assert_ne!(served_by(&fallback).await, "d1");
    }
    assert_eq!(deploys[1].calls(), 0);
    assert!(deploys[0].calls() > 0 && deploys[2].calls() > 0);
    // Asked of the picked member only: once per request, and once more
    // when it picked d1.
    let asked = asked.load(Ordering::SeqCst);
    assert!((30..60).contains(&asked), "{asked}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn when_the_check_refuses_every_member_one_is_still_tried() {
    use tower_llm_fallback::Availability;
    let deploys: Vec<Deploy> = (0..2).map(|_| Deploy::new()).collect();
    let fallback = Fallback::builder()
        .group(Strategy::LeastBusy, members(&deploys))
        .check_availability(Arc::new(|_: &tower_llm_fallback::Candidate<'_>| {
            Availability::Unavailable { retry_after: None }
        }))
        .build()
        .unwrap();
    // Nothing else to go to: the layers below answer for themselves.
    served_by(&fallback).await;
    assert_eq!(deploys[0].calls() + deploys[1].calls(), 1);
}
