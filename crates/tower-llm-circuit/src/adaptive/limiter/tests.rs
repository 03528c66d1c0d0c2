//! The limiter alone: windows of answers, decreases, growth, the queue
//! and restarts, with calls made by hand; first with the limit on from
//! the start, then off until shed answers turn it on.

use super::*;

/// On from the start at 4 (at least 1, at most 8).
fn config() -> AdaptiveLimitConfig {
    AdaptiveLimitConfig::builder()
        .limits(4, 1, 8)
        .off_until_shed(false)
        .build()
        .unwrap()
}

#[test]
fn shed_answers_reaching_the_shed_rate_of_a_window_halve_the_limit_once() {
    let config = config();
    let limiter = Limiter::new(&config);
    // At a limit of 4 a window is 20 answers (the minimum), 30 % of
    // it 6 shed answers; calls of one epoch, at most 4 at once.
    let mut before = Vec::new();
    for n in 1..=6 {
        assert!(limiter.try_acquire());
        let window = limiter.window();
        if n > 3 {
            before.push(window); // a call still running at the decrease
            assert!(limiter.try_acquire());
        }
        limiter.release(window, Sample::Shed, &config);
        assert_eq!(limiter.limit(), if n < 6 { 4 } else { 2 }, "after {n}");
    }
    // Answers to calls admitted before the decrease count for nothing.
    for window in before {
        limiter.release(window, Sample::Shed, &config);
    }
    assert_eq!((limiter.limit(), limiter.in_flight()), (2, 0));
    for _ in 0..12 {
        assert!(limiter.try_acquire());
        let window = limiter.window();
        limiter.release(window, Sample::Shed, &config);
    }
    assert_eq!(limiter.limit(), 1, "never below the minimum");
    assert!(limiter.try_acquire(), "one call always goes");
}

#[test]
fn a_window_of_answers_with_too_few_shed_ones_ends_without_a_decrease() {
    let config = config();
    let limiter = Limiter::new(&config);
    let answer = |sample| {
        assert!(limiter.try_acquire());
        limiter.release(limiter.window(), sample, &config);
    };
    // 5 shed answers of 20 (25 %), then 5 more in the next window:
    // 10 of 25 in a row, but never 6 of one window.
    for n in 0..20 {
        answer(if n >= 15 {
            Sample::Shed
        } else {
            Sample::Answered
        });
    }
    for _ in 0..5 {
        answer(Sample::Shed);
    }
    assert_eq!(limiter.limit(), 4);
    answer(Sample::Shed);
    assert_eq!(limiter.limit(), 2, "the sixth of its window");
}

