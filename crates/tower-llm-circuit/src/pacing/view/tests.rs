//! One key's view, pinned call by call on its own clock.

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn requests(remaining: u64, reset: Duration) -> RateLimitHeaders {
    let mut report = RateLimitHeaders::default();
    report.requests = Some(bucket(remaining, reset));
    report
}

fn bucket(remaining: u64, reset: Duration) -> RateLimitBucket {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-ratelimit-remaining-requests", remaining.into());
    headers.insert(
        "x-ratelimit-reset-requests",
        format!("{}ms", reset.as_millis()).parse().unwrap(),
    );
    RateLimitHeaders::read(&headers, std::time::SystemTime::now())
        .unwrap()
        .requests
        .unwrap()
}

#[test]
fn remaining_zero_refuses_every_call_until_the_reset_with_the_wait() {
    let mut view = View::default();
    view.answered(None, Some(&requests(0, secs(20))), secs(100));
    assert_eq!(view.admit(secs(100), 1, None), Err(secs(20)));
    assert_eq!(view.admit(secs(115), 1, None), Err(secs(5)));
    assert!(view.admit(secs(120), 1, None).is_ok());
}

#[test]
fn calls_in_flight_use_up_what_is_left_until_their_answers_come() {
    let mut view = View::default();
    view.answered(None, Some(&requests(2, secs(60))), Duration::ZERO);
    let a = view.admit(Duration::ZERO, 1, None).unwrap();
    let b = view.admit(Duration::ZERO, 1, None).unwrap();
    assert_eq!(view.admit(Duration::ZERO, 1, None), Err(secs(60)));
    // `a`'s answer says one is left: `b` is still in flight.
    view.answered(Some(a), Some(&requests(1, secs(60))), secs(1));
    assert_eq!(view.admit(secs(1), 1, None), Err(secs(60)));
    view.answered(Some(b), None, secs(1));
    assert!(view.admit(secs(1), 1, None).is_ok());
}

#[test]
fn an_answer_older_than_the_last_applied_can_only_lower_what_is_left() {
    let mut view = View::default();
    let a = view.admit(Duration::ZERO, 1, None).unwrap();
    let b = view.admit(Duration::ZERO, 1, None).unwrap();
    view.answered(Some(b), Some(&requests(1, secs(60))), secs(1));
    // `a` was counted first: it reports more left than there is.
    view.answered(Some(a), Some(&requests(2, secs(60))), secs(1));
    assert!(view.admit(secs(1), 1, None).is_ok());
    assert!(view.admit(secs(1), 1, None).is_err());
}

#[test]
fn tokens_in_flight_and_the_next_cost_must_fit_what_is_left() {
    let mut view = View::default();
    let mut report = RateLimitHeaders::default();
    let mut tokens = bucket(1000, secs(10));
    tokens.limit = Some(5000);
    report.tokens = Some(tokens);
    view.answered(None, Some(&report), Duration::ZERO);
    let a = view.admit(Duration::ZERO, 600, None).unwrap();
    assert_eq!(view.admit(Duration::ZERO, 600, None), Err(secs(10)));
    assert!(view.admit(Duration::ZERO, 400, None).is_ok());
    view.answered(Some(a), None, Duration::ZERO);
    // Larger than the whole bucket: never fits, so it is not held back.
    assert!(view.admit(Duration::ZERO, 6000, None).is_ok());
}

#[test]
fn configured_limits_pace_by_a_sliding_minute_where_no_header_says() {
    let mut view = View::default();
    let limits = Some(PaceLimits::rpm(2).with_tpm(100));
    assert!(view.admit(secs(0), 10, limits).is_ok());
    assert!(view.admit(secs(10), 10, limits).is_ok());
    // The first leaves the minute at the end of its second.
    assert_eq!(view.admit(secs(15), 10, limits), Err(secs(46)));
    // The first has left, the second has not: room for one.
    assert!(view.admit(secs(61), 80, limits).is_ok());
    assert_eq!(view.admit(secs(62), 1, limits), Err(secs(9)));
    // Headers, once seen, say more than the configuration.
    view.answered(None, Some(&requests(5, secs(30))), secs(62));
    assert!(view.admit(secs(62), 1, limits).is_ok());
}

