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

/// How many shed answers in a window of `size` reach `shed_rate` percent
/// (at least one).
fn sheds_needed(size: u16, shed_rate: f64) -> u16 {
    // A little below the exact product, so that 30 % of 20 is 6, not 7.
    ((f64::from(size) * shed_rate / 100.0 - 1e-9).ceil() as u16).max(1)
}

pub(crate) struct Limiter {
    in_flight: AtomicU32,
    /// The limit, an `f64`'s bits (it grows by fractions).
    limit: AtomicU64,
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

    /// The epoch a call admitted now belongs to.
    pub(crate) fn window(&self) -> u32 {
        WindowState::unpack(self.window.load(Ordering::Acquire)).epoch
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
    pub(crate) fn release(&self, window: u32, sample: Sample, config: &AdaptiveLimitConfig) {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match sample {
            Sample::Success => {
                self.count(window, false, config);
                self.grow(before, config);
            }
            Sample::Answered => {
                self.count(window, false, config);
            }
            Sample::Shed => {
                if self.count(window, true, config) {
                    self.shrink(config);
                }
            }
            Sample::Nothing => {}
        }
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.hand_over();
        }
    }

    /// Counts an answer to a call admitted in `epoch` (ignored if a
    /// decrease came since); `true` if the window's shed answers now reach
    /// the shed rate of its full size, which starts a new epoch. A full
    /// window that did not starts a new window in the same epoch.
    fn count(&self, epoch: u32, shed: bool, config: &AdaptiveLimitConfig) -> bool {
        let size = window_size(self.limit_f64());
        let needed = sheds_needed(size, config.shed_rate);
        let updated = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let mut w = WindowState::unpack(word);
                if w.epoch != epoch {
                    return None; // admitted before the last decrease
                }
                w.answers = w.answers.saturating_add(1);
                w.sheds = w.sheds.saturating_add(u16::from(shed));
                if shed && w.sheds >= needed {
                    w = WindowState {
                        epoch: epoch.wrapping_add(1),
                        answers: 0,
                        sheds: 0,
                    };
                } else if w.answers >= size {
                    w.answers = 0;
                    w.sheds = 0;
                }
                Some(w.pack())
            });
        match updated {
            Ok(before) => shed && WindowState::unpack(before).sheds + 1 >= needed,
            Err(_) => false,
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

    /// Multiplicative decrease (the window that decided it has ended).
    fn shrink(&self, config: &AdaptiveLimitConfig) {
        let min = f64::from(config.min);
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some((f64::from_bits(bits) * config.backoff).max(min).to_bits())
            });
        tracing::debug!(target: crate::TRACING_TARGET, limit = self.limit(), "adaptive limit lowered: shed answers reached the shed rate of a window");
    }

    /// The key's breaker closed again after being open: a limit below the
    /// initial one starts again from it, in a new epoch (answers to calls
    /// admitted before are not counted), and calls waiting get the room.
    pub(crate) fn restart(&self, config: &AdaptiveLimitConfig) {
        let initial = f64::from(config.initial);
        let raised = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                (f64::from_bits(bits) < initial).then_some(initial.to_bits())
            })
            .is_ok();
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
