//! One rate limit as a generic cell rate algorithm (GCRA): a token bucket
//! kept as a single number, the theoretical arrival time (TAT) of the next
//! unit once every unit admitted so far has been paid for.
//!
//! The idea is `governor`'s (and ATM's GCRA before it, ITU-T I.371): a
//! limit of `n` units per `window` pays each unit `window / n` of time;
//! a bucket of `burst` units lets the TAT run up to `burst` units' worth
//! ahead of now. A unit is admitted when the TAT it leads to stays within
//! that reach; otherwise the caller learns how long until it would be.
//! One atomic word per limit, updated by compare-and-swap: no lock, no
//! background refill.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A limit of `per_window` units per window, with a bucket of `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    /// Units per window (the limit callers are told).
    pub(crate) per_window: u64,
    /// Nanoseconds each unit costs (`window / per_window`, at least 1).
    unit_ns: u64,
    /// How far ahead of now the TAT may run: `burst` units' worth.
    reach_ns: u64,
}

impl Quota {
    /// `per_window` units per `window`, all of which may come at once
    /// (a bucket of one window's worth, as `governor`'s `Quota::per_minute`).
    /// `None` for a zero limit.
    pub(crate) fn new(per_window: u64, window: Duration) -> Option<Quota> {
        if per_window == 0 {
            return None;
        }
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let unit_ns = (window_ns / per_window).max(1);
        Some(Quota {
            per_window,
            unit_ns,
            reach_ns: unit_ns.saturating_mul(per_window),
        })
    }

    /// The most units one request may ask for: a bucket's worth.
    pub(crate) fn capacity(&self) -> u64 {
        self.per_window
    }
}

/// What a request for units came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted; what is left.
    Admitted(Standing),
    /// Not now: admitted in `wait` at the earliest, if nothing else is.
    Wait {
        /// How long until the units fit.
        wait: Duration,
        /// The bucket as it stands (nothing was taken).
        standing: Standing,
    },
    /// Never: more units than the bucket holds.
    TooLarge,
}

/// A bucket's standing, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    /// The limit per window.
    pub(crate) limit: u64,
    /// Units that could be taken now.
    pub(crate) remaining: u64,
    /// How long until the bucket is full again (OpenAI's
    /// `x-ratelimit-reset-*`: "the time until the rate limit resets to its
    /// initial state").
    pub(crate) reset: Duration,
}

/// One limit's state: the TAT, in nanoseconds since the clock's origin
/// (0: a full bucket).
#[derive(Debug, Default)]
pub(crate) struct Cell {
    tat: AtomicU64,
}

impl Cell {
    /// Takes `units` at `now` (nanoseconds since the clock's origin) when
    /// they fit.
    pub(crate) fn take(&self, quota: &Quota, units: u64, now: u64) -> Decision {
        if units > quota.capacity() {
            return Decision::TooLarge;
        }
        let cost = units.saturating_mul(quota.unit_ns);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            let next = start.saturating_add(cost);
            let ahead = next - now;
            if ahead > quota.reach_ns {
                return Decision::Wait {
                    wait: Duration::from_nanos(ahead - quota.reach_ns),
                    standing: standing(quota, start - now),
                };
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Decision::Admitted(standing(quota, ahead)),
                Err(current) => tat = current,
            }
        }
    }

    /// Gives back `units` taken by a request that was then refused for
    /// another limit (never before now: what has refilled stays refilled).
    pub(crate) fn give_back(&self, quota: &Quota, units: u64, now: u64) {
        let refund = units.saturating_mul(quota.unit_ns);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(refund).max(now.min(tat)))
            });
    }
}

/// The standing of a bucket whose TAT is `ahead` of now.
fn standing(quota: &Quota, ahead: u64) -> Standing {
    let free = quota.reach_ns.saturating_sub(ahead);
    Standing {
        limit: quota.per_window,
        remaining: (free / quota.unit_ns).min(quota.per_window),
        reset: Duration::from_nanos(ahead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_admits_a_whole_minute_at_once_then_waits_for_one_unit() {
        let quota = Quota::new(60, MINUTE).unwrap();
        let cell = Cell::default();
        for taken in 1..=60 {
            match cell.take(&quota, 1, 0) {
                Decision::Admitted(s) => assert_eq!(s.remaining, 60 - taken),
                other => panic!("request {taken}: {other:?}"),
            }
        }
        assert_eq!(
            cell.take(&quota, 1, 0),
            Decision::Wait {
                wait: Duration::from_secs(1),
                standing: Standing {
                    limit: 60,
                    remaining: 0,
                    reset: MINUTE
                }
            }
        );
    }

    #[test]
    fn units_come_back_at_the_limits_rate() {
        let quota = Quota::new(60, MINUTE).unwrap();
        let cell = Cell::default();
        for _ in 0..60 {
            cell.take(&quota, 1, 0);
        }
        // One unit per second comes back.
        assert!(matches!(cell.take(&quota, 1, SEC), Decision::Admitted(_)));
        assert!(matches!(cell.take(&quota, 1, SEC), Decision::Wait { .. }));
        match cell.take(&quota, 1, 31 * SEC) {
            Decision::Admitted(s) => {
                assert_eq!((s.remaining, s.reset), (29, Duration::from_secs(31)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_for_more_than_the_bucket_holds_is_never_admitted() {
        let quota = Quota::new(1000, MINUTE).unwrap();
        let cell = Cell::default();
        assert_eq!(cell.take(&quota, 1001, 0), Decision::TooLarge);
        assert!(matches!(cell.take(&quota, 1000, 0), Decision::Admitted(_)));
    }

    #[test]
    fn a_refused_request_takes_nothing() {
        let quota = Quota::new(10, MINUTE).unwrap();
        let cell = Cell::default();
        assert!(matches!(cell.take(&quota, 8, 0), Decision::Admitted(_)));
        assert!(matches!(cell.take(&quota, 5, 0), Decision::Wait { .. }));
        match cell.take(&quota, 2, 0) {
            Decision::Admitted(s) => assert_eq!(s.remaining, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn given_back_units_can_be_taken_again_but_never_beyond_a_full_bucket() {
        let quota = Quota::new(10, MINUTE).unwrap();
        let cell = Cell::default();
        cell.take(&quota, 10, 0);
        cell.give_back(&quota, 4, 0);
        match cell.take(&quota, 4, 0) {
            Decision::Admitted(s) => assert_eq!(s.remaining, 0),
            other => panic!("{other:?}"),
        }
        // Long after: the bucket is full; a refund adds nothing.
        cell.give_back(&quota, 10, 3600 * SEC);
        match cell.take(&quota, 10, 3600 * SEC) {
            Decision::Admitted(s) => assert_eq!(s.remaining, 0),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cell.take(&quota, 1, 3600 * SEC),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn a_zero_limit_is_no_quota() {
        assert_eq!(Quota::new(0, MINUTE), None);
    }
}
