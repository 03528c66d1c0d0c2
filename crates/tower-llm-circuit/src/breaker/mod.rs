//! One breaker: the state machine of one key, on atomics.
//!
//! The states and transitions are Resilience4j's
//! (`CircuitBreakerStateMachine`): closed → open when the window's rates
//! reach their thresholds (after the minimum number of calls) or after N
//! consecutive failures; open → half-open once the open duration has
//! passed (lazily, on the next call); half-open admits N probes whose
//! outcomes decide: back to open (for longer) or closed (duration reset).
//! Forced-open, disabled and metrics-only are set by hand. Every
//! transition is one compare-and-swap, so exactly one caller makes it and
//! exactly one event is emitted.

mod admission;
mod phase;
mod shared;
mod state;

use std::fmt;
use std::sync::Arc;
// Under `--cfg tower_llm_loom` the atomics are loom's, for the model checks.
#[cfg(tower_llm_loom)]
use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
#[cfg(not(tower_llm_loom))]
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::CircuitConfig;
use crate::window::{Sample, Totals, Window};
use phase::Phase;
pub(crate) use shared::DecisionSlot;
pub use shared::{CooldownCause, KeyDecision, OnDecision};
pub use state::{CircuitState, KeySnapshot, LimitSnapshot, OnTransition, Transition};

/// How a call ended, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The target worked (even if the request was wrong).
    Success,
    /// The target failed.
    Failure,
    /// Not the target's health (rate limit, cancelled, local): not counted.
    Ignored,
    /// The target answered with content, then the call failed (with
    /// `count_after_content` off): not counted in the window, and a probe
    /// that ends so succeeded, as the target is up.
    Answered,
}

/// Why a call was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Open (or half-open with every probe taken, or forced open); the
    /// next probe is allowed after this long, when known.
    Open(Option<Duration>),
    /// Cooling down after a rate limit or quota error, for this long.
    CoolingDown(Duration),
}

/// Leave to make a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Permit {
    /// The half-open generation this probe belongs to; `None` for a call in
    /// a state that counts into the window.
    probe: Option<u64>,
    /// The closed phase the call was admitted in.
    epoch: u64,
    /// Whether the outcome is counted at all (not in disabled).
    counted: bool,
}

