//! Pacing views shared between replicas: what a key's answers said it has
//! left (requests, tokens) and when it is full again.
//!
//! Answers update a key's view on every call, too often to publish each:
//! a background task reads the views now and then
//! ([`CircuitHandle::shared_pacing`](tower_llm_circuit::CircuitHandle::shared_pacing))
//! and queues the ones that are low and changed since they were last
//! told, so the cost is bounded by time (one write per changed key per
//! interval), never by the number of calls, and no call waits for it; a
//! key with plenty left is not told at all.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tower_llm_circuit::{PaceBucket, SharedPacing};

use crate::publisher::Outgoing;
use crate::state::Shared;
use crate::wire::{WireBucket, WireDecision, from_epoch_ms, to_epoch_ms};

/// Two views whose resets differ by less than this are the same view
/// (each conversion to wall-clock time rounds anew).
const SAME_RESET_MS: u64 = 100;

/// A key's two buckets as they travel: requests, tokens.
pub(crate) type WireBuckets = [Option<WireBucket>; 2];

/// A local bucket as it travels.
pub(crate) fn to_wire(bucket: PaceBucket) -> WireBucket {
    WireBucket {
        remaining: bucket.remaining,
        full_at_ms: to_epoch_ms(bucket.full_at),
    }
}

/// A bucket heard from another replica, as this one's; `None` when it is
/// full again already.
pub(crate) fn from_wire(bucket: WireBucket) -> Option<PaceBucket> {
    from_epoch_ms(bucket.full_at_ms).map(|at: Instant| PaceBucket::new(bucket.remaining, at))
}

/// Another replica's view of `key`, as `apply_pacing` takes it; `None`
/// when nothing of it holds any more.
pub(crate) fn view(key: &str, buckets: WireBuckets) -> Option<SharedPacing> {
    let [requests, tokens] = buckets.map(|b| b.and_then(from_wire));
    (requests.is_some() || tokens.is_some()).then(|| SharedPacing::new(key, requests, tokens))
}

/// A view is told when one of its buckets has at most this fraction of
/// the most this replica has seen left in it (a stand-in for the limit,
/// which answers carry but the view does not), or nothing left: a key with
/// plenty left paces nothing, so a healthy fleet writes nothing.
const LOW: u64 = 10;

/// What this replica knows of a key's pacing beside its own view.
#[derive(Debug, Default)]
struct Memory {
    /// The view last told or heard.
    told: Option<WireBuckets>,
    /// The most seen left in each bucket.
    peak: [u64; 2],
    /// Seen at the last tick.
    seen: bool,
}

/// Per key: the view last told or heard (only changes go out, and a view
/// heard from another replica is not told back) and the most seen left.
#[derive(Debug, Default)]
pub(crate) struct PacingMemory(Mutex<HashMap<Arc<str>, Memory>>);

fn same(last: &WireBuckets, now: &WireBuckets) -> bool {
    last.iter().zip(now).all(|pair| match pair {
        (Some(a), Some(b)) => {
            a.remaining == b.remaining && a.full_at_ms.abs_diff(b.full_at_ms) < SAME_RESET_MS
        }
        (None, None) => true,
        _ => false,
    })
}

impl PacingMemory {
    /// `buckets` are what the fleet knows of `key` now (heard).
    pub(crate) fn note(&self, key: &str, buckets: WireBuckets) {
        let mut memory = self.0.lock().unwrap_or_else(|p| p.into_inner());
        memory.entry(Arc::from(key)).or_default().told = Some(buckets);
    }

    /// Whether this replica's view `buckets` of `key` is to be told: low,
    /// and not what was last told or heard (then noted as told).
    fn to_tell(&self, key: &Arc<str>, buckets: WireBuckets) -> bool {
        let mut memory = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = memory.entry(Arc::clone(key)).or_default();
        entry.seen = true;
        let mut low = false;
        for (peak, bucket) in entry.peak.iter_mut().zip(&buckets) {
            if let Some(bucket) = bucket {
                *peak = (*peak).max(bucket.remaining);
                low |= bucket.remaining.saturating_mul(LOW) <= *peak;
            }
        }
        if !low || entry.told.as_ref().is_some_and(|last| same(last, &buckets)) {
            return false;
        }
        entry.told = Some(buckets);
        true
    }

    /// Forgets what was told (after a reconnect: every low view goes out
    /// again).
    pub(crate) fn clear(&self) {
        let mut memory = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for entry in memory.values_mut() {
            entry.told = None;
        }
    }

    /// Forgets the keys that had no view at this tick and whose last told
    /// view is over.
    fn prune(&self, now_ms: u64) {
        let mut memory = self.0.lock().unwrap_or_else(|p| p.into_inner());
        memory.retain(|_, entry| {
            let live = entry.seen
                || entry
                    .told
                    .iter()
                    .flatten()
                    .flatten()
                    .any(|b| b.full_at_ms > now_ms);
            entry.seen = false;
            live
        });
    }
}

/// Every `every`, queues the pacing views that are low and changed, until
/// aborted with the last [`SharedState`](crate::SharedState).
pub(crate) async fn run(shared: Arc<Shared>, queue: mpsc::Sender<Outgoing>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for view in shared.pacing_views() {
            let buckets = [view.requests.map(to_wire), view.tokens.map(to_wire)];
            if !shared.pacing.to_tell(&view.key, buckets) {
                continue;
            }
            let [requests, tokens] = buckets;
            let decision = WireDecision::Pace { requests, tokens };
            if queue.try_send((view.key, decision)).is_err() {
                shared.health.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.pacing.prune(crate::wire::epoch_ms_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(remaining: u64, full_at_ms: u64) -> WireBuckets {
        [
            Some(WireBucket {
                remaining,
                full_at_ms,
            }),
            None,
        ]
    }

    #[test]
    fn only_a_low_view_that_changed_is_told() {
        let memory = PacingMemory::default();
        let key: Arc<str> = Arc::from("a/b");
        // Plenty left: nothing to tell, however it changes.
        assert!(!memory.to_tell(&key, requests(9_999, 1_000)));
        assert!(!memory.to_tell(&key, requests(5_000, 2_000)));
        // A tenth of the most seen left, then nothing left: told once each.
        assert!(memory.to_tell(&key, requests(999, 3_000)));
        assert!(!memory.to_tell(&key, requests(999, 3_050)));
        assert!(memory.to_tell(&key, requests(0, 3_000)));
        // Heard from another replica: not told back.
        memory.note(&key, requests(0, 9_000));
        assert!(!memory.to_tell(&key, requests(0, 9_000)));
        // After a reconnect, told again.
        memory.clear();
        assert!(memory.to_tell(&key, requests(0, 9_000)));
    }

    #[test]
    fn a_first_view_with_nothing_left_is_told() {
        let memory = PacingMemory::default();
        assert!(memory.to_tell(&Arc::from("k"), requests(0, 1)));
    }
}
