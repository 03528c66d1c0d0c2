//! Unit tests of the breaker's state machine.

use super::*;
use crate::window::WindowKind;
use std::sync::Mutex;

type Events = Arc<Mutex<Vec<(CircuitState, CircuitState)>>>;

fn breaker(config: CircuitConfig) -> (Breaker, Events) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let on: Arc<OnTransition> =
        Arc::new(move |t: &Transition| sink.lock().unwrap().push((t.from, t.to)));
    (
        Breaker::new(
            "openai/gpt-4o".into(),
            tokio::time::Instant::now(),
            Arc::new(config),
            Some(on),
            Duration::ZERO,
        ),
        events,
    )
}

fn config() -> CircuitConfigBuilder {
    CircuitConfig::builder()
        .window(WindowKind::Count(10))
        .minimum_calls(5)
        .failure_rate(50.0)
        .consecutive_failures(None)
        .open_duration(Duration::from_secs(10), 2.0, Duration::from_secs(60))
        .open_jitter(0.0)
        .half_open_probes(2)
}

use crate::config::CircuitConfigBuilder;

const T0: Duration = Duration::ZERO;

fn call(b: &Breaker, outcome: Outcome, now: Duration) -> Result<(), Rejection> {
    let permit = b.acquire(now)?;
    b.record(permit, outcome, false, now);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn trips_at_the_failure_rate_only_after_the_minimum_calls() {
    let (b, events) = breaker(config().build().unwrap());
    // 4 failures: 100 %, but below the minimum of 5 calls.
    for _ in 0..4 {
        call(&b, Outcome::Failure, T0).unwrap();
    }
    assert_eq!(b.state(), CircuitState::Closed);
    // The 5th call reaches the minimum with 100 % failures: it trips.
    call(&b, Outcome::Failure, T0).unwrap();
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(
        *events.lock().unwrap(),
        [(CircuitState::Closed, CircuitState::Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn trips_on_exactly_the_call_where_the_rate_first_reaches_the_threshold() {
    let (b, _) = breaker(config().build().unwrap());
    // S S S F F F F: the rate reaches 50 % at the 6th call (3 of 6).
    let outcomes = [
        Outcome::Success,
        Outcome::Success,
        Outcome::Success,
        Outcome::Failure,
        Outcome::Failure,
    ];
    for o in outcomes {
        call(&b, o, T0).unwrap();
    }
    assert_eq!(b.state(), CircuitState::Closed, "2 of 5 = 40 %");
    call(&b, Outcome::Failure, T0).unwrap();
    assert_eq!(b.state(), CircuitState::Open, "3 of 6 = 50 %");
}

#[tokio::test(start_paused = true)]
async fn does_not_trip_below_the_threshold() {
    let (b, events) = breaker(config().build().unwrap());
    for i in 0..100 {
        let o = if i % 3 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        call(&b, o, T0).unwrap();
    }
    assert_eq!(b.state(), CircuitState::Closed);
    assert!(events.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_rate_limits_do_not_count_as_failures() {
    let (b, _) = breaker(config().build().unwrap());
    for _ in 0..20 {
        call(&b, Outcome::Ignored, T0).unwrap();
    }
    assert_eq!(b.snapshot(T0).totals.calls, 0);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_whatever_the_window() {
    let (b, _) = breaker(
        config()
            .window(WindowKind::Count(100))
            .minimum_calls(100)
            .consecutive_failures(Some(3))
            .build()
            .unwrap(),
    );
    call(&b, Outcome::Failure, T0).unwrap();
    call(&b, Outcome::Failure, T0).unwrap();
    call(&b, Outcome::Success, T0).unwrap();
    call(&b, Outcome::Failure, T0).unwrap();
    call(&b, Outcome::Failure, T0).unwrap();
    assert_eq!(b.state(), CircuitState::Closed);
    call(&b, Outcome::Failure, T0).unwrap();
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_trips_within_the_second_the_rate_is_reached_and_forgets_old_failures() {
    let (b, _) = breaker(config().window(WindowKind::Time(10)).build().unwrap());
    let at = Duration::from_secs;
    // Four failures at t = 0 .. 3, then quiet: below the minimum of 5.
    for s in 0..4 {
        call(&b, Outcome::Failure, at(s)).unwrap();
    }
    // At t = 12 the first three have left the window: one failure of two.
    call(&b, Outcome::Success, at(12)).unwrap();
    assert_eq!(
        b.snapshot(at(12)).totals,
        Totals {
            calls: 2,
            failures: 1,
            slow: 0
        }
    );
    for _ in 0..2 {
        call(&b, Outcome::Success, at(12)).unwrap();
    }
    assert_eq!(b.state(), CircuitState::Closed, "1 of 4");
    call(&b, Outcome::Failure, at(12)).unwrap();
    assert_eq!(b.state(), CircuitState::Closed, "2 of 5 = 40 %");
    call(&b, Outcome::Failure, at(12)).unwrap();
    assert_eq!(
        b.state(),
        CircuitState::Open,
        "3 of 6 = 50 %, in the same second"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_at_their_rate() {
    let (b, _) = breaker(
        config()
            .slow_calls(Duration::from_secs(5), 60.0)
            .build()
            .unwrap(),
    );
    for i in 0..5 {
        let permit = b.acquire(T0).unwrap();
        b.record(permit, Outcome::Success, i < 3, T0);
    }
    assert_eq!(b.state(), CircuitState::Open, "3 slow of 5 = 60 %");
}

fn trip(b: &Breaker, now: Duration) {
    for _ in 0..5 {
        let _ = call(b, Outcome::Failure, now);
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_with_the_time_to_the_next_probe() {
    let (b, _) = breaker(config().build().unwrap());
    trip(&b, T0);
    assert_eq!(
        b.acquire(Duration::from_secs(4)),
        Err(Rejection::Open(Some(Duration::from_secs(6))))
    );
    assert_eq!(b.snapshot(Duration::from_secs(4)).rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_probes() {
    let (b, events) = breaker(config().build().unwrap());
    trip(&b, T0);
    let at = Duration::from_secs(10);
    let p1 = b.acquire(at).unwrap();
    let p2 = b.acquire(at).unwrap();
    assert_eq!(b.state(), CircuitState::HalfOpen);
    assert!(
        matches!(b.acquire(at), Err(Rejection::Open(_))),
        "a third caller fails fast"
    );
    b.record(p1, Outcome::Success, false, at);
    b.record(p2, Outcome::Success, false, at);
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(
        *events.lock().unwrap(),
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer_and_a_healthy_close_resets_the_duration() {
    let (b, _) = breaker(config().build().unwrap());
    trip(&b, T0);
    let at = Duration::from_secs(10);
    let (p1, p2) = (b.acquire(at).unwrap(), b.acquire(at).unwrap());
    b.record(p1, Outcome::Failure, false, at);
    b.record(p2, Outcome::Success, false, at);
    assert_eq!(b.state(), CircuitState::Open);
    // Second trip: 20 s.
    assert_eq!(
        b.acquire(at + Duration::from_secs(19)),
        Err(Rejection::Open(Some(Duration::from_secs(1))))
    );
    let at = at + Duration::from_secs(20);
    let (p1, p2) = (b.acquire(at).unwrap(), b.acquire(at).unwrap());
    b.record(p1, Outcome::Success, false, at);
    b.record(p2, Outcome::Success, false, at);
    assert_eq!(b.state(), CircuitState::Closed);
    trip(&b, at);
    // After a healthy close the next trip is back to 10 s.
    assert_eq!(
        b.acquire(at + Duration::from_secs(9)),
        Err(Rejection::Open(Some(Duration::from_secs(1))))
    );
}

#[tokio::test(start_paused = true)]
async fn a_released_probe_gives_its_permit_back() {
    let (b, _) = breaker(config().half_open_probes(1).build().unwrap());
    trip(&b, T0);
    let at = Duration::from_secs(10);
    let p = b.acquire(at).unwrap();
    assert!(b.acquire(at).is_err());
    b.record(p, Outcome::Ignored, false, at); // dropped, cancelled, rate limited
    assert!(b.acquire(at).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_holds_recovery_back_at_most_one_deadline() {
    let (b, _) = breaker(
        config()
            .half_open_probes(1)
            .half_open_deadline(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    trip(&b, T0);
    let _hung = b.acquire(Duration::from_secs(10)).unwrap();
    assert!(b.acquire(Duration::from_secs(14)).is_err());
    // Five seconds on, a new probe is admitted and decides.
    let fresh = b.acquire(Duration::from_secs(15)).unwrap();
    b.record(fresh, Outcome::Success, false, Duration::from_secs(15));
    assert_eq!(b.state(), CircuitState::Closed);
    // The hung probe's late outcome belongs to an old phase: ignored.
    b.record(_hung, Outcome::Failure, false, Duration::from_secs(16));
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_disabled_and_metrics_only_behave_as_named() {
    let (b, _) = breaker(config().build().unwrap());
    b.set_state(CircuitState::ForcedOpen, T0);
    assert_eq!(
        b.acquire(Duration::from_secs(3600)),
        Err(Rejection::Open(None))
    );
    b.set_state(CircuitState::Disabled, T0);
    for _ in 0..50 {
        call(&b, Outcome::Failure, T0).unwrap();
    }
    assert_eq!(
        (b.state(), b.snapshot(T0).totals.calls),
        (CircuitState::Disabled, 0)
    );
    b.set_state(CircuitState::MetricsOnly, T0);
    for _ in 0..50 {
        call(&b, Outcome::Failure, T0).unwrap();
    }
    assert_eq!(b.state(), CircuitState::MetricsOnly);
    assert_eq!(b.snapshot(T0).totals.failures, 10);
    b.set_state(CircuitState::Closed, T0);
    assert_eq!(
        b.snapshot(T0).totals.calls,
        0,
        "closing by hand starts a fresh window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cooldown_fails_fast_without_counting_and_is_only_ever_extended() {
    let (b, _) = breaker(config().build().unwrap());
    b.cool_down(Duration::from_secs(30), T0, CooldownCause::RateLimited);
    b.cool_down(Duration::from_secs(10), T0, CooldownCause::RateLimited); // shorter: ignored
    assert_eq!(
        b.acquire(Duration::from_secs(20)),
        Err(Rejection::CoolingDown(Duration::from_secs(10)))
    );
    b.cool_down(
        Duration::from_secs(40),
        Duration::from_secs(20),
        CooldownCause::RateLimited,
    ); // later: extends to 60 s
    assert_eq!(
        b.acquire(Duration::from_secs(50)),
        Err(Rejection::CoolingDown(Duration::from_secs(10)))
    );
    assert!(b.acquire(Duration::from_secs(60)).is_ok());
    assert_eq!(
        (b.state(), b.snapshot(T0).totals.calls),
        (CircuitState::Closed, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_key_admits_without_the_time_only_while_no_cooldown_may_run() {
    let (b, _) = breaker(config().build().unwrap());
    assert!(b.admit_untimed().is_some());
    b.cool_down(Duration::from_secs(30), T0, CooldownCause::RateLimited);
    assert_eq!(
        b.admit_untimed(),
        None,
        "a cooldown is judged with the time"
    );
    assert!(b.acquire(Duration::from_secs(20)).is_err());
    assert_eq!(b.admit_untimed(), None);
    // The first call after its end clears it: the next need no time.
    assert!(b.acquire(Duration::from_secs(31)).is_ok());
    assert!(b.admit_untimed().is_some());
    // A cooldown started again is seen at once.
    b.cool_down(
        Duration::from_secs(5),
        Duration::from_secs(40),
        CooldownCause::RateLimited,
    );
    assert_eq!(b.admit_untimed(), None);
    assert!(b.acquire(Duration::from_secs(44)).is_err());
}

#[tokio::test(start_paused = true)]
async fn only_states_that_let_calls_through_admit_without_the_time() {
    let (b, _) = breaker(config().build().unwrap());
    for state in [
        CircuitState::Closed,
        CircuitState::MetricsOnly,
        CircuitState::Disabled,
    ] {
        b.set_state(state, T0);
        let untimed = b.admit_untimed();
        assert!(untimed.is_some(), "{state}");
        assert_eq!(untimed, b.acquire(T0).ok(), "{state}: the same permit");
    }
    for state in [
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::ForcedOpen,
    ] {
        b.set_state(state, T0);
        assert_eq!(b.admit_untimed(), None, "{state}");
    }
}

#[tokio::test(start_paused = true)]
async fn one_event_per_transition_when_many_threads_trip_it_at_once() {
    let (b, events) = breaker(
        config()
            .window(WindowKind::Count(100))
            .minimum_calls(10)
            .build()
            .unwrap(),
    );
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1000 {
                    if let Ok(p) = b.acquire(T0) {
                        b.record(p, Outcome::Failure, false, T0);
                    }
                }
            });
        }
    });
    assert_eq!(
        *events.lock().unwrap(),
        [(CircuitState::Closed, CircuitState::Open)]
    );
}

/// At half the threshold's failure rate, false trips happen as often as
/// the binomial law says, which they only do if every call is counted
/// exactly.
#[tokio::test(start_paused = true)]
async fn false_trips_at_half_the_threshold_match_the_binomial_prediction() {
    let (b, _) = breaker(
        config()
            .window(WindowKind::Count(20))
            .minimum_calls(20)
            .build()
            .unwrap(),
    );
    let (n, p, trials) = (20u32, 0.25f64, 100_000u32);
    let mut z = 12_345u64;
    let mut draw = || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((x ^ (x >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut trips = 0u32;
    for _ in 0..trials {
        b.set_state(CircuitState::Closed, T0);
        for _ in 0..n {
            let outcome = if draw() < p {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            let _ = call(&b, outcome, T0);
        }
        trips += u32::from(b.state() == CircuitState::Open);
    }
    // P(X >= 10) for X ~ Binomial(20, 0.25).
    let choose =
        |n: u32, k: u32| (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1));
    let expected: f64 = (10..=n)
        .map(|k| choose(n, k) * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32))
        .sum::<f64>()
        * f64::from(trials);
    let observed = f64::from(trips);
    assert!(
        (observed - expected).abs() <= 0.1 * expected,
        "{observed} trips, {expected:.0} expected"
    );
}

#[tokio::test(start_paused = true)]
async fn open_durations_are_jittered_within_their_spread() {
    let (b, _) = breaker(config().open_jitter(0.2).build().unwrap());
    let mut waits = Vec::new();
    for _ in 0..50 {
        b.set_state(CircuitState::Closed, T0);
        trip(&b, T0);
        let Err(Rejection::Open(Some(wait))) = b.acquire(T0) else {
            panic!()
        };
        assert!(
            wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
        waits.push(wait);
    }
    waits.sort();
    waits.dedup();
    assert!(
        waits.len() > 40,
        "the durations are spread: {} distinct of 50",
        waits.len()
    );
    assert!(waits[0] < Duration::from_secs(9) && waits[waits.len() - 1] > Duration::from_secs(11));
}
