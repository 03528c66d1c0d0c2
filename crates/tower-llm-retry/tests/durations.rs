//! Every duration setting of the retry layer at `Duration::MAX`: refused by
//! `build()` with a typed error, or a call goes through the path it governs
//! without a panic (no `Instant + Duration` or `Duration` sum overflows).
//! Paused time: a wait of centuries passes at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_llm_classify::hint::{Hint, HintSource};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};
use tower_llm_retry::{
    Backoff, BudgetSettings, GiveUp, Jitter, ReplayBody, RetryLayer, RetryPolicy,
    RetryPolicyBuilder, RetrySettings, RetryStats,
};

const MAX: Duration = Duration::MAX;

/// Fails its first `failures` calls as overloaded (with `hint`, if any),
/// then answers 200; counts its calls.
fn upstream(
    failures: u32,
    hint: Option<Duration>,
) -> (
    impl tower::Service<
        Request<ReplayBody>,
        Response = Response<Full<Bytes>>,
        Error = LlmError,
        Future = impl Send,
    > + Clone,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let service = tower::service_fn(move |_: Request<ReplayBody>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < failures {
                let hint = hint.map(|delay| Hint {
                    delay,
                    source: HintSource::RetryAfter,
                });
                Err(LlmError::new(
                    Classification::new(ErrorKind::Overloaded)
                        .with_phase(Phase::BeforeHeaders)
                        .with_hint(hint),
                ))
            } else {
                Ok(Response::new(Full::from("ok")))
            }
        }
    });
    (service, calls)
}

fn policy() -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .seed(3)
        .no_budget()
        .backoff(Backoff::constant(Duration::from_millis(100)))
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://provider/v1/chat/completions")
        .body(Full::from(r#"{"model":"m"}"#))
        .unwrap()
}

/// Calls through `policy` against an upstream failing `failures` times;
/// the stats of the call and whether it succeeded.
async fn run(policy: RetryPolicy, failures: u32, hint: Option<Duration>) -> (bool, RetryStats) {
    let (upstream, calls) = upstream(failures, hint);
    let service = RetryLayer::new(policy).layer(upstream);
    let (ok, stats) = match service.oneshot(request()).await {
        Ok(response) => (true, RetryStats::of(response.extensions())),
        Err(error) => (false, RetryStats::of(error.extensions())),
    };
    assert_eq!(stats.attempts, calls.load(Ordering::SeqCst));
    (ok, stats)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_of_duration_max_is_no_limit_at_all() {
    let (ok, stats) = run(policy().deadline(MAX).build().unwrap(), 2, None).await;
    assert!(ok);
    assert_eq!(stats.attempts, 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_attempt_timeout_of_duration_max_lets_attempts_run() {
    let (ok, stats) = run(policy().attempt_timeout(MAX).build().unwrap(), 2, None).await;
    assert!(ok);
    assert_eq!(stats.attempts, 3);
    // Beside a finite deadline it is refused: no attempt could use it.
    let error = policy()
        .deadline(Duration::from_secs(60))
        .attempt_timeout(MAX)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("attempt timeout"), "{error}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_and_attempt_timeout_both_duration_max_are_refused_unless_one_attempt() {
    let error = policy()
        .deadline(MAX)
        .attempt_timeout(MAX)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("equals the deadline"), "{error}");
    let (ok, stats) = run(
        policy()
            .max_attempts(1)
            .deadline(MAX)
            .attempt_timeout(MAX)
            .build()
            .unwrap(),
        0,
        None,
    )
    .await;
    assert!(ok);
    assert_eq!(stats.attempts, 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hints_of_duration_max_under_a_max_hint_of_duration_max_are_waited_out_saturating() {
    // Two waits of Duration::MAX: the time slept saturates instead of overflowing.
    let (ok, stats) = run(policy().max_hint(MAX).build().unwrap(), 2, Some(MAX)).await;
    assert!(ok);
    assert_eq!((stats.attempts, stats.slept), (3, MAX));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hint_of_duration_max_past_a_deadline_gives_up_at_once() {
    let (ok, stats) = run(
        policy()
            .max_hint(MAX)
            .deadline(Duration::from_secs(60))
            .build()
            .unwrap(),
        1,
        Some(MAX),
    )
    .await;
    assert!(!ok);
    assert_eq!((stats.attempts, stats.gave_up), (1, Some(GiveUp::Deadline)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_min_attempt_time_of_duration_max_leaves_no_room_before_a_deadline_and_none_needed_without()
 {
    let (ok, stats) = run(
        policy()
            .min_attempt_time(MAX)
            .deadline(Duration::from_secs(60))
            .build()
            .unwrap(),
        1,
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!((stats.attempts, stats.gave_up), (1, Some(GiveUp::Deadline)));
    let (ok, stats) = run(policy().min_attempt_time(MAX).build().unwrap(), 1, None).await;
    assert!(ok);
    assert_eq!(stats.attempts, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_backoff_of_duration_max_waits_saturating_whatever_the_jitter() {
    for jitter in [Jitter::None, Jitter::Equal, Jitter::Decorrelated] {
        let (ok, stats) = run(
            policy()
                .backoff(Backoff::exponential(MAX, MAX).with_jitter(jitter))
                .build()
                .unwrap(),
            2,
            None,
        )
        .await;
        assert!(ok, "{jitter:?}");
        assert_eq!(stats.attempts, 3, "{jitter:?}");
    }
    let (ok, stats) = run(
        policy().backoff(Backoff::constant(MAX)).build().unwrap(),
        2,
        None,
    )
    .await;
    assert!(ok);
    assert_eq!((stats.attempts, stats.slept), (3, MAX));
    // A cap of Duration::MAX above a small base: the growth is capped, not overflowed.
    let (ok, _) = run(
        policy()
            .max_attempts(6)
            .backoff(Backoff::exponential(Duration::from_secs(1), MAX).with_multiplier(1e300))
            .build()
            .unwrap(),
        5,
        None,
    )
    .await;
    assert!(ok);
}

#[test]
fn a_budget_ttl_of_duration_max_is_refused_by_name() {
    let error = policy().budget(MAX, 1, 0.1).build().unwrap_err();
    assert!(error.to_string().contains("ttl"), "{error}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn settings_of_u64_max_milliseconds_build_or_are_refused() {
    let mut settings = RetrySettings::default();
    settings.base_delay_ms = Some(u64::MAX);
    settings.max_delay_ms = Some(u64::MAX);
    settings.max_hint_ms = Some(u64::MAX);
    settings.deadline_ms = Some(u64::MAX);
    let policy = settings
        .builder()
        .unwrap()
        .no_budget()
        .seed(1)
        .build()
        .unwrap();
    let (ok, stats) = run(policy, 1, None).await;
    assert!(ok);
    assert_eq!(stats.attempts, 2);
    let mut refused = RetrySettings::default();
    refused.deadline_ms = Some(u64::MAX);
    refused.attempt_timeout_ms = Some(u64::MAX);
    assert!(refused.build().is_err());
    let mut ttl = BudgetSettings::default();
    ttl.ttl_ms = Some(u64::MAX);
    let mut budget = RetrySettings::default();
    budget.budget = Some(ttl);
    assert!(budget.build().unwrap_err().to_string().contains("ttl"));
}
