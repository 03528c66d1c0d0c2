//! The gateway's recent activity, for `/health` and the status page: the
//! last minute per target (requests, failures, latency quantiles from
//! log-spaced bins) and the last fallbacks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

// Target names come from the configuration, never from callers: a fast
// hasher, not SipHash, for the lookup every request makes.
use foldhash::HashMap;
use std::time::{Duration, Instant};

/// Targets tracked for `/health`; past this many names (only the
/// configuration names targets, but a bound costs nothing) the rest are
/// counted in the metrics only.
const MAX_TARGETS: usize = 256;
/// Fallbacks kept for the status page.
const RECENT_FALLBACKS: usize = 20;
/// The window of the per-target figures, one slot per second.
const WINDOW_SECONDS: usize = 60;
/// Latency bins: bin `i` holds what took at most `1.25^i` ms (the last one
/// everything longer), so a quantile read from them is within 25 % of the
/// truth up to ~20 minutes.
const BINS: usize = 64;
const BIN_GROWTH: f64 = 1.25;

/// The gateway's recent activity: the last minute per target and the last
/// fallbacks. Shared by the middleware (which writes) and `/health`.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    targets: Mutex<HashMap<Arc<str>, Window>>,
    fallbacks: Mutex<VecDeque<Fallback>>,
}

/// A fallback as the status page lists it.
#[derive(Clone, Debug)]
pub(crate) struct Fallback {
    pub(crate) at: Instant,
    pub(crate) endpoint: &'static str,
    pub(crate) served_by: Arc<str>,
    /// The targets passed with why (`primary:overloaded`).
    pub(crate) passed: String,
}

/// One target's last minute, as `/health` shows it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TargetFigures {
    pub(crate) target: Arc<str>,
    pub(crate) requests: u64,
    pub(crate) failed: u64,
    pub(crate) per_second: f64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

#[derive(Debug)]
struct Window {
    slots: Box<[Slot; WINDOW_SECONDS]>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The second (since the epoch) the slot holds; older ones are stale.
    second: u64,
    requests: u32,
    failed: u32,
    bins: [u32; BINS],
}

const EMPTY_SLOT: Slot = Slot {
    second: u64::MAX,
    requests: 0,
    failed: 0,
    bins: [0; BINS],
};

fn bin_of(elapsed: Duration) -> usize {
    let ms = elapsed.as_secs_f64() * 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    // `as` saturates: a NaN or huge value lands in a valid bin.
    (ms.ln() / BIN_GROWTH.ln()).ceil().min((BINS - 1) as f64) as usize
}

fn bin_upper_ms(bin: usize) -> f64 {
    BIN_GROWTH.powi(bin as i32)
}