/// xorshift64*: a seeded draw, so the test sees the same answers on
/// every run.
fn draws(mut seed: u64) -> impl FnMut() -> f64 {
    move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `callers` callers each with one call at a time (waiting for room
/// when over the limit), `answers` answers, the n-th shed if
/// `shed(n)`: the lowest limit seen. The calls still running at the
/// end go away.
fn closed_loop(
    limiter: &Limiter,
    config: &AdaptiveLimitConfig,
    callers: u32,
    answers: u32,
    mut shed: impl FnMut(u32) -> bool,
) -> u32 {
    let mut running = VecDeque::new();
    let mut lowest = limiter.limit();
    for n in 0..answers {
        while running.len() < callers as usize && limiter.try_acquire() {
            running.push_back(limiter.window());
        }
        let window = running.pop_front().expect("one call at least");
        let sample = if shed(n) {
            Sample::Shed
        } else {
            Sample::Success
        };
        limiter.release(window, sample, config);
        lowest = lowest.min(limiter.limit());
    }
    for window in running {
        limiter.release(window, Sample::Nothing, config);
    }
    lowest
}

#[test]
fn random_shed_answers_of_a_fifth_of_the_calls_leave_the_limit_near_the_load() {
    // 32 callers, as the chaos suite's `transient` scenario, at a limit
    // of 32 (it may grow to 64 while the 32 use half of it).
    let config = AdaptiveLimitConfig::builder()
        .limits(32, 1, 64)
        .off_until_shed(false)
        .build()
        .unwrap();
    // Evenly spread, 20 % never makes 30 % of a window.
    let limiter = Limiter::new(&config);
    assert_eq!(
        closed_loop(&limiter, &config, 32, 10_000, |n| n % 5 == 0),
        32
    );
    // At random, a window of 64 reaches 30 % about once in 45 (2.2 %):
    // a decrease now and then, regrown, and the limit ends where it
    // was or higher. Two decreases in a row (in 2 of 29 seeds tried)
    // take it from twice the load (64) to half of it; a third, to a
    // quarter (8), does not come (0.01 %).
    let limiter = Limiter::new(&config);
    let mut draw = draws(11);
    let lowest = closed_loop(&limiter, &config, 32, 10_000, |_| draw() < 0.2);
    assert!(lowest > 8, "lowest {lowest}");
    assert!(limiter.limit() >= 32, "ends at {}", limiter.limit());
    // The same answers, where any shed answer lowers it (AIMD as it
    // was): about sqrt(1.5 / 0.2) ≈ 3.
    let any = config.to_builder().shed_rate(0.1).build().unwrap();
    let limiter = Limiter::new(&any);
    let mut draw = draws(11);
    let lowest = closed_loop(&limiter, &any, 32, 10_000, |_| draw() < 0.2);
    assert!(lowest <= 4, "lowest {lowest}");
}

#[test]
fn a_sustained_shed_share_of_two_fifths_halves_the_limit_window_after_window() {
    let config = AdaptiveLimitConfig::builder()
        .limits(32, 1, 64)
        .off_until_shed(false)
        .build()
        .unwrap();
    let limiter = Limiter::new(&config);
    // Two of every five answers shed: 20 of the first window's 64
    // answers come within its first 50.
    let lowest = closed_loop(&limiter, &config, 32, 50, |n| n % 5 < 2);
    assert_eq!(lowest, 16);
    // Still shedding: halved again and again, down to what the
    // answers let it keep.
    let lowest = closed_loop(&limiter, &config, 32, 500, |n| n % 5 < 2);
    assert!(lowest <= 4, "lowest {lowest}");
}

#[test]
fn a_restart_brings_a_lowered_limit_back_to_the_initial_one_and_forgets_its_window() {
    let config = config();
    let limiter = Limiter::new(&config);
    for _ in 0..5 {
        assert!(limiter.try_acquire());
        limiter.release(limiter.window(), Sample::Shed, &config);
    }
    assert!(limiter.try_acquire());
    let before = limiter.window();
    assert_eq!(limiter.limit(), 4);
    limiter.restart(&config);
    // The window's five shed answers, and the answer to a call
    // admitted before the restart, are forgotten.
    limiter.release(before, Sample::Shed, &config);
    assert!(limiter.try_acquire());
    limiter.release(limiter.window(), Sample::Shed, &config);
    assert_eq!(limiter.limit(), 4);
    // Lowered, it starts again from the initial limit; a limit above
    // it stays.
    for _ in 0..5 {
        assert!(limiter.try_acquire());
        limiter.release(limiter.window(), Sample::Shed, &config);
    }
    assert_eq!(limiter.limit(), 2);
    limiter.restart(&config);
    assert_eq!(limiter.limit(), 4);
    limiter
        .limit
        .store(7.5_f64.to_bits(), std::sync::atomic::Ordering::Release);
    limiter.restart(&config);
    assert_eq!(limiter.limit(), 7);
}

#[test]
fn a_restart_hands_the_room_it_makes_to_waiting_calls() {
    let config = config();
    let limiter = Limiter::new(&config);
    for _ in 0..6 {
        assert!(limiter.try_acquire());
        limiter.release(limiter.window(), Sample::Shed, &config);
    }
    for _ in 0..2 {
        assert!(limiter.try_acquire());
    }
    let Queued::Waiting(waiter) = limiter.enqueue(
        &config
            .to_builder()
            .queue(4, std::time::Duration::from_secs(1))
            .build()
            .unwrap(),
    ) else {
        panic!("waits")
    };
    let waker = std::task::Waker::noop();
    assert!(!waiter.poll_granted(waker));
    limiter.restart(&config);
    assert!(waiter.poll_granted(waker));
    assert_eq!((limiter.in_flight(), limiter.waiting()), (3, 0));
}

#[test]
fn successes_grow_the_limit_by_one_per_limit_only_when_it_is_in_use() {
    let config = config();
    let limiter = Limiter::new(&config);
    // One call at a time out of four: not in use, no growth.
    for _ in 0..20 {
        assert!(limiter.try_acquire());
        limiter.release(0, Sample::Success, &config);
    }
    assert_eq!(limiter.limit(), 4);
    // Three in flight (over half of it): each success adds 1/limit,
    // so a limit's worth of successes raises it by one.
    for _ in 0..3 {
        assert!(limiter.try_acquire());
    }
    for n in 1..=5 {
        limiter.release(0, Sample::Success, &config);
        assert!(limiter.try_acquire());
        assert_eq!(limiter.limit(), if n < 5 { 4 } else { 5 }, "after {n}");
    }
    for _ in 0..limiter.in_flight() {
        limiter.release(0, Sample::Nothing, &config);
    }
    for _ in 0..200 {
        for _ in 0..8 {
            let _ = limiter.try_acquire();
        }
        for _ in 0..limiter.in_flight() {
            limiter.release(0, Sample::Success, &config);
        }
    }
    assert_eq!(limiter.limit(), 8, "the maximum");
}

#[test]
fn a_release_hands_its_room_to_the_first_waiter_and_a_newcomer_does_not_overtake() {
    let config = config();
    let limiter = Limiter::new(&config);
    for _ in 0..4 {
        assert!(limiter.try_acquire());
    }
    let two = config
        .to_builder()
        .queue(2, std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    let Queued::Waiting(first) = limiter.enqueue(&two) else {
        panic!("waits")
    };
    let Queued::Waiting(second) = limiter.enqueue(&two) else {
        panic!("waits")
    };
    assert!(matches!(limiter.enqueue(&two), Queued::Full));
    let waker = std::task::Waker::noop();
    assert!(!first.poll_granted(waker));
    limiter.release(0, Sample::Nothing, &config);
    assert!(first.poll_granted(waker));
    assert!(!second.poll_granted(waker));
    assert!(!limiter.try_acquire(), "the second waiter is ahead");
    assert_eq!((limiter.in_flight(), limiter.waiting()), (4, 1));
    // The second gives up: it leaves, and nothing is owed.
    assert!(limiter.leave(&second));
    assert!(!limiter.leave(&first), "granted: it holds room");
    assert_eq!((limiter.in_flight(), limiter.waiting()), (4, 0));
}

/// Off until shed, as `standard`, with a maximum of 8.
fn off_until_shed() -> AdaptiveLimitConfig {
    AdaptiveLimitConfig::builder()
        .limits(4, 1, 8)
        .build()
        .unwrap()
}

/// Keeps `in_flight` calls running, each answered shed and called again,
/// until the limit turns on; the calls still running.
fn turn_on(limiter: &Limiter, config: &AdaptiveLimitConfig, in_flight: u32) -> VecDeque<u32> {
    let mut running: VecDeque<u32> = (0..in_flight)
        .map(|_| {
            assert!(limiter.try_acquire());
            limiter.window()
        })
        .collect();
    while !limiter.is_on() {
        let window = running.pop_front().expect("a call");
        limiter.release(window, Sample::Shed, config);
        if limiter.try_acquire() {
            running.push_back(limiter.window());
        }
    }
    running
}

#[test]
fn an_off_limit_admits_every_call_at_once_and_successes_keep_it_off() {
    let config = AdaptiveLimitConfig::standard();
    let limiter = Limiter::new(&config);
    for _ in 0..500 {
        assert!(limiter.try_acquire());
    }
    assert_eq!((limiter.in_flight(), limiter.waiting()), (500, 0));
    for _ in 0..500 {
        limiter.release(limiter.window(), Sample::Success, &config);
    }
    assert!(!limiter.is_on());
    assert_eq!(limiter.limit(), u32::MAX);
}

#[test]
fn a_shed_share_of_two_fifths_turns_the_limit_on_at_half_of_what_was_in_flight_and_queues_the_rest()
{
    let config = AdaptiveLimitConfig::standard();
    let limiter = Limiter::new(&config);
    let mut running: VecDeque<u32> = (0..40)
        .map(|_| {
            assert!(limiter.try_acquire());
            limiter.window()
        })
        .collect();
    // While off, a window is twice the 40 in flight: 80 answers, 30 % of
    // it 24 shed. Two of every five answers are shed; each caller calls
    // again.
    let mut answers = 0;
    while !limiter.is_on() {
        let window = running.pop_front().unwrap();
        let sample = if answers % 5 < 2 {
            Sample::Shed
        } else {
            Sample::Success
        };
        limiter.release(window, sample, &config);
        answers += 1;
        if limiter.try_acquire() {
            running.push_back(limiter.window());
        }
    }
    assert_eq!(answers, 57, "the 24th shed answer");
    assert_eq!(limiter.limit(), 20, "half of the 40 in flight");
    // 39 still run: the caller whose answer turned it on, and any other,
    // waits.
    assert_eq!(limiter.in_flight(), 39);
    assert!(!limiter.try_acquire());
    assert!(matches!(limiter.enqueue(&config), Queued::Waiting(_)));
}

#[test]
fn a_limit_turned_on_never_starts_below_its_minimum() {
    let config = off_until_shed()
        .to_builder()
        .limits(4, 3, 8)
        .build()
        .unwrap();
    let limiter = Limiter::new(&config);
    turn_on(&limiter, &config, 1);
    assert_eq!(limiter.limit(), 3);
}

#[test]
fn a_limit_that_grows_past_its_maximum_turns_off_and_lets_its_waiting_calls_go() {
    let config = off_until_shed();
    let limiter = Limiter::new(&config);
    let running = turn_on(&limiter, &config, 8);
    assert_eq!(limiter.limit(), 4);
    let Queued::Waiting(waiter) = limiter.enqueue(&config) else {
        panic!("waits")
    };
    // Answers of calls admitted before it turned on are not counted.
    for window in running {
        limiter.release(window, Sample::Nothing, &config);
    }
    assert!(waiter.poll_granted(std::task::Waker::noop()));
    // At its limit, a limit's worth of successes adds one: 4 + 5 + 6 + 7
    // successes take it to 8 (give or take the rounding of the
    // fractions), and the next past it.
    let mut successes = 0;
    while limiter.is_on() && successes < 30 {
        while limiter.try_acquire() {}
        limiter.release(limiter.window(), Sample::Success, &config);
        successes += 1;
    }
    assert!(!limiter.is_on(), "on after {successes} successes");
    assert!(successes > 22, "off after {successes} successes");
    for _ in 0..100 {
        assert!(limiter.try_acquire());
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_limit_not_lowered_for_its_quiet_period_turns_off_and_lets_its_waiting_calls_go() {
    let config = off_until_shed();
    let limiter = Limiter::new(&config);
    let _running = turn_on(&limiter, &config, 4);
    assert_eq!((limiter.limit(), limiter.in_flight()), (2, 3));
    let Queued::Waiting(waiter) = limiter.enqueue(&config) else {
        panic!("waits")
    };
    tokio::time::advance(config.quiet_period() - std::time::Duration::from_millis(1)).await;
    assert!(matches!(limiter.enqueue(&config), Queued::Waiting(_)));
    tokio::time::advance(std::time::Duration::from_millis(1)).await;
    // The next call that would wait finds the period over.
    assert!(matches!(limiter.enqueue(&config), Queued::Admitted));
    assert!(!limiter.is_on());
    assert!(waiter.poll_granted(std::task::Waker::noop()));
    assert_eq!((limiter.in_flight(), limiter.waiting()), (6, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_window_that_ends_after_the_quiet_period_turns_the_limit_off() {
    let config = off_until_shed();
    let limiter = Limiter::new(&config);
    for window in turn_on(&limiter, &config, 4) {
        limiter.release(window, Sample::Nothing, &config);
    }
    tokio::time::advance(config.quiet_period()).await;
    // At a limit of 2, a window is 20 answers.
    for n in 1..=20 {
        assert!(limiter.is_on(), "after {n}");
        assert!(limiter.try_acquire());
        limiter.release(limiter.window(), Sample::Answered, &config);
    }
    assert!(!limiter.is_on());
}

#[test]
fn a_restart_turns_a_limit_that_is_on_off() {
    let config = off_until_shed();
    let limiter = Limiter::new(&config);
    let running = turn_on(&limiter, &config, 8);
    let Queued::Waiting(waiter) = limiter.enqueue(&config) else {
        panic!("waits")
    };
    limiter.restart(&config);
    assert!(!limiter.is_on());
    assert!(waiter.poll_granted(std::task::Waker::noop()));
    assert_eq!(
        (limiter.in_flight(), limiter.waiting()),
        (running.len() as u32 + 1, 0)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_decrease_at_the_minimum_between_a_quiet_check_and_turning_off_keeps_the_limit_on() {
    let config = off_until_shed();
    let limiter = Limiter::new(&config);
    let _running = turn_on(&limiter, &config, 4);
    limiter.shrink(limiter.in_flight(), &config);
    assert_eq!(limiter.limit(), 1, "at its minimum");
    tokio::time::advance(config.quiet_period()).await;
    // A quiet check finds the period over...
    assert!(limiter.is_quiet(&config));
    let bits = limiter.limit.load(Ordering::SeqCst);
    // ...then a window lowers the limit, at its minimum: the same bits...
    limiter.shrink(limiter.in_flight(), &config);
    assert_eq!(limiter.limit.load(Ordering::SeqCst), bits);
    // ...and the check, going on to turn it off, sees the decrease.
    limiter.off_if_still_quiet(&config);
    assert!(limiter.is_on());
    assert_eq!(limiter.limit(), 1);
}