#[test]
fn configured_tokens_wait_until_enough_of_the_last_minute_has_left() {
    let mut view = View::default();
    let limits = Some(PaceLimits::tpm(100));
    assert!(view.admit(secs(0), 30, limits).is_ok());
    assert!(view.admit(secs(10), 60, limits).is_ok());
    // 90 used: 20 more need 10 to leave, the first call's 30 at 61 s.
    assert_eq!(view.admit(secs(20), 20, limits), Err(secs(41)));
    // 50 more need 40: the first two calls, at 71 s.
    assert_eq!(view.admit(secs(20), 50, limits), Err(secs(51)));
    assert!(view.admit(secs(20), 10, limits).is_ok());
    // Larger than the limit: it waits for the whole minute (see
    // `a_call_larger_than_the_configured_tokens_per_minute_…`).
    assert_eq!(view.admit(secs(20), 101, limits), Err(secs(61)));
}

#[test]
fn another_replicas_view_only_tightens_what_is_held() {
    let mut view = View::default();
    view.answered(None, Some(&requests(5, secs(10))), Duration::ZERO);
    // More left, an earlier reset: nothing looser is taken.
    assert!(!view.apply([Some((9, secs(5))), None], Duration::ZERO));
    assert_eq!(view.buckets(Duration::ZERO)[0], Some((5, secs(10))));
    // Fewer left: taken, until the later of the two resets.
    assert!(view.apply([Some((0, secs(4))), None], Duration::ZERO));
    assert_eq!(view.admit(secs(1), 1, None), Err(secs(9)));
    // A bucket not held is taken as it is; a past one is ignored.
    assert!(view.apply([None, Some((10, secs(30)))], secs(1)));
    assert!(!view.apply([None, Some((0, secs(1)))], secs(2)));
    assert_eq!(view.buckets(secs(2))[1], Some((10, secs(30))));
}

#[test]
fn the_log_holds_a_slot_per_second_whatever_the_rate() {
    let mut view = View::default();
    let limits = Some(PaceLimits::rpm(1_000_000));
    for ms in 0..10_000 {
        assert!(view.admit(Duration::from_millis(ms), 1, limits).is_ok());
    }
    assert_eq!(view.log.len(), 10);
    assert_eq!(view.log_calls, 10_000);
    view.expire(secs(70));
    assert_eq!((view.log.len(), view.log_calls), (0, 0));
}

#[test]
fn with_continuous_refill_what_is_left_grows_evenly_until_the_reset() {
    let report = |remaining| {
        let mut report = requests(remaining, secs(60));
        if let Some(b) = report.requests.as_mut() {
            b.limit = Some(10);
        }
        report
    };
    let mut view = View::new(true);
    view.answered(None, Some(&report(0)), Duration::ZERO);
    // 10 refill over 60 s: one every 6 s.
    assert_eq!(view.admit(secs(1), 1, None), Err(secs(5)));
    let a = view.admit(secs(6), 1, None).unwrap();
    assert_eq!(view.admit(secs(6), 1, None), Err(secs(6)));
    view.answered(Some(a), None, secs(7));
    assert!(view.admit(secs(7), 1, None).is_ok());
    // Held until the reset without it.
    let mut held = View::new(false);
    held.answered(None, Some(&report(0)), Duration::ZERO);
    assert_eq!(held.admit(secs(6), 1, None), Err(secs(54)));
}

/// A requests bucket of `limit` with `remaining` left, full in `reset`.
fn of_limit(remaining: u64, limit: u64, reset: Duration) -> RateLimitHeaders {
    let mut report = requests(remaining, reset);
    if let Some(b) = report.requests.as_mut() {
        b.limit = Some(limit);
    }
    report
}

