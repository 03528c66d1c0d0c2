//! Admission: whether a call may go, and with what permit.

use std::time::Duration;

// Under `--cfg tower_llm_loom` the atomics are loom's, for the model checks.
#[cfg(tower_llm_loom)]
use loom::sync::atomic::Ordering;
#[cfg(not(tower_llm_loom))]
use std::sync::atomic::Ordering;

use super::phase::Phase;
use super::{ARMING, Breaker, CircuitState, Permit, Rejection, nanos};

impl Breaker {
    /// Admits a call without the time, when nothing about this key needs
    /// it: closed (or set by hand to let calls through) and no cooldown
    /// that may still run. `None` when the time is needed: ask
    /// [`acquire`](Breaker::acquire). Only for a configuration whose
    /// outcomes need no time either (`CircuitConfig::needs_times`).
    pub(crate) fn admit_untimed(&self) -> Option<Permit> {
        if self.cooldown_until.load(Ordering::Acquire) != 0 {
            return None;
        }
        match self.state() {
            CircuitState::Closed | CircuitState::MetricsOnly => Some(Permit {
                probe: None,
                epoch: self.closed_epoch.load(Ordering::Acquire),
                counted: true,
            }),
            CircuitState::Disabled => Some(Permit {
                probe: None,
                epoch: 0,
                counted: false,
            }),
            CircuitState::Open | CircuitState::HalfOpen | CircuitState::ForcedOpen => None,
        }
    }

    /// Notes that the key is in use at `now`, for idle eviction. Written
    /// at most once a second: a store on every call would make every
    /// thread on this key contend for the cache line.
    pub(crate) fn touch(&self, now: Duration) {
        let t = nanos(now);
        if t.saturating_sub(self.last_used.load(Ordering::Relaxed)) > 1_000_000_000 {
            self.last_used.store(t, Ordering::Relaxed);
        }
    }

    /// Notes that the key is in use at `now`, for a caller that spaces its
    /// notes a second apart itself (the thread's cache of the last key):
    /// the last use is then never more than a second old, as with `touch`.
    pub(crate) fn note_use(&self, now: Duration) {
        self.last_used.fetch_max(nanos(now), Ordering::Relaxed);
    }

    /// Asks to make a call at `now`.
    #[cfg(test)]
    pub(crate) fn acquire(&self, now: Duration) -> Result<Permit, Rejection> {
        self.acquire_for(now, None)
    }

    /// Asks to make a call at `now` for the request carrying `token` (its
    /// [`RequestToken`](crate::RequestToken), when it has one): in
    /// half-open, a request whose probe of this key failed is refused.
    pub(crate) fn acquire_for(
        &self,
        now: Duration,
        token: Option<u64>,
    ) -> Result<Permit, Rejection> {
        let t = nanos(now);
        self.touch(now);
        let cooldown = self.cooldown_until.load(Ordering::Acquire);
        if cooldown > t {
            self.count_rejection(true);
            return Err(Rejection::CoolingDown(Duration::from_nanos(cooldown - t)));
        }
        if cooldown != 0 {
            // Over: cleared, so that the calls after this one know it
            // without the time. A cooldown started meanwhile stays (the
            // exchange fails).
            let _ = self.cooldown_until.compare_exchange(
                cooldown,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        loop {
            match self.state() {
                CircuitState::Closed | CircuitState::MetricsOnly => {
                    return Ok(Permit {
                        probe: None,
                        epoch: self.closed_epoch.load(Ordering::Acquire),
                        counted: true,
                    });
                }
                CircuitState::Disabled => {
                    return Ok(Permit {
                        probe: None,
                        epoch: 0,
                        counted: false,
                    });
                }
                CircuitState::ForcedOpen => {
                    self.count_rejection(false);
                    return Err(Rejection::Open(None));
                }
                CircuitState::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if t < until || until == ARMING {
                        self.count_rejection(false);
                        let wait = (until != ARMING).then(|| Duration::from_nanos(until - t));
                        return Err(Rejection::Open(wait));
                    }
                    // The interval is over. One caller claims the change,
                    // arms the probes, and only then shows half-open.
                    if self
                        .open_until
                        .compare_exchange(until, ARMING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.arm_half_open(t);
                        if self.transition(
                            CircuitState::Open,
                            CircuitState::HalfOpen,
                            "open duration elapsed",
                        ) {
                            continue;
                        }
                        // Set by hand meanwhile: leave it as it is.
                    }
                }
                CircuitState::HalfOpen => return self.acquire_probe(t, token),
            }
        }
    }

    fn acquire_probe(&self, t: u64, token: Option<u64>) -> Result<Permit, Rejection> {
        let deadline = nanos(self.config.half_open_deadline());
        let since = self.half_open_since.load(Ordering::Acquire);
        // Probes that hang must not hold recovery back: after the deadline,
        // a new generation of probes is admitted (those in flight no
        // longer count; this is the trade Polly makes).
        if t.saturating_sub(since) >= deadline
            && self
                .half_open_since
                .compare_exchange(since, t, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let _ = self
                .phase
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                    Some(Phase::unpack(w).next(self.config.half_open_probes).pack())
                });
        }
        // A request whose probe failed does not probe again (its own
        // retry): the probes that decide come from other requests, and it
        // moves on to a fallback at once.
        let again = token.is_some_and(|token| self.failed_a_probe(token));
        let taken = if again {
            Err(0)
        } else {
            self.phase
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                    let mut phase = Phase::unpack(w);
                    (phase.permits > 0).then(|| {
                        phase.permits -= 1;
                        phase.pack()
                    })
                })
        };
        match taken {
            Ok(word) => Ok(Permit {
                probe: Some(Phase::unpack(word).generation),
                epoch: 0,
                counted: true,
            }),
            Err(_) => {
                self.count_rejection(false);
                let since = self.half_open_since.load(Ordering::Acquire);
                Err(Rejection::Open(Some(Duration::from_nanos(
                    since.saturating_add(deadline).saturating_sub(t),
                ))))
            }
        }
    }

    /// A fresh half-open phase at `t` (before half-open becomes visible).
    pub(super) fn arm_half_open(&self, t: u64) {
        self.window.reset();
        self.half_open_since.store(t, Ordering::Release);
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(Phase::unpack(w).next(self.config.half_open_probes).pack())
            });
    }
}
