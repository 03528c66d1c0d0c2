//! The retry policy and budget alone (no I/O), on Tokio's paused clock:
//! what the default budget does to an outage, and that it leaves ordinary
//! transient failures alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tower_llm_classify::{Classification, ErrorKind, Phase};
use tower_llm_retry::{Decision, RetryPolicy};

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
