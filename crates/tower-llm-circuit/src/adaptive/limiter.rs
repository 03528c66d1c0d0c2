//! One key's adaptive limit: calls in flight, the limit, and the calls
//! waiting for room. Lock-free while there is room; the queue's lock is
//! taken only by calls that wait and by releases that hand them room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use super::config::AdaptiveLimitConfig;

/// A call waiting for room: granted by a release, which hands its slot
/// over directly (FIFO; a new call does not overtake waiting ones).
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    /// Whether room was handed over; else registers `waker`.
    pub(crate) fn poll_granted(&self, waker: &Waker) -> bool {
        if self.granted.load(Ordering::SeqCst) {
            return true;
        }
        {
            let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        // Granted while the waker was stored: the granter may have found
        // none to wake.
        self.granted.load(Ordering::SeqCst)
    }
}

/// Whether a call waits.
#[derive(Debug)]
pub(crate) enum Queued {
    /// Room was free after all: the call goes.
    Admitted,
    /// It waits for room.
    Waiting(Arc<Waiter>),
    /// The queue is full.
    Full,
}

/// How a call ended, for the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sample {
    /// It went well (and fast enough): the limit may grow.
    Success,
    /// The target shed it (overloaded): the limit shrinks, once per window.
    Shed,
    /// Nothing to learn (another failure, or the caller went away).
    Nothing,
}

pub(crate) struct Limiter {
    in_flight: AtomicU32,
    /// The limit, an `f64`'s bits (it grows by fractions).
    limit: AtomicU64,
    /// Decreases so far: a shed call admitted before the last one does not
    /// lower the limit again.
    window: AtomicU64,
    /// Calls in the queue.
    waiting: AtomicU32,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("in_flight", &self.in_flight())
            .field("limit", &self.limit())
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl Limiter {
    pub(crate) fn new(config: &AdaptiveLimitConfig) -> Self {
        Limiter {
            in_flight: AtomicU32::new(0),
            limit: AtomicU64::new(f64::from(config.initial).to_bits()),
            window: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    fn limit_f64(&self) -> f64 {
        f64::from_bits(self.limit.load(Ordering::Acquire))
    }

    /// The limit, as calls (never below 1).
    pub(crate) fn limit(&self) -> u32 {
        (self.limit_f64() as u32).max(1)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    /// The window a call admitted now belongs to.
    pub(crate) fn window(&self) -> u64 {
        self.window.load(Ordering::Acquire)
    }

    /// Takes room if there is some and nobody waits for it.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) == 0 && self.take()
    }

    fn take(&self) -> bool {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Joins the queue (at most `max` long), unless room is free and
    /// nobody is ahead.
    pub(crate) fn enqueue(&self, max: u32) -> Queued {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        // Counted before room is looked for, so that a release that misses
        // the room taken here sees a waiter (both SeqCst).
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if queue.is_empty() && self.take() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Queued::Admitted;
        }
        if queue.len() >= max as usize {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Queued::Full;
        }
        let waiter = Arc::new(Waiter::default());
        queue.push_back(Arc::clone(&waiter));
        Queued::Waiting(waiter)
    }

    /// Leaves the queue (the wait ran out, or the call was dropped):
    /// `true` if it was still waiting; `false` if room had been handed to
    /// it meanwhile (its holder now owns a call's room).
    pub(crate) fn leave(&self, waiter: &Arc<Waiter>) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            Some(at) => {
                queue.remove(at);
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// A call admitted in `window` ended: its room is freed and the limit
    /// learns from `sample`.
    pub(crate) fn release(&self, window: u64, sample: Sample, config: &AdaptiveLimitConfig) {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match sample {
            Sample::Success => self.grow(before, config),
            Sample::Shed => self.shrink(window, config),
            Sample::Nothing => {}
        }
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.hand_over();
        }
    }

    /// Additive increase: 1/limit, when at least half of it was in use.
    fn grow(&self, in_flight: u32, config: &AdaptiveLimitConfig) {
        let max = f64::from(config.max);
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let limit = f64::from_bits(bits);
                (f64::from(in_flight) * 2.0 >= limit && limit < max)
                    .then(|| (limit + 1.0 / limit).min(max).to_bits())
            });
    }

    /// Multiplicative decrease, once per window.
    fn shrink(&self, window: u64, config: &AdaptiveLimitConfig) {
        if self
            .window
            .compare_exchange(window, window + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // admitted before the last decrease
        }
        let min = f64::from(config.min);
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some((f64::from_bits(bits) * config.backoff).max(min).to_bits())
            });
        tracing::debug!(target: crate::TRACING_TARGET, limit = self.limit(), "adaptive limit lowered after a shed answer");
    }

    /// Hands free room to the calls at the head of the queue.
    fn hand_over(&self) {
        let mut woken = Vec::new();
        {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            while !queue.is_empty() && self.take() {
                if let Some(waiter) = queue.pop_front() {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    waiter.granted.store(true, Ordering::SeqCst);
                    let waker = waiter
                        .waker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    woken.extend(waker);
                }
            }
        }
        // Woken outside the lock: a waker may run the task at once.
        for waker in woken {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdaptiveLimitConfig {
        AdaptiveLimitConfig::builder()
            .limits(4, 1, 8)
            .build()
            .unwrap()
    }

    #[test]
    fn a_shed_answer_halves_the_limit_once_per_window_and_never_below_the_minimum() {
        let config = config();
        let limiter = Limiter::new(&config);
        let window = limiter.window();
        for _ in 0..4 {
            assert!(limiter.try_acquire());
        }
        assert!(!limiter.try_acquire());
        // Four shed answers of one window: one decrease.
        for _ in 0..4 {
            limiter.release(window, Sample::Shed, &config);
        }
        assert_eq!(limiter.limit(), 2);
        for _ in 0..5 {
            assert!(limiter.try_acquire());
            let window = limiter.window();
            limiter.release(window, Sample::Shed, &config);
        }
        assert_eq!(limiter.limit(), 1);
        assert!(limiter.try_acquire(), "one call always goes");
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
        let Queued::Waiting(first) = limiter.enqueue(2) else {
            panic!("waits")
        };
        let Queued::Waiting(second) = limiter.enqueue(2) else {
            panic!("waits")
        };
        assert!(matches!(limiter.enqueue(2), Queued::Full));
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
}