impl Permit {
    /// Whether this is a half-open probe.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

/// A nanosecond timestamp, relative to the registry's start.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `open_until` while the one caller that ends an open interval arms the
/// half-open phase: others see the circuit still open.
const ARMING: u64 = u64::MAX;

/// The breaker of one key.
pub(crate) struct Breaker {
    key: Arc<str>,
    /// The registry's start: timestamps are relative to it.
    start: tokio::time::Instant,
    config: Arc<CircuitConfig>,
    on_transition: Option<Arc<OnTransition>>,
    state: AtomicU8,
    window: Window,
    consecutive_failures: AtomicU32,
    /// Bumped on every entry into closed: outcomes of calls admitted in an
    /// earlier closed phase (before a trip) are not counted in this one.
    closed_epoch: AtomicU64,
    /// Consecutive trips without a healthy close: drives the open duration.
    trips: AtomicU32,
    open_until: AtomicU64,
    phase: AtomicU64,
    half_open_since: AtomicU64,
    cooldown_until: AtomicU64,
    rejected: AtomicU64,
    /// In metrics-only, whether "threshold exceeded" was said already.
    exceeded_reported: std::sync::atomic::AtomicBool,
    pub(crate) last_used: AtomicU64,
    jitter_draws: AtomicU64,
    jitter_seed: u64,
    /// The [`RequestToken`](crate::RequestToken)s of the last requests
    /// whose probe failed (a ring): they may not probe this key again.
    failed_probes: [AtomicU64; FAILED_PROBES],
    failed_probes_next: AtomicU32,
    /// The key's adaptive concurrency limit (used by `AdaptiveLimit`).
    limiter: crate::adaptive::Limiter,
    /// Where this process's decisions go, to be shared with other replicas.
    decisions: Arc<shared::DecisionSlot>,
}

/// How many failed probes' requests a breaker remembers. A request's own
/// retry follows its failure within its backoff, so only the last few
/// matter; 8 covers two phases of the `standard` preset's 3 probes, and
/// more probes failing at once than that only forget the oldest.
const FAILED_PROBES: usize = 8;

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("key", &self.key)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    pub(crate) fn new(
        key: Arc<str>,
        start: tokio::time::Instant,
        config: Arc<CircuitConfig>,
        on_transition: Option<Arc<OnTransition>>,
        now: Duration,
    ) -> Self {
        let window = Window::new(config.window);
        let jitter_seed = {
            use std::hash::BuildHasher;
            config.seed.unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(0u8))
                ^ std::hash::BuildHasher::hash_one(&std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(), &*key)
        };
        Breaker {
            key,
            start,
            on_transition,
            state: AtomicU8::new(CircuitState::Closed.as_u8()),
            window,
            consecutive_failures: AtomicU32::new(0),
            closed_epoch: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            phase: AtomicU64::new(0),
            half_open_since: AtomicU64::new(0),
            cooldown_until: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            exceeded_reported: std::sync::atomic::AtomicBool::new(false),
            last_used: AtomicU64::new(nanos(now)),
            jitter_draws: AtomicU64::new(0),
            jitter_seed,
            failed_probes: std::array::from_fn(|_| AtomicU64::new(0)),
            failed_probes_next: AtomicU32::new(0),
            limiter: crate::adaptive::Limiter::new(&config.adaptive_limit),
            decisions: Arc::default(),
            config,
        }
    }

    /// Time since the registry started (Tokio's clock).
    pub(crate) fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.start)
    }

    pub(crate) fn config(&self) -> &CircuitConfig {
        &self.config
    }

    pub(crate) fn limiter(&self) -> &crate::adaptive::Limiter {
        &self.limiter
    }

    /// The adaptive limit's settings.
    pub(crate) fn registry_limit(&self) -> &crate::AdaptiveLimitConfig {
        &self.config.adaptive_limit
    }

    pub(crate) fn key_str(&self) -> &str {
        &self.key
    }

    pub(crate) fn state(&self) -> CircuitState {
        CircuitState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Records how an admitted call ended. `slow` says it was slow (only
    /// counted with a slow-call rule configured).
    pub(crate) fn record(&self, permit: Permit, outcome: Outcome, slow: bool, now: Duration) {
        if !permit.counted {
            return;
        }
        let slow = slow && self.counts_slow_calls();
        match permit.probe {
            Some(generation) => self.record_probe(generation, outcome, slow, nanos(now)),
            None => {
                if matches!(outcome, Outcome::Ignored | Outcome::Answered)
                    || permit.epoch != self.closed_epoch.load(Ordering::Acquire)
                {
                    return; // not the target's health, or admitted before a trip
                }
                let failure = outcome == Outcome::Failure;
                self.window.record(Sample { failure, slow }, now);
                let consecutive = if failure {
                    self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1
                } else {
                    // Only written when there is something to reset: a store
                    // on every success would contend across threads.
                    if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                        self.consecutive_failures.store(0, Ordering::Release);
                    }
                    0
                };
                // Evaluated on every call, as Resilience4j does: a success
                // can be the call that brings the window to its minimum.
                let state = self.state();
                if state == CircuitState::MetricsOnly {
                    // Never opens; says once that it would have.
                    if let Some(reason) = self.thresholds_exceeded(&self.window.totals(now))
                        && !self.exceeded_reported.swap(true, Ordering::AcqRel)
                    {
                        tracing::warn!(target: crate::TRACING_TARGET, key = &*self.key, reason, "threshold exceeded (metrics only)");
                    }
                    return;
                }
                if state != CircuitState::Closed {
                    return;
                }
                let reason = if self
                    .config
                    .consecutive_failures
                    .is_some_and(|n| consecutive >= n)
                {
                    Some("consecutive failures")
                } else {
                    self.thresholds_exceeded(&self.window.totals(now))
                };
                if let Some(reason) = reason {
                    self.trip(CircuitState::Closed, reason, nanos(now));
                }
            }
        }
    }

    /// Notes that the probe of the request carrying `token` failed: that
    /// request is refused if it comes back to probe this key.
    pub(crate) fn remember_failed_probe(&self, token: u64) {
        let slot = self.failed_probes_next.fetch_add(1, Ordering::Relaxed) as usize % FAILED_PROBES;
        self.failed_probes[slot].store(token, Ordering::Release);
    }

    /// Whether the request carrying `token` failed a probe of this key.
    pub(crate) fn failed_a_probe(&self, token: u64) -> bool {
        self.failed_probes
            .iter()
            .any(|slot| slot.load(Ordering::Acquire) == token)
    }

    fn counts_slow_calls(&self) -> bool {
        self.config.slow_call_duration.is_some() || self.config.slow_first_content.is_some()
    }

    fn record_probe(&self, generation: u64, outcome: Outcome, slow: bool, t: u64) {
        let probes = u64::from(self.config.half_open_probes);
        let updated = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let mut phase = Phase::unpack(w);
                if phase.generation != generation {
                    return None; // a probe of an earlier phase: not counted
                }
                match outcome {
                    // Not a verdict on the target: the permit goes back.
                    Outcome::Ignored => phase.permits = (phase.permits + 1).min(probes),
                    Outcome::Failure => phase.failures += 1,
                    Outcome::Success | Outcome::Answered => phase.successes += 1,
                }
                if slow && outcome != Outcome::Ignored {
                    phase.slow += 1;
                }
                Some(phase.pack())
            });
        let Ok(before) = updated else {
            return;
        };
        if outcome == Outcome::Ignored {
            return;
        }
        // The one probe whose outcome completed the phase decides it.
        let before = Phase::unpack(before);
        let done = before.successes + before.failures + 1;
        if done != probes {
            return;
        }
        let failures = before.failures + u64::from(outcome == Outcome::Failure);
        let slow = before.slow + u64::from(slow);
        let failure_rate = failures as f64 * 100.0 / done as f64;
        let slow_rate = slow as f64 * 100.0 / done as f64;
        if failure_rate >= self.config.failure_rate {
            self.trip(CircuitState::HalfOpen, "probes failed", t);
        } else if self.counts_slow_calls() && slow_rate >= self.config.slow_call_rate {
            self.trip(CircuitState::HalfOpen, "probes slow", t);
        } else {
            self.close_from(CircuitState::HalfOpen, "probes succeeded");
        }
    }

    fn count_rejection(&self, cooling_down: bool) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("tower_llm_circuit_rejected_total", "reason" => if cooling_down { "cooldown" } else { "open" })
            .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = cooling_down;
    }

    fn thresholds_exceeded(&self, totals: &Totals) -> Option<&'static str> {
        // Rates are above zero (checked at build): a window without
        // failures or slow calls exceeds neither.
        if totals.calls < u64::from(self.config.minimum_calls)
            || (totals.failures == 0 && totals.slow == 0)
        {
            return None;
        }
        if totals.failure_rate() >= self.config.failure_rate {
            return Some("failure rate");
        }
        if self.counts_slow_calls() && totals.slow_rate() >= self.config.slow_call_rate {
            return Some("slow call rate");
        }
        None
    }

    /// How long the next open interval lasts: growing with repeated trips,
    /// jittered, never above the maximum.
    fn open_duration(&self, trips: u32) -> Duration {
        let base = self.config.open_duration_for(trips);
        let jitter = self.config.open_jitter;
        let factor = if jitter > 0.0 {
            1.0 - jitter + 2.0 * jitter * self.draw()
        } else {
            1.0
        };
        Duration::try_from_secs_f64(base.as_secs_f64() * factor)
            .unwrap_or(base)
            .min(self.config.max_open_duration)
    }

    /// `from` → open. The interval is set before the state changes, from
    /// the later of `t` and the clock (the call that tripped it may have
    /// taken long, and `t` may be its start), so nobody sees open with a
    /// stale deadline.
    fn trip(&self, from: CircuitState, reason: &'static str, t: u64) -> bool {
        let trips = self.trips.load(Ordering::Acquire) + 1;
        let t = t.max(nanos(self.now()));
        let until = t.saturating_add(nanos(self.open_duration(trips)));
        if self.state() != from {
            return false;
        }
        let until = until.min(ARMING - 1);
        self.open_until.store(until, Ordering::Release);
        let done = self
            .state
            .compare_exchange(
                from.as_u8(),
                CircuitState::Open.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if done {
            self.trips.store(trips, Ordering::Release);
            self.emit(from, CircuitState::Open, reason);
            self.share_opened(until);
        }
        done
    }

    /// `from` → closed, with a fresh window and the durations reset, all
    /// before closed is visible; shared with other replicas.
    fn close_from(&self, from: CircuitState, reason: &'static str) -> bool {
        let done = self.close_quietly(from, reason);
        if done {
            self.share_closed();
        }
        done
    }

    /// `close_from`, not shared (a close another replica told of).
    fn close_quietly(&self, from: CircuitState, reason: &'static str) -> bool {
        if self.state() != from {
            return false;
        }
        self.prepare_closed();
        let done = self
            .state
            .compare_exchange(
                from.as_u8(),
                CircuitState::Closed.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if done {
            // Closed again after being open: what the limit learned during
            // the outage says nothing of the recovered target (it turns off).
            self.limiter.restart(&self.config.adaptive_limit);
            self.emit(from, CircuitState::Closed, reason);
        }
        done
    }

    /// A health probe succeeded: open or half-open → closed. `false` if the
    /// key was in neither (closed meanwhile, or set by hand).
    pub(crate) fn close_after_probe(&self) -> bool {
        self.close_from(CircuitState::Open, "health probe succeeded")
            || self.close_from(CircuitState::HalfOpen, "health probe succeeded")
    }

    fn prepare_closed(&self) {
        self.closed_epoch.fetch_add(1, Ordering::AcqRel);
        self.window.reset();
        self.consecutive_failures.store(0, Ordering::Release);
        self.trips.store(0, Ordering::Release);
    }

    /// A uniform draw in [0, 1) for the open-duration jitter: SplitMix64
    /// over the seed (per layer, or given) and a counter.
    fn draw(&self) -> f64 {
        let n = self.jitter_draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .jitter_seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Moves `from` → `to` if still in `from`; `true` for the one caller
    /// that did, which also emits the event.
    fn transition(&self, from: CircuitState, to: CircuitState, reason: &'static str) -> bool {
        let done = self
            .state
            .compare_exchange(
                from.as_u8(),
                to.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if done {
            self.emit(from, to, reason);
        }
        done
    }

    fn emit(&self, from: CircuitState, to: CircuitState, reason: &'static str) {
        tracing::info!(
            target: crate::TRACING_TARGET,
            key = &*self.key,
            from = from.as_str(),
            to = to.as_str(),
            reason,
            "circuit state change"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!("tower_llm_circuit_transitions_total", "to" => to.as_str()).increment(1);
        if let Some(callback) = &self.on_transition {
            callback(&Transition {
                key: Arc::clone(&self.key),
                from,
                to,
                reason,
            });
        }
    }

    /// Sets a state by hand (force open, disable, …) from any state.
    pub(crate) fn set_state(&self, to: CircuitState, now: Duration) {
        let t = nanos(now);
        // Prepare what the new state reads before it is visible.
        match to {
            CircuitState::Closed => self.prepare_closed(),
            CircuitState::Open => {
                let trips = self.trips.load(Ordering::Acquire) + 1;
                self.trips.store(trips, Ordering::Release);
                self.open_until.store(
                    t.saturating_add(nanos(self.open_duration(trips)))
                        .min(ARMING - 1),
                    Ordering::Release,
                );
            }
            CircuitState::HalfOpen => self.arm_half_open(t),
            _ => {}
        }
        if to == CircuitState::MetricsOnly {
            self.exceeded_reported.store(false, Ordering::Release);
        }
        let from = CircuitState::from_u8(self.state.swap(to.as_u8(), Ordering::AcqRel));
        if to == CircuitState::Closed
            && matches!(
                from,
                CircuitState::Open | CircuitState::HalfOpen | CircuitState::ForcedOpen
            )
        {
            self.limiter.restart(&self.config.adaptive_limit);
        }
        if from != to {
            self.emit(from, to, "set by hand");
            match to {
                CircuitState::Open => self.share_opened(self.open_until.load(Ordering::Acquire)),
                CircuitState::Closed
                    if matches!(
                        from,
                        CircuitState::Open | CircuitState::HalfOpen | CircuitState::ForcedOpen
                    ) =>
                {
                    self.share_closed();
                }
                _ => {}
            }
        }
    }

    /// Starts or extends a cooldown to `now + wait` (never shortens one);
    /// a start or an extension is shared with other replicas.
    pub(crate) fn cool_down(&self, wait: Duration, now: Duration, cause: CooldownCause) {
        let until = nanos(now).saturating_add(nanos(wait));
        let before = self.cooldown_until.fetch_max(until, Ordering::AcqRel);
        if until > before {
            tracing::debug!(target: crate::TRACING_TARGET, key = &*self.key, wait_ms = wait.as_millis() as u64, cause = cause.as_str(), "cooling down");
            self.share_cooldown(until, cause, wait);
        }
    }

    /// Ends a cooldown early (reset by hand).
    pub(crate) fn end_cooldown(&self) {
        self.cooldown_until.store(0, Ordering::Release);
    }

    pub(crate) fn snapshot(&self, now: Duration) -> KeySnapshot {
        let t = nanos(now);
        let totals = self.window.totals(now);
        let state = self.state();
        let remaining = |until: u64| (until > t).then(|| Duration::from_nanos(until - t));
        KeySnapshot {
            key: Arc::clone(&self.key),
            state,
            totals,
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
            rejected: self.rejected.load(Ordering::Acquire),
            // `ARMING` is a marker of the open interval, not a time (a
            // cooldown may end at `u64::MAX`: a cooldown of `Duration::MAX`).
            open_remaining: if state == CircuitState::Open {
                Some(self.open_until.load(Ordering::Acquire))
                    .filter(|until| *until != ARMING)
                    .and_then(remaining)
            } else {
                None
            },
            cooldown_remaining: remaining(self.cooldown_until.load(Ordering::Acquire)),
            limit: LimitSnapshot {
                enabled: self.limiter.is_on(),
                limit: self.limiter.limit(),
                in_flight: self.limiter.in_flight(),
                waiting: self.limiter.waiting(),
            },
        }
    }
}

#[cfg(test)]
mod tests;

/// Exhaustive interleavings of the transitions and the probe permits, with
/// loom (the models live beside, under the cfg they need).
#[cfg(all(test, tower_llm_loom))]
mod loom_models;
