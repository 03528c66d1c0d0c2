//! Exhaustive interleavings of the transitions and the probe permits, with
//! loom: `RUSTFLAGS="--cfg tower_llm_loom" cargo test -p tower-llm-circuit --lib --release loom`.

use super::*;
use crate::window::WindowKind;
use loom::sync::atomic::AtomicUsize;

fn breaker(probes: u32, events: Arc<AtomicUsize>) -> Arc<Breaker> {
    let config = CircuitConfig::builder()
        .window(WindowKind::Count(4))
        .minimum_calls(2)
        .consecutive_failures(None)
        .open_jitter(0.0)
        .half_open_probes(probes)
        .build()
        .unwrap();
    let on: Arc<OnTransition> = Arc::new(move |_: &Transition| {
        events.fetch_add(1, Ordering::SeqCst);
    });
    Arc::new(Breaker::new(
        "k".into(),
        tokio::time::Instant::now(),
        Arc::new(config),
        Some(on),
        Duration::ZERO,
    ))
}

#[test]
fn loom_two_failures_racing_open_the_circuit_exactly_once() {
    loom::model(|| {
        let events = Arc::new(AtomicUsize::new(0));
        let b = breaker(1, Arc::clone(&events));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let b = Arc::clone(&b);
                loom::thread::spawn(move || {
                    let p = b.acquire(Duration::ZERO).unwrap();
                    b.record(p, Outcome::Failure, false, Duration::ZERO);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(events.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn loom_half_open_never_admits_more_probes_than_permitted() {
    loom::model(|| {
        let events = Arc::new(AtomicUsize::new(0));
        let b = breaker(1, events);
        b.set_state(CircuitState::HalfOpen, Duration::ZERO);
        let admitted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (b, admitted) = (Arc::clone(&b), Arc::clone(&admitted));
                loom::thread::spawn(move || {
                    if let Ok(p) = b.acquire(Duration::ZERO) {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        // The probe is abandoned: its permit goes back.
                        b.record(p, Outcome::Ignored, false, Duration::ZERO);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(admitted.load(Ordering::SeqCst) >= 1);
        assert!(
            Phase::unpack(b.phase.load(Ordering::SeqCst)).permits <= 1,
            "a permit was duplicated"
        );
        assert_eq!(
            Phase::unpack(b.phase.load(Ordering::SeqCst)).permits,
            1,
            "every released permit came back"
        );
    });
}

#[test]
fn loom_callers_ending_an_open_interval_together_arm_one_phase_of_n_probes() {
    loom::model(|| {
        let events = Arc::new(AtomicUsize::new(0));
        let b = breaker(1, events);
        b.set_state(CircuitState::Open, Duration::ZERO);
        // Far past any open interval.
        let later = Duration::from_secs(3600);
        let admitted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (b, admitted) = (Arc::clone(&b), Arc::clone(&admitted));
                loom::thread::spawn(move || {
                    if b.acquire(later).is_ok() {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(
            admitted.load(Ordering::SeqCst),
            1,
            "exactly the one permitted probe"
        );
        assert_eq!(b.state(), CircuitState::HalfOpen);
    });
}

#[test]
fn loom_racing_probe_outcomes_make_one_transition() {
    loom::model(|| {
        let events = Arc::new(AtomicUsize::new(0));
        let b = breaker(2, Arc::clone(&events));
        b.set_state(CircuitState::HalfOpen, Duration::ZERO);
        let before = events.load(Ordering::SeqCst);
        let permits = [
            b.acquire(Duration::ZERO).unwrap(),
            b.acquire(Duration::ZERO).unwrap(),
        ];
        let handles: Vec<_> = permits
            .into_iter()
            .map(|p| {
                let b = Arc::clone(&b);
                loom::thread::spawn(move || b.record(p, Outcome::Success, false, Duration::ZERO))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(events.load(Ordering::SeqCst) - before, 1);
    });
}