impl Window {
    /// Counts a request that ended in `second`.
    fn count(&mut self, second: u64, failed: bool, elapsed: Option<Duration>) {
        let slot = &mut self.slots[(second % WINDOW_SECONDS as u64) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..EMPTY_SLOT
            };
        }
        slot.requests = slot.requests.saturating_add(1);
        if failed {
            slot.failed = slot.failed.saturating_add(1);
        }
        if let Some(elapsed) = elapsed {
            let bin = &mut slot.bins[bin_of(elapsed)];
            *bin = bin.saturating_add(1);
        }
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            targets: Mutex::new(HashMap::default()),
            fallbacks: Mutex::new(VecDeque::with_capacity(RECENT_FALLBACKS)),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }

    /// Counts one request `target` served (or failed, `failed`) that took
    /// `elapsed` (`None`: a failed attempt passed over, not timed here),
    /// ended at `at`.
    pub(crate) fn record(
        &self,
        target: &str,
        failed: bool,
        elapsed: Option<Duration>,
        at: Instant,
    ) {
        let second = self.second(at);
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        // One lookup for a target seen before (every request but its first).
        if let Some(window) = targets.get_mut(target) {
            window.count(second, failed, elapsed);
        } else if targets.len() < MAX_TARGETS {
            let mut window = Window {
                slots: Box::new([EMPTY_SLOT; WINDOW_SECONDS]),
            };
            window.count(second, failed, elapsed);
            targets.insert(Arc::from(target), window);
        }
    }

    /// Keeps a fallback for the status page (the last twenty).
    pub(crate) fn fell_back(&self, fallback: Fallback) {
        let mut fallbacks = self
            .fallbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if fallbacks.len() == RECENT_FALLBACKS {
            fallbacks.pop_front();
        }
        fallbacks.push_back(fallback);
    }

    /// The last fallbacks, newest first.
    pub(crate) fn recent_fallbacks(&self) -> Vec<Fallback> {
        let fallbacks = self
            .fallbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        fallbacks.iter().rev().cloned().collect()
    }

    /// Every target's figures over the last minute up to `now`, sorted by
    /// name. The quantiles are the upper bounds of latency bins (within
    /// 25 %); a target with no request in the window has none.
    pub(crate) fn figures(&self, now: Instant) -> Vec<TargetFigures> {
        let current = self.second(now);
        // The window is the last sixty whole seconds, this one included;
        // a gateway younger than a minute divides by its age.
        let span = (current + 1).min(WINDOW_SECONDS as u64);
        let targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<TargetFigures> = targets
            .iter()
            .map(|(target, window)| {
                let mut requests = 0u64;
                let mut failed = 0u64;
                let mut bins = [0u64; BINS];
                for slot in window.slots.iter() {
                    if slot.second > current || current - slot.second >= span {
                        continue;
                    }
                    requests += u64::from(slot.requests);
                    failed += u64::from(slot.failed);
                    for (sum, n) in bins.iter_mut().zip(slot.bins) {
                        *sum += u64::from(n);
                    }
                }
                // Over the timed answers only: an attempt passed over is
                // counted, not timed.
                let timed = bins.iter().sum();
                TargetFigures {
                    target: Arc::clone(target),
                    requests,
                    failed,
                    per_second: requests as f64 / span as f64,
                    p50_ms: quantile(&bins, timed, 0.50),
                    p99_ms: quantile(&bins, timed, 0.99),
                }
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

/// The upper bound of the bin holding the `q` quantile of `total` samples.
fn quantile(bins: &[u64; BINS], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bin, n) in bins.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bin_upper_ms(bin));
        }
    }
    Some(bin_upper_ms(BINS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bins_grow_by_a_quarter_and_hold_their_upper_bound() {
        assert_eq!(bin_of(Duration::from_micros(500)), 0);
        assert_eq!(bin_of(Duration::from_millis(1)), 0);
        // 1.25 ms is the top of bin 1; a hair more goes to bin 2.
        assert_eq!(bin_of(Duration::from_micros(1_200)), 1);
        assert_eq!(bin_of(Duration::from_micros(1_300)), 2);
        for ms in [3u64, 40, 900, 12_000] {
            let bin = bin_of(Duration::from_millis(ms));
            assert!(bin_upper_ms(bin) >= ms as f64);
            assert!(bin_upper_ms(bin - 1) < ms as f64);
        }
        assert_eq!(bin_of(Duration::MAX), BINS - 1);
    }

    #[test]
    fn attempts_passed_over_count_as_failed_requests_without_moving_the_latency_quantiles() {
        let activity = Activity::new();
        let t0 = activity.epoch;
        for _ in 0..10 {
            activity.record("primary", false, Some(Duration::from_millis(10)), t0);
        }
        for _ in 0..5 {
            activity.record("primary", true, None, t0);
        }
        let figures = activity.figures(t0);
        assert_eq!((figures[0].requests, figures[0].failed), (15, 5));
        let p99 = figures[0].p99_ms.unwrap();
        assert!((10.0..12.5).contains(&p99), "{p99}");
    }

    #[test]
    fn figures_count_the_last_minute_and_forget_older_seconds() {
        let activity = Activity::new();
        let t0 = activity.epoch;
        for i in 0..100u64 {
            let elapsed = Duration::from_millis(if i < 98 { 10 } else { 1_000 });
            activity.record(
                "primary",
                i % 10 == 0,
                Some(elapsed),
                t0 + Duration::from_millis(i * 10),
            );
        }
        let figures = activity.figures(t0 + Duration::from_millis(999));
        assert_eq!(figures.len(), 1);
        let primary = &figures[0];
        assert_eq!((primary.requests, primary.failed), (100, 10));
        assert_eq!(primary.per_second, 100.0);
        let p50 = primary.p50_ms.unwrap();
        assert!((10.0..12.5).contains(&p50), "{p50}");
        let p99 = primary.p99_ms.unwrap();
        assert!((1_000.0..1_250.0).contains(&p99), "{p99}");
        // Sixty seconds on, nothing of it is left.
        let later = activity.figures(t0 + Duration::from_secs(61));
        assert_eq!(later[0].requests, 0);
        assert_eq!(later[0].p50_ms, None);
    }

    #[test]
    fn targets_past_the_bound_are_not_tracked() {
        let activity = Activity::new();
        let now = Instant::now();
        for i in 0..MAX_TARGETS + 10 {
            activity.record(&format!("t{i}"), false, Some(Duration::from_millis(1)), now);
        }
        assert_eq!(activity.figures(now).len(), MAX_TARGETS);
    }

    #[test]
    fn recent_fallbacks_keep_the_last_twenty_newest_first() {
        let activity = Activity::new();
        for i in 0..25 {
            activity.fell_back(Fallback {
                at: Instant::now(),
                endpoint: "chat_completions",
                served_by: Arc::from("backup"),
                passed: format!("primary:overloaded #{i}"),
            });
        }
        let recent = activity.recent_fallbacks();
        assert_eq!(recent.len(), RECENT_FALLBACKS);
        assert_eq!(recent[0].passed, "primary:overloaded #24");
        assert_eq!(recent[19].passed, "primary:overloaded #5");
    }
}
