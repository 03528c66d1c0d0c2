//! Outage amplification and recovery from random failures, on Tokio's
//! paused clock: a budget bounds an outage and leaves random failures
//! alone. First the policy and budget alone (no I/O), then the layer under
//! open-loop load, where successful retries are given back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_llm_classify::hint::{Hint, HintSource};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::{
    Decision, GiveUp, ReplayBody, RetryLayer, RetryPolicy, RetryPolicyBuilder, RetryStats,
};

/// SplitMix64 draws in [0, 1).
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One logical request: attempts until success, a give-up, or a denied
/// retry. Returns (attempts made, succeeded, denied by the budget).
fn logical_request(
    policy: &RetryPolicy,
    fails: &mut impl FnMut() -> bool,
    draws: &mut Draws,
) -> (u32, bool, bool) {
    let budget = policy.budget().unwrap();
    let failure = Classification::new(ErrorKind::Overloaded).with_phase(Phase::BeforeHeaders);
    budget.deposit();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if !fails() {
            return (attempts, true, false);
        }
        match policy.decide(&failure, attempts, Duration::ZERO, None, draws.next()) {
            Decision::Retry { .. } if budget.withdraw() => continue,
            Decision::Retry { .. } => return (attempts, false, true),
            Decision::GiveUp(_) => return (attempts, false, false),
        }
    }
}