#[test]
fn headroom_is_what_is_left_less_what_is_in_flight_over_the_limit() {
    let mut view = View::default();
    view.answered(None, Some(&of_limit(50, 100, secs(60))), Duration::ZERO);
    assert_eq!(view.headroom(Duration::ZERO, None), Some(0.5));
    let a = view.admit(Duration::ZERO, 1, None).unwrap();
    assert_eq!(view.headroom(Duration::ZERO, None), Some(0.49));
    view.answered(Some(a), None, secs(1));
    assert_eq!(view.headroom(secs(1), None), Some(0.5));
    // Past the reset the bucket is full again, and nothing says how
    // full: no limit known.
    assert_eq!(view.headroom(secs(60), None), None);
}

#[test]
fn headroom_is_unknown_without_a_limit_and_refills_with_continuous_refill() {
    let mut view = View::default();
    view.answered(None, Some(&requests(5, secs(60))), Duration::ZERO);
    assert_eq!(view.headroom(Duration::ZERO, None), None);

    let mut view = View::new(true);
    view.answered(None, Some(&of_limit(0, 100, secs(60))), Duration::ZERO);
    assert_eq!(view.headroom(Duration::ZERO, None), Some(0.0));
    assert_eq!(view.headroom(secs(30), None), Some(0.5));
    // Held until the reset without it.
    let mut held = View::new(false);
    held.answered(None, Some(&of_limit(0, 100, secs(60))), Duration::ZERO);
    assert_eq!(held.headroom(secs(30), None), Some(0.0));
}

#[test]
fn headroom_of_configured_limits_is_what_the_last_minute_left() {
    let limits = Some(PaceLimits::rpm(10));
    let mut view = View::default();
    for _ in 0..4 {
        let a = view.admit(Duration::ZERO, 1, limits).unwrap();
        view.answered(Some(a), None, Duration::ZERO);
    }
    assert_eq!(view.headroom(secs(1), limits), Some(0.6));
    // The tightest of the two limits.
    let both = Some(PaceLimits::rpm(10).with_tpm(100));
    let a = view.admit(secs(1), 80, both).unwrap();
    view.answered(Some(a), None, secs(1));
    // 4 + 80 of 100 tokens used.
    assert_eq!(view.headroom(secs(1), both), Some(0.16));
    assert_eq!(view.headroom(secs(62), both), Some(1.0));
}

#[test]
fn a_view_idle_after_its_resets_holds_nothing() {
    let mut view = View::default();
    view.answered(None, Some(&requests(0, secs(5))), Duration::ZERO);
    assert!(!view.idle(secs(1)));
    assert!(view.idle(secs(5)));
}

#[test]
fn a_call_larger_than_the_tokens_bucket_holds_none_of_it() {
    let mut view = View::default();
    let mut report = RateLimitHeaders::default();
    let mut tokens = bucket(5000, secs(10));
    tokens.limit = Some(5000);
    report.tokens = Some(tokens);
    view.answered(None, Some(&report), Duration::ZERO);
    // A caller's absurd `max_tokens`: sent, for the provider to refuse.
    let huge = view.admit(Duration::ZERO, u64::MAX, None).unwrap();
    // While it is in flight, every other caller's call still fits.
    assert!(view.admit(Duration::ZERO, 4000, None).is_ok());
    view.answered(Some(huge), None, Duration::ZERO);
    assert!(view.admit(Duration::ZERO, 1000, None).is_ok());
    assert_eq!(view.admit(Duration::ZERO, 1, None), Err(secs(10)));
}

#[test]
fn a_call_larger_than_the_configured_tokens_per_minute_takes_the_whole_minute_and_no_more() {
    // A configured limit is the gateway's own (the target refuses
    // nothing): a larger `max_tokens` never buys more than the minute.
    let mut view = View::default();
    let limits = Some(PaceLimits::tpm(100));
    assert!(view.admit(secs(0), 10, limits).is_ok());
    // It waits for the minute to be clear of the first call...
    assert_eq!(view.admit(secs(1), u64::MAX, limits), Err(secs(60)));
    assert!(view.admit(secs(61), u64::MAX, limits).is_ok());
    // ...then holds all of it, and no more: a minute later, room again.
    assert_eq!(view.admit(secs(62), 1, limits), Err(secs(60)));
    assert!(view.admit(secs(122), 100, limits).is_ok());
}
