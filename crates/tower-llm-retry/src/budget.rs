//! The retry budget: retries may add at most a fraction of recent traffic,
//! plus a small floor, so a full outage cannot multiply load.
//!
//! The design is Finagle's `RetryBudget` (also tower's `TpsBudget`):
//! every first attempt deposits, every retry withdraws, and deposits expire
//! after a time-to-live. Unlike tower's (`retry/budget/tps_budget.rs`),
//! withdrawal is a compare-and-swap on the current slot, so concurrent
//! retries cannot overdraw the budget, there is no lock on the happy path,
//! and a fraction below 1 is honoured exactly (tower#857).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Slots the time-to-live is cut into: deposits expire one slot at a time.
const SLOTS: usize = 10;

/// A retry budget shared by every clone of a [`Retry`](crate::Retry)
/// service (it lives in an `Arc` made when the layer is built).
///
/// Within the last `ttl`, retries are allowed while
/// `retries < max(ratio × first attempts, min_per_second × ttl)`.
///
/// The floor is a *minimum*, where Finagle and tower add it to the ratio:
/// it exists so that a client sending one request a minute can still
/// retry, and adding it would let a busy client exceed its ratio during an
/// outage. With the default — 10 % of traffic, at least 1 retry per second,
/// over 10 s — an outage stays at 1.1× the offered load at any rate of
/// 10 requests per second or more (the SRE book's per-client 10 % budget,
/// "Handling Overload"), a quiet client gets at most one extra attempt per
/// second, and i.i.d. transient failures of up to 5 % (retry ratio
/// p + p² ≈ 5.25 %) are never denied.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_retry::RetryBudget;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.1).unwrap();
/// for _ in 0..100 {
///     budget.deposit();
/// }
/// // 10 % of 1000 requests (the floor, 1/s over 10 s, is lower).
/// for _ in 0..900 {
///     budget.deposit();
/// }
/// let allowed = (0..1000).filter(|_| budget.withdraw()).count();
/// assert_eq!(allowed, 100);
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    start: Instant,
    slot_nanos: u64,
    ratio: f64,
    reserve: f64,
    deposits: [AtomicU64; SLOTS],
    withdrawals: [AtomicU64; SLOTS],
}

/// A slot's content: its epoch (high 32 bits) and count (low 32 bits).
fn pack(epoch: u64, count: u64) -> u64 {
    (epoch << 32) | (count & 0xFFFF_FFFF)
}

fn unpack(value: u64) -> (u64, u64) {
    (value >> 32, value & 0xFFFF_FFFF)
}

