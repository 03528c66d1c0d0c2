//! What a group knows of each of its deployments: requests in flight, a
//! peak-EWMA of latency, when it may be picked again, how often it was.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How fast a latency estimate forgets: tower's `PeakEwma` takes a decay
/// time from its user; Finagle's `P2CPeakEwma` defaults to 10 s, which is
/// taken here. A deployment left because it turned slow has its estimate
/// halved every ~7 s without a new sample of its own (counted to the
/// group's latest sample: see [`GroupStats::latest`]), so it is tried
/// again within tens of seconds and comes back if it recovered.
pub(crate) const DECAY: Duration = Duration::from_secs(10);

/// A forced-open breaker refuses without saying for how long: the group
/// asks again after this.
pub(crate) const UNKNOWN_WAIT: Duration = Duration::from_secs(1);

/// One deployment of a group.
#[derive(Debug)]
pub(crate) struct Deployment {
    pub(crate) weight: u32,
    pub(crate) in_flight: AtomicU32,
    pub(crate) picks: AtomicU64,
    /// Nanoseconds after the group's epoch before which it is not picked
    /// (0: none).
    pub(crate) blocked_until: AtomicU64,
    pub(crate) latency: PeakEwma,
    /// `tower_llm_fallback_picks_total{route,target}`, registered at the first pick
    /// (after the application installed its recorder).
    #[cfg(feature = "metrics")]
    pub(crate) counter: std::sync::OnceLock<metrics::Counter>,
}

impl Deployment {
    pub(crate) fn new(weight: u32) -> Self {
        Deployment {
            weight,
            in_flight: AtomicU32::new(0),
            picks: AtomicU64::new(0),
            blocked_until: AtomicU64::new(0),
            latency: PeakEwma::default(),
            #[cfg(feature = "metrics")]
            counter: std::sync::OnceLock::new(),
        }
    }

    /// Whether it is kept out at `now` (ns after the epoch); the clock is
    /// read only when a block was ever set.
    #[inline]
    pub(crate) fn blocked(&self, now: &mut impl FnMut() -> u64) -> bool {
        let until = self.blocked_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if until > now() {
            return true;
        }
        // Over: cleared, so that later picks read no clock for it (unless
        // a longer block came meanwhile).
        let _ = self
            .blocked_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }

    /// Keeps it out until `until` (ns after the epoch), never shortening a
    /// longer block.
    pub(crate) fn block_until(&self, until: u64) {
        self.blocked_until
            .fetch_max(until.max(1), Ordering::Relaxed);
    }
}

/// The state of a group of two or more deployments, shared by the calls
/// in flight (they release their count when their body ends).
#[derive(Debug)]
pub(crate) struct GroupStats {
    /// The time every timestamp is counted from.
    pub(crate) epoch: Instant,
    pub(crate) members: Box<[Deployment]>,
    /// When the latest latency sample of any member was taken, ns after
    /// the epoch.
    pub(crate) latest: AtomicU64,
}

impl GroupStats {
    /// Adds a latency sample of `rtt` ns to `member`, taken at `now`.
    pub(crate) fn observe(&self, member: &Deployment, rtt: u64, now: u64) {
        member.latency.observe(rtt, now);
        self.latest.fetch_max(now, Ordering::Relaxed);
    }

    /// The time of the group's latest latency sample: the "now" a pick
    /// decays the estimates to, so that picking reads no clock. With
    /// traffic, samples come all the time, and a member left for being
    /// slow decays as the others answer; without, there is nothing to
    /// pick between.
    #[inline]
    pub(crate) fn latest(&self) -> u64 {
        self.latest.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the epoch (Tokio's clock, so a paused test clock
    /// drives it).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A peak-sensitive moving average of latency: a sample above the
/// estimate replaces it at once (a deployment that turns slow is left on
/// its first slow answer); below, it is averaged in with a weight that
/// grows with the time since the last sample; and with no sample the
/// estimate decays towards zero, so a deployment left for being slow is
/// tried again. tower's `load::peak_ewma::RttEstimate` (which decays on
/// every read and writes it back); here the decay is computed on read and
/// only a sample writes, so picking writes nothing.
#[derive(Debug, Default)]
pub(crate) struct PeakEwma {
    /// The estimate in nanoseconds, as `f64` bits (0: no sample yet).
    estimate: AtomicU64,
    /// When it was last written, ns after the epoch.
    stamp: AtomicU64,
    /// Serialises the writers (one per answer, never a pick).
    write: Mutex<()>,
}

impl PeakEwma {
    /// The estimate decayed to `now`, in nanoseconds.
    #[inline]
    pub(crate) fn at(&self, now: u64) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        if estimate == 0.0 {
            return 0.0;
        }
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed));
        if elapsed == 0 {
            return estimate;
        }
        estimate * decay(elapsed)
    }

    /// Adds a sample of `rtt` nanoseconds taken at `now`.
    pub(crate) fn observe(&self, rtt: u64, now: u64) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let previous = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let rtt = rtt as f64;
        let next = if rtt > previous {
            rtt
        } else {
            let w = decay(now.saturating_sub(self.stamp.load(Ordering::Relaxed)));
            previous * w + rtt * (1.0 - w)
        };
        // At least a nanosecond: zero means "no sample".
        self.estimate
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// The estimate decayed to `now`, if there was a sample.
    pub(crate) fn estimate(&self, now: u64) -> Option<Duration> {
        let at = self.at(now);
        (at > 0.0).then(|| Duration::from_nanos(at as u64))
    }
}

/// The weight an estimate keeps after `elapsed` nanoseconds.
#[inline]
fn decay(elapsed: u64) -> f64 {
    (-(elapsed as f64) / DECAY.as_nanos() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_slower_sample_replaces_the_estimate_at_once() {
        let ewma = PeakEwma::default();
        ewma.observe(100 * MS, 0);
        ewma.observe(1_000 * MS, 1);
        assert!(ewma.at(1) >= 999.0 * MS as f64, "{}", ewma.at(1));
    }

    #[test]
    fn a_faster_sample_is_averaged_in_and_the_estimate_decays_without_samples() {
        let ewma = PeakEwma::default();
        ewma.observe(1_000 * MS, 0);
        ewma.observe(100 * MS, 5_000 * MS);
        let averaged = ewma.at(5_000 * MS);
        assert!(
            averaged > 100.0 * MS as f64 && averaged < 1_000.0 * MS as f64,
            "{averaged}"
        );
        // Thirty seconds later, less than a twentieth of it is left.
        assert!(ewma.at(35_000 * MS) < averaged / 20.0);
    }

    #[test]
    fn a_block_is_kept_until_its_time_then_cleared() {
        let deployment = Deployment::new(1);
        deployment.block_until(5 * MS);
        assert!(deployment.blocked(&mut || 4 * MS));
        assert!(!deployment.blocked(&mut || 5 * MS));
        // Cleared: the clock is not read again.
        assert!(!deployment.blocked(&mut || panic!("the clock was read")));
    }

    #[test]
    fn no_sample_is_no_estimate() {
        assert_eq!(PeakEwma::default().estimate(0), None);
    }
}
