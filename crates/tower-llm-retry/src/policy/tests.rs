//! Unit tests of the rules, the presets, the decision and the builder.

use super::*;
use http::StatusCode;
use tower_llm_classify::Phase;
use tower_llm_classify::hint::{Hint, HintSource};

fn failure(kind: ErrorKind) -> Classification {
    Classification::new(kind).with_phase(Phase::BeforeHeaders)
}

fn hinted(kind: ErrorKind, secs: u64) -> Classification {
    failure(kind).with_hint(Some(Hint {
        delay: Duration::from_secs(secs),
        source: HintSource::RetryAfter,
    }))
}

#[test]
fn a_policy_with_its_own_budget_does_not_spend_the_original_one() {
    let shared = RetryPolicy::sdk_default();
    let own = shared.with_own_budget();
    let (Some(a), Some(b)) = (shared.budget(), own.budget()) else {
        panic!("sdk_default has a budget");
    };
    assert!(!Arc::ptr_eq(a, b));
    let before = a.remaining();
    while b.withdraw() {}
    assert_eq!(a.remaining(), before, "the original budget is untouched");
    assert_eq!(b.remaining(), 0);
    assert!(
        RetryPolicy::sdk_default()
            .to_builder()
            .no_budget()
            .build()
            .unwrap()
            .with_own_budget()
            .budget()
            .is_none()
    );
}

#[test]
fn transient_kinds_are_retried_and_permanent_ones_never() {
    let policy = RetryPolicy::sdk_default();
    for kind in ErrorKind::ALL {
        let expected = matches!(
            kind,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Connect
                | ErrorKind::Transport
                | ErrorKind::Conflict
                | ErrorKind::StreamIncomplete
        );
        assert_eq!(policy.is_retryable(&failure(kind)), expected, "{kind}");
    }
}

#[test]
fn content_already_delivered_is_never_retried_whatever_the_overrides() {
    let policy = RetryPolicy::builder()
        .retry_kind(ErrorKind::Transport, true)
        .retry_if(|_| Some(true))
        .build()
        .unwrap();
    let c = Classification::new(ErrorKind::Transport).with_phase(Phase::MidStream);
    assert!(!policy.is_retryable(&c));
}

#[test]
fn x_should_retry_overrides_the_status() {
    let policy = RetryPolicy::sdk_default();
    let c = failure(ErrorKind::ServerError)
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
        .with_retryable(false);
    assert_eq!(
        policy.decide(&c, 1, Duration::ZERO, None, 0.5),
        Decision::GiveUp(GiveUp::NotRetryable)
    );
    let c = failure(ErrorKind::InvalidRequest).with_retryable(true);
    assert!(matches!(
        policy.decide(&c, 1, Duration::ZERO, None, 0.5),
        Decision::Retry { .. }
    ));
}

#[test]
fn user_overrides_come_first() {
    let policy = RetryPolicy::builder()
        .retry_kind(ErrorKind::RateLimited, false)
        .retry_if(|c| (c.kind() == ErrorKind::QuotaExhausted).then_some(true))
        .build()
        .unwrap();
    assert!(!policy.is_retryable(&failure(ErrorKind::RateLimited)));
    assert!(policy.is_retryable(&failure(ErrorKind::QuotaExhausted)));
    assert!(policy.is_retryable(&failure(ErrorKind::Overloaded)));
}

#[test]
fn a_hint_sets_the_wait_between_itself_and_half_again() {
    let policy = RetryPolicy::sdk_default();
    let c = hinted(ErrorKind::RateLimited, 2);
    assert_eq!(
        policy.decide(&c, 1, Duration::ZERO, None, 0.0),
        Decision::Retry {
            delay: Duration::from_secs(2),
            hinted: true
        }
    );
    assert_eq!(
        policy.decide(&c, 1, Duration::ZERO, None, 1.0),
        Decision::Retry {
            delay: Duration::from_secs(3),
            hinted: true
        }
    );
}

