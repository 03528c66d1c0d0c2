//! Sliding windows of call outcomes: the last N calls, or the last N
//! seconds in one-second buckets. Recording is O(1) and lock-free.
//!
//! Resilience4j pre-aggregates ("subtract on evict",
//! `FixedSizeSlidingWindowMetrics`); so do we, with atomics: a count window
//! swaps the outcome in the evicted slot and adjusts running totals, so the
//! totals are exact once every recording has finished, however many threads
//! record at once.

#[cfg(tower_llm_loom)]
use loom::sync::atomic::{AtomicU8, AtomicU64, Ordering};
#[cfg(not(tower_llm_loom))]
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

/// The shape of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowKind {
    /// The last `n` recorded calls.
    Count(u32),
    /// The calls of the last `n` seconds.
    Time(u32),
}

/// One recorded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

impl Sample {
    /// 0 is an empty slot.
    fn code(self) -> u8 {
        1 | (u8::from(self.failure) << 1) | (u8::from(self.slow) << 2)
    }

    fn from_code(code: u8) -> Option<Sample> {
        (code != 0).then_some(Sample {
            failure: code & 2 != 0,
            slow: code & 4 != 0,
        })
    }
}

/// Totals over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls recorded.
    pub calls: u64,
    /// Of which failures.
    pub failures: u64,
    /// Of which slow (successes or failures).
    pub slow: u64,
}

impl Totals {
    /// Failures per call, in percent (0 with no calls).
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 * 100.0 / self.calls as f64
        }
    }

    /// Slow calls per call, in percent (0 with no calls).
    pub fn slow_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.slow as f64 * 100.0 / self.calls as f64
        }
    }
}

#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(kind: WindowKind) -> Window {
        match kind {
            WindowKind::Count(n) => Window::Count(CountWindow::new(n.max(1) as usize)),
            WindowKind::Time(n) => Window::Time(TimeWindow::new(n.max(1) as usize)),
        }
    }

    /// Records a call at `now` (time since the registry started).
    pub(crate) fn record(&self, sample: Sample, now: Duration) {
        match self {
            Window::Count(w) => w.record(sample),
            Window::Time(w) => w.record(sample, now),
        }
    }

    pub(crate) fn totals(&self, now: Duration) -> Totals {
        match self {
            Window::Count(w) => w.totals(),
            Window::Time(w) => w.totals(now),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

/// The last `n` calls: a ring of outcome codes and running totals.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl CountWindow {
    fn new(n: usize) -> Self {
        CountWindow {
            slots: (0..n).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            slow: AtomicU64::new(0),
        }
    }

    fn record(&self, sample: Sample) {
        let index = self.next.fetch_add(1, Ordering::AcqRel);
        let slot = &self.slots[(index % self.slots.len() as u64) as usize];
        let evicted = Sample::from_code(slot.swap(sample.code(), Ordering::AcqRel));
        // Add first, subtract after.
        if sample.failure {
            self.failures.fetch_add(1, Ordering::AcqRel);
        }
        if sample.slow {
            self.slow.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(evicted) = evicted {
            // Saturating: a reset racing this record may have zeroed the
            // total after the swap.
            let decrement = |total: &AtomicU64| {
                let _ = total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    Some(v.saturating_sub(1))
                });
            };
            if evicted.failure {
                decrement(&self.failures);
            }
            if evicted.slow {
                decrement(&self.slow);
            }
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            calls: self
                .next
                .load(Ordering::Acquire)
                .min(self.slots.len() as u64),
            failures: self.failures.load(Ordering::Acquire),
            slow: self.slow.load(Ordering::Acquire),
        }
    }

    fn reset(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Release);
        }
        self.next.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }
}

/// A bucket counter: epoch second in the high 32 bits, count in the low.
fn pack(epoch: u64, count: u64) -> u64 {
    (epoch << 32) | (count & 0xFFFF_FFFF)
}

fn unpack(value: u64) -> (u64, u64) {
    (value >> 32, value & 0xFFFF_FFFF)
}

/// The calls of the last `n` seconds, one bucket a second.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    calls: Box<[AtomicU64]>,
    failures: Box<[AtomicU64]>,
    slow: Box<[AtomicU64]>,
}

impl TimeWindow {
    fn new(n: usize) -> Self {
        let buckets = || {
            (0..n)
                .map(|_| AtomicU64::new(0))
                .collect::<Box<[AtomicU64]>>()
        };
        TimeWindow {
            calls: buckets(),
            failures: buckets(),
            slow: buckets(),
        }
    }

    /// Epoch seconds start at 1: 0 marks a bucket never written.
    fn epoch(now: Duration) -> u64 {
        now.as_secs() + 1
    }