/// Property 1: a full outage at `rate` requests/s for 60 s. Returns the
/// upstream attempts per logical request in each 10 s window.
async fn outage(rate: u32) -> Vec<f64> {
    let policy = RetryPolicy::sdk_default();
    let mut draws = Draws(1);
    let mut windows = Vec::new();
    for _ in 0..6 {
        let (mut logical, mut attempts) = (0u32, 0u32);
        for _ in 0..10 {
            for _ in 0..rate {
                attempts += logical_request(&policy, &mut || true, &mut draws).0;
                logical += 1;
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        windows.push(f64::from(attempts) / f64::from(logical));
    }
    windows
}

#[tokio::test(start_paused = true)]
async fn an_outage_at_100_requests_per_second_is_amplified_at_most_1_1_times() {
    let windows = outage(100).await;
    for (i, amplification) in windows.iter().enumerate().skip(1) {
        assert!(*amplification <= 1.10 + 1e-9, "window {i}: {amplification}");
    }
    // Without a budget, every request would make 3 attempts.
    assert!(
        windows[1] >= 1.09,
        "the budget is used, not starved: {windows:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_quiet_client_in_an_outage_adds_at_most_one_attempt_per_second() {
    let windows = outage(1).await;
    for (i, amplification) in windows.iter().enumerate().skip(1) {
        // 10 requests per window, at most 10 extra attempts.
        assert!(*amplification <= 2.0 + 1e-9, "window {i}: {amplification}");
    }
}

async fn transient(p: f64, requests: u32) -> (u32, u32) {
    let policy = RetryPolicy::sdk_default();
    let mut failures = Draws(7);
    let mut draws = Draws(8);
    let (mut failed, mut denied) = (0, 0);
    for i in 0..requests {
        let (_, ok, was_denied) = logical_request(&policy, &mut || failures.next() < p, &mut draws);
        failed += u32::from(!ok);
        denied += u32::from(was_denied);
        if i % 100 == 99 {
            tokio::time::advance(Duration::from_secs(1)).await; // 100 requests/s
        }
    }
    (failed, denied)
}

#[tokio::test(start_paused = true)]
async fn transient_failures_up_to_5_percent_are_never_denied_and_success_is_one_minus_p_cubed() {
    let n = 1_000_000;
    for p in [0.01, 0.05] {
        let (failed, denied) = transient(p, n).await;
        assert_eq!(denied, 0, "p = {p}");
        // Failures are Binomial(n, p³): within 4 standard deviations.
        let expected = f64::from(n) * p * p * p;
        let sd = (expected * (1.0 - p * p * p)).sqrt();
        assert!(
            (f64::from(failed) - expected).abs() <= 4.0 * sd + 1.0,
            "p = {p}: {failed} failed, expected {expected:.1}"
        );
    }
}

// ---------------------------------------------------------------------------
// The layer itself under load: open-loop callers on the paused clock, an
// upstream answering in 50 ms and failing at random (seeded), the budget
// drawn on when a retry is sent and given back when it succeeds, by the
// retry future as in production.
// ---------------------------------------------------------------------------

/// What an upstream does with call number `n` at `at` (from the start):
/// `None` answers, `Some(failure)` fails.
type Upstream = dyn Fn(u64, Duration) -> Option<LlmError> + Send + Sync;

/// What a simulated run saw.
#[derive(Debug, Default)]
struct Load {
    /// Logical requests and upstream attempts started in each window (the
    /// budget's ttl, aligned with its slots).
    requests: Vec<u32>,
    attempts: Vec<u32>,
    /// Requests that failed, and those that failed for want of budget.
    failed: u32,
    denied: u32,
}

impl Load {
    /// Upstream attempts per logical request in each window that had
    /// requests.
    fn amplification(&self) -> Vec<f64> {
        self.requests
            .iter()
            .zip(&self.attempts)
            .filter(|(r, _)| **r > 0)
            .map(|(r, a)| f64::from(*a) / f64::from(*r))
            .collect()
    }

    fn total_amplification(&self) -> f64 {
        f64::from(self.attempts.iter().sum::<u32>()) / f64::from(self.requests.iter().sum::<u32>())
    }
}

/// `rate` requests per second for `seconds` through a [`RetryLayer`] with
/// `policy` over `upstream` (50 ms per answer), on the paused clock.
async fn simulate(policy: RetryPolicy, rate: u32, seconds: u32, upstream: Arc<Upstream>) -> Load {
    let ttl = policy.budget().map_or(Duration::from_secs(10), |b| b.ttl());
    // The budget's clock started when the policy was built: no time has
    // passed since on the paused clock, so the windows line up with its slots.
    let start = Instant::now();
    let window = move |at: Duration| (at.as_nanos() / ttl.as_nanos()) as usize;
    let windows = window(Duration::from_secs(u64::from(seconds) + 60)) + 1;
    let attempts: Arc<Vec<AtomicU32>> = Arc::new((0..windows).map(|_| AtomicU32::new(0)).collect());
    let calls = Arc::new(AtomicU64::new(0));
    let service = {
        let attempts = Arc::clone(&attempts);
        tower::service_fn(move |_: Request<ReplayBody>| {
            let at = start.elapsed();
            attempts[window(at).min(windows - 1)].fetch_add(1, Ordering::Relaxed);
            let outcome = upstream(calls.fetch_add(1, Ordering::Relaxed), at);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match outcome {
                    None => Ok(Response::new(Full::<Bytes>::default())),
                    Some(failure) => Err(failure),
                }
            }
        })
    };
    let service = RetryLayer::new(policy).layer(service);
    let mut load = Load {
        requests: vec![0; windows],
        ..Load::default()
    };
    let mut tasks = tokio::task::JoinSet::new();
    let period = Duration::from_secs(1) / rate;
    for i in 0..rate * seconds {
        tokio::time::sleep_until(start + period * i).await;
        load.requests[window(start.elapsed())] += 1;
        let call = service.clone().oneshot(request());
        tasks.spawn(async move {
            match call.await {
                Ok(_) => None,
                Err(error) => Some(RetryStats::of(error.extensions()).gave_up),
            }
        });
    }
    for gave_up in tasks.join_all().await.into_iter().flatten() {
        load.failed += 1;
        load.denied += u32::from(gave_up == Some(GiveUp::BudgetExhausted));
    }
    load.attempts = attempts.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    load
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://provider/v1/chat/completions")
        .body(Full::from(r#"{"model":"m"}"#))
        .unwrap()
}

/// Draw number `n` of a seeded sequence, in [0, 1).
fn draw(seed: u64, n: u64) -> f64 {
    Draws(seed ^ n.wrapping_mul(0xD134_2543_DE82_EF95)).next()
}

/// Fails every call as overloaded.
fn dead() -> Arc<Upstream> {
    Arc::new(|_, _| Some(overloaded(None)))
}

/// Fails each call independently with probability `p`.
fn random(p: f64, seed: u64) -> Arc<Upstream> {
    Arc::new(move |n, _| (draw(seed, n) < p).then(|| overloaded(None)))
}

/// The chaos suite's `rate_limit`: healthy, then from 20 s to 40 s 30 % of
/// calls are refused with a 2 s hint.
fn rate_limit_episode() -> Arc<Upstream> {
    let episode = Duration::from_secs(20)..Duration::from_secs(40);
    Arc::new(move |n, at| {
        (episode.contains(&at) && draw(12, n) < 0.3)
            .then(|| overloaded(Some(Duration::from_secs(2))))
    })
}

fn overloaded(hint: Option<Duration>) -> LlmError {
    let hint = hint.map(|delay| Hint {
        delay,
        source: HintSource::RetryAfter,
    });
    LlmError::new(
        Classification::new(ErrorKind::Overloaded)
            .with_phase(Phase::BeforeHeaders)
            .with_hint(hint),
    )
}

/// `sdk_default` with a budget of `ratio` over `ttl_secs`, at least 1/s.
fn budget(ttl_secs: u64, ratio: f64) -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .seed(5)
        .budget(Duration::from_secs(ttl_secs), 1, ratio)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_refunds_an_outage_through_the_layer_stays_within_the_ratio() {
    // No retry succeeds, so nothing is given back: 1 + ratio in every
    // window, as without refunds.
    for (ttl, ratio) in [(10, 0.1), (30, 0.15)] {
        let load = simulate(budget(ttl, ratio).build().unwrap(), 100, 60, dead()).await;
        let amplification = load.amplification();
        for (i, a) in amplification.iter().enumerate() {
            assert!(
                *a <= 1.0 + ratio + 1e-9,
                "{ttl} s, {ratio}: window {i}: {amplification:?}"
            );
        }
        assert!(
            amplification[1] >= 1.0 + ratio - 0.01,
            "the budget is used: {amplification:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn with_refunds_a_quiet_client_in_an_outage_adds_at_most_the_floor() {
    let load = simulate(budget(10, 0.1).build().unwrap(), 1, 60, dead()).await;
    for (requests, attempts) in load.requests.iter().zip(&load.attempts) {
        // 1 retry per second over the 10 s window.
        assert!(attempts - requests <= 10, "{load:?}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn random_failures_of_22_percent_are_never_denied_by_the_default_budget() {
    // Retries are p + p² = 27 % of requests, more than the budget's 10 %;
    // those that fail are p² + p³ = 6 %.
    let policy = RetryPolicy::builder().seed(5).build().unwrap();
    let load = simulate(policy, 100, 60, random(0.22, 21)).await;
    assert_eq!(load.denied, 0, "{load:?}");
    // The rest failed three times: Binomial(6000, p³ = 1.06 %), 64 expected.
    assert!((40..=90).contains(&load.failed), "{load:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_refunds_random_failures_of_22_percent_are_denied_by_a_10_percent_budget() {
    let policy = budget(10, 0.1)
        .refund_successful_retries(false)
        .build()
        .unwrap();
    let load = simulate(policy, 100, 60, random(0.22, 21)).await;
    assert!(load.denied > 500, "{load:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn random_failures_of_30_percent_need_a_budget_of_15_percent_over_30_seconds() {
    // Failed retries are p² + p³ = 11.7 % of requests: above a 10 %
    // ratio whatever the window; at 15 % a 10 s window still denies when
    // chance puts a few more failures in it, a 30 s one does not.
    let load = simulate(budget(30, 0.1).build().unwrap(), 100, 60, random(0.3, 21)).await;
    assert!(load.denied > 0, "{load:?}");
    let load = simulate(budget(10, 0.15).build().unwrap(), 100, 60, random(0.3, 21)).await;
    assert!(load.denied > 0, "{load:?}");
    let load = simulate(budget(30, 0.15).build().unwrap(), 100, 60, random(0.3, 21)).await;
    assert_eq!(load.denied, 0, "{load:?}");
    assert!(
        load.total_amplification() <= 1.0 + 0.3 + 0.09 + 0.02,
        "{load:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rate_limit_episode_is_retried_in_full_after_its_hints_by_a_15_percent_30_second_budget()
{
    // 50 requests/s, 30 % refused with retry-after: 2 s for 20 s: the
    // retries wait 2–3 s without holding budget, and only the 11.7 % that
    // fail again are spent.
    let load = simulate(
        budget(30, 0.15).build().unwrap(),
        50,
        60,
        rate_limit_episode(),
    )
    .await;
    assert_eq!(load.denied, 0, "{load:?}");
    // Without refunds the retries (39 % of the episode's requests) run out.
    let policy = budget(30, 0.15)
        .refund_successful_retries(false)
        .build()
        .unwrap();
    let load = simulate(policy, 50, 60, rate_limit_episode()).await;
    assert!(load.denied > 0, "{load:?}");
}
