//! One key's adaptive limit: calls in flight, the limit (or none: off),
//! and the calls waiting for room. Lock-free while there is room; the
//! queue's lock is taken only by calls that wait, by releases that hand
//! them room, and when the limit turns off; a small lock orders a
//! decrease against turning the limit off after a quiet period.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use tokio::time::Instant;

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
    /// It went well (and fast enough): counted, and the limit may grow.
    Success,
    /// The target shed it (overloaded): counted as shed; enough of them in
    /// a window lower the limit.
    Shed,
    /// The target answered otherwise (an error, a slow success): counted,
    /// neither shed nor growth.
    Answered,
    /// Nothing to learn: the caller went away, or this stack refused it.
    Nothing,
}

/// The window's state in one word: the decreases so far (its epoch, the
/// high 32 bits), and the answers and shed answers counted in the current
/// window (16 bits each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WindowState {
    epoch: u32,
    answers: u16,
    sheds: u16,
}

impl WindowState {
    fn unpack(word: u64) -> Self {
        WindowState {
            epoch: (word >> 32) as u32,
            answers: (word >> 16) as u16,
            sheds: word as u16,
        }
    }

    fn pack(self) -> u64 {
        (u64::from(self.epoch) << 32) | (u64::from(self.answers) << 16) | u64::from(self.sheds)
    }
}

/// The smallest window, in answers (a breaker's `minimum_calls` for the
/// same reason: fewer answers say too little).
const MIN_WINDOW: u16 = 20;

/// How many answers a window holds at `limit`: two limits' worth (about
/// two round trips of a key at its limit), at least [`MIN_WINDOW`].
fn window_size(limit: f64) -> u16 {
    let answers = (limit * 2.0).ceil().min(f64::from(u16::MAX)) as u16;
    answers.max(MIN_WINDOW)
}

/// The `limit` word of a key whose limit is off: no limit, no queue.
const OFF: u64 = f64::INFINITY.to_bits();

/// What counting an answer did to the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tally {
    /// Its shed answers reached the shed rate: a new epoch starts, and the
    /// limit is lowered (or turned on).
    Decrease,
    /// The window filled without that: a new window starts.
    WindowEnded,
    /// Counted, or not counted (an answer of an earlier epoch).
    Counted,
}

/// How many shed answers in a window of `size` reach `shed_rate` percent
/// (at least one).
fn sheds_needed(size: u16, shed_rate: f64) -> u16 {
    // A little below the exact product, so that 30 % of 20 is 6, not 7.
    ((f64::from(size) * shed_rate / 100.0 - 1e-9).ceil() as u16).max(1)
}