impl RetryBudget {
    /// A budget over `ttl` (1 s to 60 s, as Finagle allows) allowing
    /// `ratio` (0 to 10) retries per first attempt plus `min_per_second`.
    pub fn new(ttl: Duration, min_per_second: u32, ratio: f64) -> Result<Self, String> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(format!(
                "retry budget ttl must be between 1 s and 60 s, not {ttl:?}"
            ));
        }
        if !ratio.is_finite() || !(0.0..=10.0).contains(&ratio) {
            return Err(format!(
                "retry budget ratio must be between 0 and 10, not {ratio}"
            ));
        }
        Ok(RetryBudget {
            start: Instant::now(),
            slot_nanos: (ttl.as_nanos() / SLOTS as u128).max(1) as u64,
            ratio,
            reserve: f64::from(min_per_second) * ttl.as_secs_f64(),
            deposits: Default::default(),
            withdrawals: Default::default(),
        })
    }

    /// A new, empty budget with the same parameters (for another target,
    /// whose retries should be measured against its own traffic).
    pub fn fresh(&self) -> RetryBudget {
        RetryBudget {
            start: Instant::now(),
            slot_nanos: self.slot_nanos,
            ratio: self.ratio,
            reserve: self.reserve,
            deposits: Default::default(),
            withdrawals: Default::default(),
        }
    }

    /// A budget that never denies a retry (not recommended: an outage then
    /// multiplies the load by the number of attempts).
    pub fn unlimited() -> Self {
        RetryBudget {
            reserve: f64::INFINITY,
            ..RetryBudget::default()
        }
    }

    fn epoch(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        // u64 nanoseconds last 584 years; +1 so that epoch 0 means "never written".
        let nanos = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        nanos / self.slot_nanos + 1
    }

    fn add(slots: &[AtomicU64; SLOTS], epoch: u64) {
        let slot = &slots[(epoch % SLOTS as u64) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_epoch, count) = unpack(current);
            let next = if slot_epoch >= epoch {
                pack(slot_epoch, count + 1)
            } else {
                pack(epoch, 1)
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn sum(slots: &[AtomicU64; SLOTS], epoch: u64) -> u64 {
        let oldest = epoch.saturating_sub(SLOTS as u64 - 1);
        slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(slot_epoch, _)| *slot_epoch >= oldest && *slot_epoch != 0)
            .map(|(_, count)| count)
            .sum()
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        Self::add(&self.deposits, self.epoch());
    }

    /// Takes one retry from the budget; `false` when it is empty.
    pub fn withdraw(&self) -> bool {
        self.withdraw_token().is_some()
    }

    /// Takes one retry; the token (its slot's epoch) lets it be given back.
    pub(crate) fn withdraw_token(&self) -> Option<u64> {
        let epoch = self.epoch();
        let slot = &self.withdrawals[(epoch % SLOTS as u64) as usize];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let (slot_epoch, count) = unpack(current);
            // This slot is compared-and-swapped, so no two retries spend
            // the same token in it. (Two threads on either side of a slot
            // boundary write different slots and may each take the last
            // token: an overdraw of at most one per such thread.)
            let others = Self::sum(&self.withdrawals, epoch)
                .saturating_sub(if slot_epoch == epoch { count } else { 0 });
            let spent = others + if slot_epoch >= epoch { count } else { 0 };
            let allowed = (Self::sum(&self.deposits, epoch) as f64 * self.ratio).max(self.reserve);
            if spent as f64 + 1.0 > allowed {
                return None;
            }
            let (next, token) = if slot_epoch >= epoch {
                (pack(slot_epoch, count + 1), slot_epoch)
            } else {
                (pack(epoch, 1), epoch)
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(token),
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back a retry that was never made (its caller went away while
    /// waiting), if its slot has not expired since.
    pub(crate) fn refund(&self, token: u64) {
        let slot = &self.withdrawals[(token % SLOTS as u64) as usize];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let (slot_epoch, count) = unpack(current);
            if slot_epoch != token || count == 0 {
                return;
            }
            let next = pack(slot_epoch, count - 1);
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Retries still allowed now (rounded down).
    pub fn remaining(&self) -> u64 {
        let epoch = self.epoch();
        let allowed = (Self::sum(&self.deposits, epoch) as f64 * self.ratio).max(self.reserve);
        let spent = Self::sum(&self.withdrawals, epoch) as f64;
        let left = (allowed - spent).max(0.0);
        if left.is_finite() {
            left as u64
        } else {
            u64::MAX
        }
    }
}

impl Default for RetryBudget {
    /// 10 % of traffic plus 1 retry per second, over 10 s.
    fn default() -> Self {
        RetryBudget {
            start: Instant::now(),
            slot_nanos: 1_000_000_000,
            ratio: 0.1,
            reserve: 10.0,
            deposits: Default::default(),
            withdrawals: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn the_reserve_alone_allows_min_per_second_times_ttl() {
        let budget = RetryBudget::new(Duration::from_secs(10), 2, 0.2).unwrap();
        assert_eq!((0..100).filter(|_| budget.withdraw()).count(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_after_a_quiet_spell_count_in_the_current_window() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
        budget.deposit();
        tokio::time::advance(Duration::from_secs(20)).await;
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_gives_the_retry_back_until_its_slot_expires() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap();
        budget.deposit();
        let token = budget.withdraw_token().unwrap();
        assert!(!budget.withdraw());
        budget.refund(token);
        let token = budget.withdraw_token().unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        budget.refund(token); // expired: nothing to give back
        budget.deposit();
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_is_a_minimum_not_an_addition() {
        let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.1).unwrap();
        for _ in 0..1000 {
            budget.deposit();
        }
        assert_eq!((0..1000).filter(|_| budget.withdraw()).count(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_after_the_ttl() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 5);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!budget.withdraw(), "the deposits expired");
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(
            (0..10).filter(|_| budget.withdraw()).count(),
            2,
            "old withdrawals expired too"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fraction_below_one_is_exact() {
        // tower#857: 0.6 was truncated to 1.0 there.
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.6).unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.withdraw()).count(), 6);
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let budget = Arc::new(RetryBudget::new(Duration::from_secs(60), 0, 1.0).unwrap());
        for _ in 0..1000 {
            budget.deposit();
        }
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let budget = Arc::clone(&budget);
                    s.spawn(move || (0..1000).filter(|_| budget.withdraw()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 1000);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(RetryBudget::new(Duration::from_millis(500), 1, 0.1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(61), 1, 0.1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, f64::NAN).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, -0.1).is_err());
    }

    #[test]
    fn unlimited_never_denies() {
        let budget = RetryBudget::unlimited();
        assert!((0..10_000).all(|_| budget.withdraw()));
        assert_eq!(budget.remaining(), u64::MAX);
    }
}
