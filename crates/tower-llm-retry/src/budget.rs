//! The retry budget: retries may add at most a fraction of recent traffic,
//! plus a small floor, so a full outage cannot multiply load.
//!
//! The design is Finagle's `RetryBudget` (also tower's `TpsBudget`):
//! every first attempt deposits, every retry withdraws, and deposits expire
//! after a time-to-live. Unlike tower's (`retry/budget/tps_budget.rs`),
//! withdrawal is a compare-and-swap on the current slot, so concurrent
//! retries cannot overdraw the budget, there is no lock on the happy path,
//! and a fraction below 1 is honoured exactly (tower#857).
//!
//! A withdrawal can be given back ([`RetryBudget::give_back`]) while it is
//! still inside the window: the retry layer does so for a retry that was
//! never sent and, as the AWS SDKs' retry quota does, for a retry that
//! succeeded (see [`RetryPolicyBuilder::refund_successful_retries`]).
//!
//! [`RetryPolicyBuilder::refund_successful_retries`]: crate::RetryPolicyBuilder::refund_successful_retries

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Slots the time-to-live is cut into: deposits expire one slot at a time.
const SLOTS: usize = 10;

/// A retry budget shared by every clone of a [`Retry`](crate::Retry)
/// service (it lives in an `Arc` made when the layer is built).
///
/// Within the last `ttl`, retries are allowed while
/// `retries < max(ratio × first attempts, min_per_second × ttl)`, where a
/// retry given back ([`give_back`](Self::give_back)) no longer counts.
///
/// The floor is a *minimum*, where Finagle and tower add it to the ratio:
/// it exists so that a client sending one request a minute can still
/// retry, and adding it would let a busy client exceed its ratio during an
/// outage. With the default — 10 % of traffic, at least 1 retry per second,
/// over 10 s — an outage stays at 1.1× the offered load at any rate of
/// 10 requests per second or more (the SRE book's per-client 10 % budget,
/// "Handling Overload"), and a quiet client gets at most one extra attempt
/// per second.
///
/// The retry layer gives back the withdrawal of a retry that succeeded
/// (on by default), so random failures spend only the retries that fail
/// too; see [`refund_successful_retries`] for what that changes.
///
/// [`refund_successful_retries`]: crate::RetryPolicyBuilder::refund_successful_retries
///
/// ```
/// use std::time::Duration;
/// use tower_llm_retry::RetryBudget;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.1).unwrap();
/// for _ in 0..1000 {
///     budget.deposit();
/// }
/// // 10 % of 1000 requests (the floor, 1/s over 10 s, is lower).
/// let taken: Vec<_> = (0..1000).filter_map(|_| budget.withdraw_retry()).collect();
/// assert_eq!(taken.len(), 100);
/// // A retry given back (it succeeded, or was never sent) can be taken again.
/// for withdrawal in taken.into_iter().take(5) {
///     budget.give_back(withdrawal);
/// }
/// assert_eq!(budget.remaining(), 5);
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    start: Instant,
    slot_nanos: u64,
    ttl: Duration,
    min_per_second: u32,
    ratio: f64,
    reserve: f64,
    deposits: [AtomicU64; SLOTS],
    withdrawals: [AtomicU64; SLOTS],
}

/// One retry taken from a [`RetryBudget`] by
/// [`withdraw_retry`](RetryBudget::withdraw_retry).
///
/// Dropping it keeps the retry spent until it leaves the budget's window;
/// [`RetryBudget::give_back`] returns it sooner. It remembers the slot it
/// was taken from, so a retry given back after its slot expired gives back
/// nothing: a budget never holds more than its deposits allow.
#[derive(Debug, PartialEq, Eq)]
pub struct RetryWithdrawal {
    /// The epoch of the slot it was counted in.
    epoch: u64,
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
            ttl,
            min_per_second,
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
            ttl: self.ttl,
            min_per_second: self.min_per_second,
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

    /// The window deposits and withdrawals count in.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The retries per second allowed whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The retries allowed per first attempt.
    pub fn ratio(&self) -> f64 {
        self.ratio
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

    /// The retries the window's deposits allow (the floor at least).
    fn allowed(&self, epoch: u64) -> f64 {
        (Self::sum(&self.deposits, epoch) as f64 * self.ratio).max(self.reserve)
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        Self::add(&self.deposits, self.epoch());
    }

    /// Takes one retry from the budget for good; `false` when it is empty.
    pub fn withdraw(&self) -> bool {
        self.withdraw_retry().is_some()
    }

    /// Takes one retry from the budget; `None` when it is empty. The
    /// withdrawal can be [given back](Self::give_back) while its slot is
    /// inside the window.
    pub fn withdraw_retry(&self) -> Option<RetryWithdrawal> {
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
            if spent as f64 + 1.0 > self.allowed(epoch) {
                return None;
            }
            let (next, taken_in) = if slot_epoch >= epoch {
                (pack(slot_epoch, count + 1), slot_epoch)
            } else {
                (pack(epoch, 1), epoch)
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(RetryWithdrawal { epoch: taken_in }),
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives a retry back: it no longer counts against the budget. Once its
    /// slot has left the window it no longer counted anyway, and nothing
    /// is given back, so the retries a window allows never exceed what its
    /// deposits (or the floor) allow.
    pub fn give_back(&self, withdrawal: RetryWithdrawal) {
        let token = withdrawal.epoch;
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

    /// Whether a retry would be allowed now (a look, not a withdrawal).
    pub(crate) fn has_room(&self) -> bool {
        let epoch = self.epoch();
        Self::sum(&self.withdrawals, epoch) as f64 + 1.0 <= self.allowed(epoch)
    }

    /// Retries still allowed now (rounded down).
    pub fn remaining(&self) -> u64 {
        let epoch = self.epoch();
        let spent = Self::sum(&self.withdrawals, epoch) as f64;
        let left = (self.allowed(epoch) - spent).max(0.0);
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
            ttl: Duration::from_secs(10),
            min_per_second: 1,
            ratio: 0.1,
            reserve: 10.0,
            deposits: Default::default(),
            withdrawals: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests;