    fn add(buckets: &[AtomicU64], epoch: u64) {
        let bucket = &buckets[(epoch % buckets.len() as u64) as usize];
        let mut current = bucket.load(Ordering::Acquire);
        loop {
            let (bucket_epoch, count) = unpack(current);
            let next = if bucket_epoch >= epoch {
                pack(bucket_epoch, count + 1)
            } else {
                pack(epoch, 1)
            };
            match bucket.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn sum(buckets: &[AtomicU64], epoch: u64) -> u64 {
        let oldest = epoch.saturating_sub(buckets.len() as u64 - 1).max(1);
        buckets
            .iter()
            .map(|b| unpack(b.load(Ordering::Acquire)))
            .filter(|(bucket_epoch, _)| *bucket_epoch >= oldest && *bucket_epoch <= epoch)
            .map(|(_, count)| count)
            .sum()
    }

    fn record(&self, sample: Sample, now: Duration) {
        let epoch = Self::epoch(now);
        Self::add(&self.calls, epoch);
        if sample.failure {
            Self::add(&self.failures, epoch);
        }
        if sample.slow {
            Self::add(&self.slow, epoch);
        }
    }

    fn totals(&self, now: Duration) -> Totals {
        let epoch = Self::epoch(now);
        Totals {
            calls: Self::sum(&self.calls, epoch),
            failures: Self::sum(&self.failures, epoch),
            slow: Self::sum(&self.slow, epoch),
        }
    }

    fn reset(&self) {
        for bucket in self
            .calls
            .iter()
            .chain(self.failures.iter())
            .chain(self.slow.iter())
        {
            bucket.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const OK: Sample = Sample {
        failure: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failure: true,
        slow: false,
    };
    const SLOW: Sample = Sample {
        failure: false,
        slow: true,
    };

    #[test]
    fn a_count_window_keeps_only_the_last_n_calls() {
        let w = Window::new(WindowKind::Count(4));
        for s in [FAIL, FAIL, OK, SLOW] {
            w.record(s, Duration::ZERO);
        }
        assert_eq!(
            w.totals(Duration::ZERO),
            Totals {
                calls: 4,
                failures: 2,
                slow: 1
            }
        );
        w.record(OK, Duration::ZERO); // evicts a failure
        w.record(OK, Duration::ZERO); // evicts the other
        assert_eq!(
            w.totals(Duration::ZERO),
            Totals {
                calls: 4,
                failures: 0,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.totals(Duration::ZERO), Totals::default());
    }

    #[test]
    fn a_time_window_forgets_old_buckets() {
        let w = Window::new(WindowKind::Time(10));
        let at = |s| Duration::from_secs(s);
        w.record(FAIL, at(0));
        w.record(FAIL, at(5));
        w.record(OK, at(9));
        assert_eq!(
            w.totals(at(9)),
            Totals {
                calls: 3,
                failures: 2,
                slow: 0
            }
        );
        assert_eq!(
            w.totals(at(10)),
            Totals {
                calls: 2,
                failures: 1,
                slow: 0
            },
            "second 0 has left"
        );
        w.record(OK, at(12)); // overwrites the bucket of second 2, which was empty
        assert_eq!(
            w.totals(at(15)),
            Totals {
                calls: 2,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(
            w.totals(at(100)),
            Totals::default(),
            "long idleness empties it"
        );
    }

    #[test]
    fn totals_are_exact_when_many_threads_record_at_once() {
        let w = Arc::new(Window::new(WindowKind::Count(1000)));
        std::thread::scope(|s| {
            for t in 0..4 {
                let w = Arc::clone(&w);
                s.spawn(move || {
                    for i in 0..10_000u32 {
                        let failure = (i + t) % 4 == 0;
                        w.record(
                            Sample {
                                failure,
                                slow: i % 10 == 0,
                            },
                            Duration::ZERO,
                        );
                    }
                });
            }
        });
        // Whatever interleaving, the totals match the slots that remain.
        let Window::Count(count) = &*w else {
            unreachable!()
        };
        let (mut failures, mut slow) = (0, 0);
        for slot in count.slots.iter() {
            let s = Sample::from_code(slot.load(Ordering::Acquire)).unwrap();
            failures += u64::from(s.failure);
            slow += u64::from(s.slow);
        }
        assert_eq!(
            w.totals(Duration::ZERO),
            Totals {
                calls: 1000,
                failures,
                slow
            }
        );
    }

    #[test]
    fn a_time_window_counts_exactly_under_contention() {
        let w = Arc::new(Window::new(WindowKind::Time(5)));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let w = Arc::clone(&w);
                s.spawn(move || {
                    for i in 0..10_000u32 {
                        w.record(
                            Sample {
                                failure: i % 2 == 0,
                                slow: false,
                            },
                            Duration::from_millis(1500),
                        );
                    }
                });
            }
        });
        assert_eq!(
            w.totals(Duration::from_secs(1)),
            Totals {
                calls: 40_000,
                failures: 20_000,
                slow: 0
            }
        );
    }
}