pub(crate) struct Limiter {
    in_flight: AtomicU32,
    /// The limit, an `f64`'s bits (it grows by fractions); [`OFF`] when
    /// there is none.
    limit: AtomicU64,
    /// When the limit was last lowered (or turned on), in nanoseconds
    /// after `start`: a limit on for a quiet period since turns off.
    lowered_at: AtomicU64,
    /// Held by a decrease while it notes `lowered_at` and lowers the
    /// limit, and by a quiet check while it turns the limit off: a
    /// decrease always keeps a racing check from turning it off.
    lowering: Mutex<()>,
    start: Instant,
    /// The window ([`WindowState`], packed): answers to calls admitted
    /// before the last decrease (another epoch) are not counted.
    window: AtomicU64,
    /// Calls in the queue.
    waiting: AtomicU32,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("in_flight", &self.in_flight())
            .field("limit", &self.is_on().then(|| self.limit()))
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl Limiter {
    pub(crate) fn new(config: &AdaptiveLimitConfig) -> Self {
        let limit = if config.off_until_shed {
            OFF
        } else {
            f64::from(config.initial).to_bits()
        };
        Limiter {
            in_flight: AtomicU32::new(0),
            limit: AtomicU64::new(limit),
            lowered_at: AtomicU64::new(0),
            lowering: Mutex::new(()),
            start: Instant::now(),
            window: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    fn limit_f64(&self) -> f64 {
        f64::from_bits(self.limit.load(Ordering::Acquire))
    }

    /// The limit, as calls (never below 1; `u32::MAX` when off).
    pub(crate) fn limit(&self) -> u32 {
        (self.limit_f64() as u32).max(1)
    }

    /// Whether the key has a limit now.
    pub(crate) fn is_on(&self) -> bool {
        self.limit.load(Ordering::Acquire) != OFF
    }

    /// Nanoseconds since the limiter was made (Tokio's clock).
    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.start)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    /// The epoch a call admitted now belongs to.
    pub(crate) fn window(&self) -> u32 {
        WindowState::unpack(self.window.load(Ordering::Acquire)).epoch
    }

    /// Takes room if there is some and nobody waits for it; with the
    /// limit off, always (one load and one add).
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        if self.limit.load(Ordering::SeqCst) == OFF {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            return true;
        }
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

    /// Joins the queue (at most `max_queue` long), unless room is free and
    /// nobody is ahead, or the limit has been quiet long enough to turn
    /// off.
    pub(crate) fn enqueue(&self, config: &AdaptiveLimitConfig) -> Queued {
        self.off_if_quiet(config);
        let max = config.max_queue;
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
    pub(crate) fn release(&self, window: u32, sample: Sample, config: &AdaptiveLimitConfig) {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let tally = match sample {
            Sample::Success => {
                let tally = self.count(window, false, before, config);
                self.grow(before, config);
                tally
            }
            Sample::Answered => self.count(window, false, before, config),
            Sample::Shed => self.count(window, true, before, config),
            Sample::Nothing => Tally::Counted,
        };
        match tally {
            Tally::Decrease => self.shrink(before, config),
            // Once per window, and only while on: the clock is read.
            Tally::WindowEnded => self.off_if_quiet(config),
            Tally::Counted => {}
        }
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.hand_over();
        }
    }

    /// Counts an answer to a call admitted in `epoch` (ignored if a
    /// decrease came since), with `in_flight` calls in flight: whether the
    /// window's shed answers now reach the shed rate of its full size,
    /// which starts a new epoch, or the window filled without that, which
    /// starts a new window in the same epoch. A window is sized by the
    /// limit, or by the calls in flight while there is none.
    fn count(&self, epoch: u32, shed: bool, in_flight: u32, config: &AdaptiveLimitConfig) -> Tally {
        let limit = self.limit_f64();
        let size = window_size(if limit.is_finite() {
            limit
        } else {
            f64::from(in_flight)
        });
        let needed = sheds_needed(size, config.shed_rate);
        let mut tally = Tally::Counted;
        let _ = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                tally = Tally::Counted;
                let mut w = WindowState::unpack(word);
                if w.epoch != epoch {
                    return None; // admitted before the last decrease
                }
                w.answers = w.answers.saturating_add(1);
                w.sheds = w.sheds.saturating_add(u16::from(shed));
                if shed && w.sheds >= needed {
                    tally = Tally::Decrease;
                    w = WindowState {
                        epoch: epoch.wrapping_add(1),
                        answers: 0,
                        sheds: 0,
                    };
                } else if w.answers >= size {
                    tally = Tally::WindowEnded;
                    w.answers = 0;
                    w.sheds = 0;
                }
                Some(w.pack())
            });
        tally
    }