#[test]
fn x_should_retry_false_outranks_a_kind_override() {
    let policy = RetryPolicy::builder()
        .retry_kind(ErrorKind::Overloaded, true)
        .build()
        .unwrap();
    let c = failure(ErrorKind::Overloaded).with_retryable(false);
    assert!(!policy.is_retryable(&c));
    let policy = RetryPolicy::builder()
        .retry_kind(ErrorKind::Overloaded, false)
        .build()
        .unwrap();
    assert!(!policy.is_retryable(&failure(ErrorKind::Overloaded)));
}

#[test]
fn the_spread_never_pushes_a_hint_that_fits_past_the_deadline() {
    let policy = RetryPolicy::builder()
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let c = hinted(ErrorKind::RateLimited, 10);
    // 10 s hint, 10 s attempt, 21 s left: the hint fits, 1.5x would not.
    match policy.decide(&c, 1, Duration::ZERO, Some(Duration::from_secs(21)), 0.99) {
        Decision::Retry { delay, .. } => {
            assert!(
                delay >= Duration::from_secs(10) && delay < Duration::from_secs(11),
                "{delay:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_an_attempt_timeout_a_retry_needs_the_minimum_attempt_time_left() {
    let policy = RetryPolicy::builder().build().unwrap();
    let c = hinted(ErrorKind::RateLimited, 1);
    let left = |ms| Some(Duration::from_millis(ms));
    assert_eq!(
        policy.decide(&c, 1, Duration::ZERO, left(1400), 0.0),
        Decision::GiveUp(GiveUp::Deadline)
    );
    assert!(matches!(
        policy.decide(&c, 1, Duration::ZERO, left(1600), 0.0),
        Decision::Retry { .. }
    ));
}

#[test]
fn odd_inputs_to_decide_do_not_panic() {
    let policy = RetryPolicy::builder()
        .max_hint(Duration::MAX)
        .build()
        .unwrap();
    let huge = failure(ErrorKind::RateLimited).with_hint(Some(Hint {
        delay: Duration::MAX,
        source: HintSource::RetryAfter,
    }));
    for u in [f64::NAN, f64::INFINITY, -1.0, 2.0] {
        let _ = policy.decide(&huge, 1, Duration::ZERO, None, u);
        let _ = policy.decide(
            &failure(ErrorKind::Overloaded),
            0,
            Duration::MAX,
            Some(Duration::ZERO),
            u,
        );
    }
}

#[test]
fn the_spread_never_sleeps_past_max_hint() {
    let policy = RetryPolicy::sdk_default();
    assert_eq!(policy.max_hint(), Duration::from_secs(60));
    let c = hinted(ErrorKind::RateLimited, 60);
    for u in [0.0, 0.5, 0.999, 1.0] {
        match policy.decide(&c, 1, Duration::ZERO, None, u) {
            Decision::Retry { delay, hinted } => {
                assert!(hinted);
                assert_eq!(delay, Duration::from_secs(60), "u = {u}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Below the ceiling the spread still applies, up to the ceiling.
    let c = hinted(ErrorKind::RateLimited, 50);
    match policy.decide(&c, 1, Duration::ZERO, None, 1.0) {
        Decision::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_retry_after_beyond_two_days_gives_up_at_once_instead_of_backing_off() {
    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after", http::HeaderValue::from_static("99999999999"));
    let c = tower_llm_classify::classify_response(
        tower_llm_classify::Provider::OpenAi,
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        b"",
        std::time::SystemTime::now(),
    );
    assert_eq!(c.retry_after(), Some(tower_llm_classify::hint::MAX_HINT));
    assert_eq!(
        RetryPolicy::sdk_default().decide(&c, 1, Duration::ZERO, None, 0.5),
        Decision::GiveUp(GiveUp::HintTooLong)
    );
}

#[test]
fn a_hint_over_the_ceiling_gives_up_at_once() {
    let policy = RetryPolicy::sdk_default();
    let c = hinted(ErrorKind::RateLimited, 61);
    assert_eq!(
        policy.decide(&c, 1, Duration::ZERO, None, 0.5),
        Decision::GiveUp(GiveUp::HintTooLong)
    );
}

#[test]
fn a_wait_that_does_not_fit_the_deadline_gives_up() {
    let policy = RetryPolicy::builder()
        .deadline(Duration::from_secs(30))
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let c = hinted(ErrorKind::RateLimited, 5);
    assert_eq!(
        policy.decide(&c, 1, Duration::ZERO, Some(Duration::from_secs(14)), 0.0),
        Decision::GiveUp(GiveUp::Deadline)
    );
    assert!(matches!(
        policy.decide(&c, 1, Duration::ZERO, Some(Duration::from_secs(16)), 0.0),
        Decision::Retry { .. }
    ));
}

#[test]
fn attempts_run_out() {
    let policy = RetryPolicy::sdk_default();
    let c = failure(ErrorKind::Overloaded);
    assert!(matches!(
        policy.decide(&c, 2, Duration::ZERO, None, 0.5),
        Decision::Retry { .. }
    ));
    assert_eq!(
        policy.decide(&c, 3, Duration::ZERO, None, 0.5),
        Decision::GiveUp(GiveUp::AttemptsExhausted)
    );
}

#[test]
fn impossible_policies_fail_to_build() {
    assert!(RetryPolicy::builder().max_attempts(0).build().is_err());
    assert!(
        RetryPolicy::builder()
            .deadline(Duration::from_secs(5))
            .attempt_timeout(Duration::from_secs(6))
            .build()
            .is_err()
    );
    assert!(
        RetryPolicy::builder()
            .deadline(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        RetryPolicy::builder()
            .budget(Duration::ZERO, 1, 0.1)
            .build()
            .is_err()
    );
    let err = RetryPolicy::builder()
        .backoff(Backoff::default().with_multiplier(f64::INFINITY))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("multiplier"), "{err}");
}

#[test]
fn every_preset_builds_as_documented() {
    assert_eq!(RetryPolicy::sdk_default().max_attempts(), 3);
    assert_eq!(RetryPolicy::high_availability().max_attempts(), 4);
    assert_eq!(
        RetryPolicy::high_availability().deadline(),
        Some(Duration::from_secs(120))
    );
    assert_eq!(RetryPolicy::cost_sensitive().max_attempts(), 2);
    assert!(RetryPolicy::development().budget().is_none());
    assert!(RetryPolicy::sdk_default().budget().is_some());
}

#[test]
fn stream_limits_that_cannot_work_fail_to_build_naming_the_limit() {
    let longer = RetryPolicy::builder()
        .deadline(Duration::from_secs(30))
        .stream_head_timeout(Duration::from_secs(31))
        .build()
        .unwrap_err();
    assert!(
        longer.to_string().contains("stream head timeout"),
        "{longer}"
    );
    let equal = RetryPolicy::builder()
        .deadline(Duration::from_secs(30))
        .first_content_timeout(Duration::from_secs(30))
        .build()
        .unwrap_err();
    assert!(
        equal.to_string().contains("first-content timeout"),
        "{equal}"
    );
    let zero = RetryPolicy::builder()
        .stream_head_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(zero.to_string().contains("longer than zero"), "{zero}");
    let unguarded = RetryPolicy::builder()
        .first_content_guard(false)
        .first_content_timeout(Duration::from_secs(20))
        .build()
        .unwrap_err();
    assert!(unguarded.to_string().contains("guard"), "{unguarded}");
    // With one attempt a limit may equal the deadline.
    assert!(
        RetryPolicy::builder()
            .max_attempts(1)
            .deadline(Duration::from_secs(30))
            .stream_head_timeout(Duration::from_secs(30))
            .build()
            .is_ok()
    );
}

#[test]
fn a_silent_target_is_retried_unless_the_policy_leaves_it_to_a_fallback() {
    let retries = RetryPolicy::builder().build().unwrap();
    let leaves = RetryPolicy::builder()
        .retry_on_silence(false)
        .build()
        .unwrap();
    assert!(retries.retry_on_silence() && !leaves.retry_on_silence());
    let silences = [
        // No head in time (this layer's timer, the client's).
        failure(ErrorKind::Timeout),
        // A head, then no content in time (this layer, Classify's idle timer).
        Classification::new(ErrorKind::Timeout).with_phase(Phase::AfterHeaders),
    ];
    for c in &silences {
        assert!(matches!(
            retries.decide(c, 1, Duration::ZERO, None, 0.5),
            Decision::Retry { .. }
        ));
        assert_eq!(
            leaves.decide(c, 1, Duration::ZERO, None, 0.5),
            Decision::GiveUp(GiveUp::Silent)
        );
    }
    // The target said something: a 504, an in-band `timeout_error`.
    let spoken = [
        failure(ErrorKind::Timeout).with_status(StatusCode::GATEWAY_TIMEOUT),
        Classification::new(ErrorKind::Timeout)
            .with_phase(Phase::AfterHeaders)
            .with_code("timeout_error"),
    ];
    for c in &spoken {
        assert!(
            matches!(
                leaves.decide(c, 1, Duration::ZERO, None, 0.5),
                Decision::Retry { .. }
            ),
            "{c:?}"
        );
    }
    // Other failures are untouched, and content delivered stays final.
    assert!(leaves.is_retryable(&failure(ErrorKind::Overloaded)));
    let mid_stream = Classification::new(ErrorKind::Timeout).with_phase(Phase::MidStream);
    assert_eq!(
        leaves.decide(&mid_stream, 1, Duration::ZERO, None, 0.5),
        Decision::GiveUp(GiveUp::NotRetryable)
    );
    assert_eq!(GiveUp::Silent.as_str(), "silent");
}

#[test]
fn a_call_the_stack_shed_itself_is_retried_on_the_last_target_and_left_to_a_fallback_elsewhere() {
    let last = RetryPolicy::builder().build().unwrap();
    let moves_on = RetryPolicy::builder()
        .retry_on_silence(false)
        .build()
        .unwrap();
    let shed = Classification::new(ErrorKind::Overloaded).with_phase(Phase::Local);
    assert!(matches!(
        last.decide(&shed, 1, Duration::ZERO, None, 0.5),
        Decision::Retry { .. }
    ));
    assert_eq!(
        moves_on.decide(&shed, 1, Duration::ZERO, None, 0.5),
        Decision::GiveUp(GiveUp::LocallyShed)
    );
    // The target's own overload answer is retried by both.
    let answered = failure(ErrorKind::Overloaded).with_status(StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(
        moves_on.decide(&answered, 1, Duration::ZERO, None, 0.5),
        Decision::Retry { .. }
    ));
    assert_eq!(GiveUp::LocallyShed.as_str(), "locally_shed");
}

#[test]
fn a_cooldowns_own_refusal_is_waited_out_on_the_last_target_and_left_to_a_fallback_elsewhere() {
    // The key's cooldown or pacing refused the call here, "in 800 ms":
    // with another target to go to, waiting here would release every
    // waiter on the key together when the wait ends.
    let last = RetryPolicy::builder().build().unwrap();
    let moves_on = RetryPolicy::builder()
        .retry_on_silence(false)
        .build()
        .unwrap();
    let refused = Classification::new(ErrorKind::RateLimited)
        .with_phase(Phase::Local)
        .with_retryable(true)
        .with_hint(Some(Hint {
            delay: Duration::from_millis(800),
            source: HintSource::RateLimitReset,
        }));
    assert!(matches!(
        last.decide(&refused, 1, Duration::ZERO, None, 0.0),
        Decision::Retry { hinted: true, .. }
    ));
    assert_eq!(
        moves_on.decide(&refused, 1, Duration::ZERO, None, 0.0),
        Decision::GiveUp(GiveUp::LocallyShed)
    );
}