    /// Additive increase: 1/limit, when at least half of it was in use.
    /// Past the maximum, the limit turns off (or stays at the maximum, when
    /// on from the start).
    fn grow(&self, in_flight: u32, config: &AdaptiveLimitConfig) {
        let max = f64::from(config.max);
        let grown = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let limit = f64::from_bits(bits);
                // Off (infinite) is never in use.
                if f64::from(in_flight) * 2.0 < limit {
                    return None;
                }
                let grown = limit + 1.0 / limit;
                if config.off_until_shed {
                    // A limit that started above the maximum does not grow.
                    (limit <= max).then(|| if grown > max { OFF } else { grown.to_bits() })
                } else {
                    (limit < max).then(|| grown.min(max).to_bits())
                }
            });
        if let Ok(bits) = grown
            && config.off_until_shed
        {
            let limit = f64::from_bits(bits);
            if limit + 1.0 / limit > max {
                self.switched_off("it grew past its maximum");
            }
        }
    }

    /// Multiplicative decrease (the window that decided it has ended); a
    /// limit that was off starts at what was in flight (`in_flight`, the
    /// deciding call included) times the backoff.
    fn shrink(&self, in_flight: u32, config: &AdaptiveLimitConfig) {
        let min = f64::from(config.min);
        let mut was_on = true;
        {
            // With the quiet check's lock: see `off_if_still_quiet`.
            let _lowering = self.lowering.lock().unwrap_or_else(|p| p.into_inner());
            self.lowered_at.store(self.now(), Ordering::Release);
            let _ = self
                .limit
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                    was_on = bits != OFF;
                    let from = if was_on {
                        f64::from_bits(bits)
                    } else {
                        f64::from(in_flight)
                    };
                    Some((from * config.backoff).max(min).to_bits())
                });
        }
        if was_on {
            tracing::debug!(target: crate::TRACING_TARGET, limit = self.limit(), "adaptive limit lowered: shed answers reached the shed rate of a window");
        } else {
            tracing::debug!(target: crate::TRACING_TARGET, limit = self.limit(), in_flight, "adaptive limit on: shed answers reached the shed rate of a window");
        }
    }

    /// Turns a limit that has not been lowered for the quiet period off.
    fn off_if_quiet(&self, config: &AdaptiveLimitConfig) {
        if self.is_quiet(config) {
            self.off_if_still_quiet(config);
        }
    }

    /// Whether the limit is on and was not lowered for the quiet period
    /// (no lock: most checks end here).
    fn is_quiet(&self, config: &AdaptiveLimitConfig) -> bool {
        if !config.off_until_shed || self.limit.load(Ordering::Acquire) == OFF {
            return false;
        }
        let quiet = u64::try_from(config.quiet_period.as_nanos()).unwrap_or(u64::MAX);
        let lowered_at = self.lowered_at.load(Ordering::Acquire);
        self.now().saturating_sub(lowered_at) >= quiet
    }

    /// Turns the limit off if it is still quiet, checked again under the
    /// lock `shrink` holds while it notes the time and lowers the limit.
    ///
    /// The limit's word alone cannot tell that a decrease came: at the
    /// minimum, `shrink` writes back the same bits, so a check that read
    /// the limit and the old `lowered_at` before a decrease would still
    /// turn the limit off after it (ABA) although the window just said to
    /// keep it on. Under the lock, this check runs wholly before a
    /// decrease (which then turns the limit on again from what is in
    /// flight) or wholly after it (and sees its `lowered_at`). The compare
    /// and swap stays for growth, which takes no lock.
    fn off_if_still_quiet(&self, config: &AdaptiveLimitConfig) {
        let turned_off = {
            let _lowering = self.lowering.lock().unwrap_or_else(|p| p.into_inner());
            let bits = self.limit.load(Ordering::Acquire);
            self.is_quiet(config)
                && self
                    .limit
                    .compare_exchange(bits, OFF, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        };
        if turned_off {
            self.switched_off("no window lowered it for its quiet period");
        }
    }

    /// The limit was just turned off: a new epoch (the window counted
    /// under the limit says nothing of the load without it), and every
    /// waiting call goes.
    fn switched_off(&self, why: &'static str) {
        self.next_epoch();
        tracing::debug!(target: crate::TRACING_TARGET, why, "adaptive limit off");
        // The queue's lock, even with nobody seen waiting: a call joining
        // the queue holds it while it looks for room, so it either sees the
        // limit off or is in the queue handed over here.
        self.hand_over();
    }

    fn next_epoch(&self) {
        let _ = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(
                    WindowState {
                        epoch: WindowState::unpack(word).epoch.wrapping_add(1),
                        answers: 0,
                        sheds: 0,
                    }
                    .pack(),
                )
            });
    }

    /// The key's breaker closed again after being open: the limit turns
    /// off (on from the start: a limit below the initial one starts again
    /// from it), in a new epoch (answers to calls admitted before are not
    /// counted), and calls waiting get the room.
    pub(crate) fn restart(&self, config: &AdaptiveLimitConfig) {
        if config.off_until_shed {
            if self.limit.swap(OFF, Ordering::AcqRel) != OFF {
                self.switched_off("the breaker closed again");
            } else {
                self.next_epoch();
            }
            return;
        }
        let initial = f64::from(config.initial);
        let raised = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                (f64::from_bits(bits) < initial).then_some(initial.to_bits())
            })
            .is_ok();
        self.next_epoch();
        if raised {
            tracing::debug!(target: crate::TRACING_TARGET, limit = self.limit(), "adaptive limit back to its initial value: the breaker closed again");
        }
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.hand_over();
        }
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
mod tests;
