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

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail at once until the open duration has passed.
    Open,
    /// A few probes are let through; their outcomes decide.
    HalfOpen,
    /// Set by hand: every call fails at once.
    ForcedOpen,
    /// Set by hand: every call flows, nothing is counted.
    Disabled,
    /// Set by hand: every call flows and is counted, the circuit never opens.
    MetricsOnly,
}

impl State {
    const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    fn from_u8(value: u8) -> State {
        State::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(State::Closed)
    }

    fn as_u8(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
        }
    }

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The key.
    pub key: Arc<str>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why, in a few words.
    pub reason: &'static str,
}

/// Called on every state change.
pub type OnTransition = dyn Fn(&Transition) + Send + Sync;

/// How a call ended, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The target worked (even if the request was wrong).
    Success,
    /// The target failed.
    Failure,
    /// Not the target's health (rate limit, cancelled, local): not counted.
    Ignored,
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

/// A nanosecond timestamp, relative to the registry's start.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The half-open phase in one word, so that a probe's permit, its outcome
/// and the phase it belongs to change together in one compare-and-swap:
/// generation (24 bits) | permits left | successes | failures | slow
/// (10 bits each; at most 1000 probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Phase {
    generation: u64,
    permits: u64,
    successes: u64,
    failures: u64,
    slow: u64,
}

const FIELD: u64 = 0x3FF;

impl Phase {
    fn pack(self) -> u64 {
        ((self.generation & 0xFF_FFFF) << 40)
            | ((self.permits & FIELD) << 30)
            | ((self.successes & FIELD) << 20)
            | ((self.failures & FIELD) << 10)
            | (self.slow & FIELD)
    }

    fn unpack(word: u64) -> Phase {
        Phase {
            generation: word >> 40,
            permits: (word >> 30) & FIELD,
            successes: (word >> 20) & FIELD,
            failures: (word >> 10) & FIELD,
            slow: word & FIELD,
        }
    }

    /// A fresh phase after `self`: the next generation, every permit.
    fn next(self, probes: u32) -> Phase {
        Phase {
            generation: (self.generation + 1) & 0xFF_FFFF,
            permits: u64::from(probes),
            successes: 0,
            failures: 0,
            slow: 0,
        }
    }
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
}

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
            config,
            on_transition,
            state: AtomicU8::new(State::Closed.as_u8()),
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
        }
    }

    /// Time since the registry started (Tokio's clock).
    pub(crate) fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.start)
    }

    pub(crate) fn config(&self) -> &CircuitConfig {
        &self.config
    }

    /// Whether recording an outcome needs the time: slow-call detection
    /// and time windows do; a count window without them does not.
    pub(crate) fn needs_clock_at_end(&self) -> bool {
        self.config.slow_call_duration.is_some()
            || self.config.slow_first_content.is_some()
            || matches!(self.config.window, crate::window::WindowKind::Time(_))
    }

    pub(crate) fn key_str(&self) -> &str {
        &self.key
    }

    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Asks to make a call at `now`.
    pub(crate) fn acquire(&self, now: Duration) -> Result<Permit, Rejection> {
        let t = nanos(now);
        // Written at most once a second: a store on every call would make
        // every thread on this key contend for the cache line.
        if t.saturating_sub(self.last_used.load(Ordering::Relaxed)) > 1_000_000_000 {
            self.last_used.store(t, Ordering::Relaxed);
        }
        let cooldown = self.cooldown_until.load(Ordering::Acquire);
        if cooldown > t {
            self.count_rejection(true);
            return Err(Rejection::CoolingDown(Duration::from_nanos(cooldown - t)));
        }
        loop {
            match self.state() {
                State::Closed | State::MetricsOnly => {
                    return Ok(Permit {
                        probe: None,
                        epoch: self.closed_epoch.load(Ordering::Acquire),
                        counted: true,
                    });
                }
                State::Disabled => {
                    return Ok(Permit {
                        probe: None,
                        epoch: 0,
                        counted: false,
                    });
                }
                State::ForcedOpen => {
                    self.count_rejection(false);
                    return Err(Rejection::Open(None));
                }
                State::Open => {
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
                        if self.transition(State::Open, State::HalfOpen, "open duration elapsed") {
                            continue;
                        }
                        // Set by hand meanwhile: leave it as it is.
                    }
                }
                State::HalfOpen => return self.acquire_probe(t),
            }
        }
    }

    fn acquire_probe(&self, t: u64) -> Result<Permit, Rejection> {
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
        let taken = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let mut phase = Phase::unpack(w);
                (phase.permits > 0).then(|| {
                    phase.permits -= 1;
                    phase.pack()
                })
            });
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
    fn arm_half_open(&self, t: u64) {
        self.window.reset();
        self.half_open_since.store(t, Ordering::Release);
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(Phase::unpack(w).next(self.config.half_open_probes).pack())
            });
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
                if outcome == Outcome::Ignored
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
                if state == State::MetricsOnly {
                    // Never opens; says once that it would have.
                    if let Some(reason) = self.thresholds_exceeded(&self.window.totals(now))
                        && !self.exceeded_reported.swap(true, Ordering::AcqRel)
                    {
                        tracing::warn!(target: crate::TRACING_TARGET, key = &*self.key, reason, "threshold exceeded (metrics only)");
                    }
                    return;
                }
                if state != State::Closed {
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
                    self.trip(State::Closed, reason, nanos(now));
                }
            }
        }
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
                    Outcome::Success => phase.successes += 1,
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
            self.trip(State::HalfOpen, "probes failed", t);
        } else if self.counts_slow_calls() && slow_rate >= self.config.slow_call_rate {
            self.trip(State::HalfOpen, "probes slow", t);
        } else {
            self.close_from(State::HalfOpen, "probes succeeded");
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
        if totals.calls < u64::from(self.config.minimum_calls) {
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
    fn trip(&self, from: State, reason: &'static str, t: u64) -> bool {
        let trips = self.trips.load(Ordering::Acquire) + 1;
        let t = t.max(nanos(self.now()));
        let until = t.saturating_add(nanos(self.open_duration(trips)));
        if self.state() != from {
            return false;
        }
        self.open_until
            .store(until.min(ARMING - 1), Ordering::Release);
        let done = self
            .state
            .compare_exchange(
                from.as_u8(),
                State::Open.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if done {
            self.trips.store(trips, Ordering::Release);
            self.emit(from, State::Open, reason);
        }
        done
    }

    /// `from` → closed, with a fresh window and the durations reset, all
    /// before closed is visible.
    fn close_from(&self, from: State, reason: &'static str) -> bool {
        if self.state() != from {
            return false;
        }
        self.prepare_closed();
        let done = self
            .state
            .compare_exchange(
                from.as_u8(),
                State::Closed.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if done {
            self.emit(from, State::Closed, reason);
        }
        done
    }

    /// A health probe succeeded: open or half-open → closed. `false` if the
    /// key was in neither (closed meanwhile, or set by hand).
    pub(crate) fn close_after_probe(&self) -> bool {
        self.close_from(State::Open, "health probe succeeded")
            || self.close_from(State::HalfOpen, "health probe succeeded")
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
    fn transition(&self, from: State, to: State, reason: &'static str) -> bool {
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

    fn emit(&self, from: State, to: State, reason: &'static str) {
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
    pub(crate) fn set_state(&self, to: State, now: Duration) {
        let t = nanos(now);
        // Prepare what the new state reads before it is visible.
        match to {
            State::Closed => self.prepare_closed(),
            State::Open => {
                let trips = self.trips.load(Ordering::Acquire) + 1;
                self.trips.store(trips, Ordering::Release);
                self.open_until.store(
                    t.saturating_add(nanos(self.open_duration(trips)))
                        .min(ARMING - 1),
                    Ordering::Release,
                );
            }
            State::HalfOpen => self.arm_half_open(t),
            _ => {}
        }
        if to == State::MetricsOnly {
            self.exceeded_reported.store(false, Ordering::Release);
        }
        let from = State::from_u8(self.state.swap(to.as_u8(), Ordering::AcqRel));
        if from != to {
            self.emit(from, to, "set by hand");
        }
    }

    /// Starts or extends a cooldown to `now + wait` (never shortens one).
    pub(crate) fn cool_down(&self, wait: Duration, now: Duration) {
        let until = nanos(now).saturating_add(nanos(wait));
        let before = self.cooldown_until.fetch_max(until, Ordering::AcqRel);
        if until > before {
            tracing::debug!(target: crate::TRACING_TARGET, key = &*self.key, wait_ms = wait.as_millis() as u64, "cooling down");
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
            open_remaining: if state == State::Open {
                Some(self.open_until.load(Ordering::Acquire))
                    .filter(|until| *until != ARMING)
                    .and_then(remaining)
            } else {
                None
            },
            cooldown_remaining: remaining(self.cooldown_until.load(Ordering::Acquire)),
        }
    }
}

/// A key's state and counts, for a `/health` endpoint.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct KeySnapshot {
    /// The key.
    pub key: Arc<str>,
    /// Its state.
    pub state: State,
    /// The window's totals.
    pub totals: Totals,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Calls failed fast so far.
    pub rejected: u64,
    /// Time until the next probe, when open.
    pub open_remaining: Option<Duration>,
    /// Time left cooling down, if cooling down.
    pub cooldown_remaining: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowKind;
    use std::sync::Mutex;

    type Events = Arc<Mutex<Vec<(State, State)>>>;

    fn breaker(config: CircuitConfig) -> (Breaker, Events) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let on: Arc<OnTransition> =
            Arc::new(move |t: &Transition| sink.lock().unwrap().push((t.from, t.to)));
        (
            Breaker::new(
                "openai/gpt-4o".into(),
                tokio::time::Instant::now(),
                Arc::new(config),
                Some(on),
                Duration::ZERO,
            ),
            events,
        )
    }

    fn config() -> CircuitConfigBuilder {
        CircuitConfig::builder()
            .window(WindowKind::Count(10))
            .minimum_calls(5)
            .failure_rate(50.0)
            .consecutive_failures(None)
            .open_duration(Duration::from_secs(10), 2.0, Duration::from_secs(60))
            .open_jitter(0.0)
            .half_open_probes(2)
    }

    use crate::config::CircuitConfigBuilder;

    const T0: Duration = Duration::ZERO;

    fn call(b: &Breaker, outcome: Outcome, now: Duration) -> Result<(), Rejection> {
        let permit = b.acquire(now)?;
        b.record(permit, outcome, false, now);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn trips_at_the_failure_rate_only_after_the_minimum_calls() {
        let (b, events) = breaker(config().build().unwrap());
        // 4 failures: 100 %, but below the minimum of 5 calls.
        for _ in 0..4 {
            call(&b, Outcome::Failure, T0).unwrap();
        }
        assert_eq!(b.state(), State::Closed);
        // The 5th call reaches the minimum with 100 % failures: it trips.
        call(&b, Outcome::Failure, T0).unwrap();
        assert_eq!(b.state(), State::Open);
        assert_eq!(*events.lock().unwrap(), [(State::Closed, State::Open)]);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_exactly_the_call_where_the_rate_first_reaches_the_threshold() {
        let (b, _) = breaker(config().build().unwrap());
        // S S S F F F F: the rate reaches 50 % at the 6th call (3 of 6).
        let outcomes = [
            Outcome::Success,
            Outcome::Success,
            Outcome::Success,
            Outcome::Failure,
            Outcome::Failure,
        ];
        for o in outcomes {
            call(&b, o, T0).unwrap();
        }
        assert_eq!(b.state(), State::Closed, "2 of 5 = 40 %");
        call(&b, Outcome::Failure, T0).unwrap();
        assert_eq!(b.state(), State::Open, "3 of 6 = 50 %");
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_trip_below_the_threshold() {
        let (b, events) = breaker(config().build().unwrap());
        for i in 0..100 {
            let o = if i % 3 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            call(&b, o, T0).unwrap();
        }
        assert_eq!(b.state(), State::Closed);
        assert!(events.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_and_rate_limits_do_not_count_as_failures() {
        let (b, _) = breaker(config().build().unwrap());
        for _ in 0..20 {
            call(&b, Outcome::Ignored, T0).unwrap();
        }
        assert_eq!(b.snapshot(T0).totals.calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_trip_whatever_the_window() {
        let (b, _) = breaker(
            config()
                .window(WindowKind::Count(100))
                .minimum_calls(100)
                .consecutive_failures(Some(3))
                .build()
                .unwrap(),
        );
        call(&b, Outcome::Failure, T0).unwrap();
        call(&b, Outcome::Failure, T0).unwrap();
        call(&b, Outcome::Success, T0).unwrap();
        call(&b, Outcome::Failure, T0).unwrap();
        call(&b, Outcome::Failure, T0).unwrap();
        assert_eq!(b.state(), State::Closed);
        call(&b, Outcome::Failure, T0).unwrap();
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_time_window_trips_within_the_second_the_rate_is_reached_and_forgets_old_failures() {
        let (b, _) = breaker(config().window(WindowKind::Time(10)).build().unwrap());
        let at = Duration::from_secs;
        // Four failures at t = 0 .. 3, then quiet: below the minimum of 5.
        for s in 0..4 {
            call(&b, Outcome::Failure, at(s)).unwrap();
        }
        // At t = 12 the first three have left the window: one failure of two.
        call(&b, Outcome::Success, at(12)).unwrap();
        assert_eq!(
            b.snapshot(at(12)).totals,
            Totals {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
        for _ in 0..2 {
            call(&b, Outcome::Success, at(12)).unwrap();
        }
        assert_eq!(b.state(), State::Closed, "1 of 4");
        call(&b, Outcome::Failure, at(12)).unwrap();
        assert_eq!(b.state(), State::Closed, "2 of 5 = 40 %");
        call(&b, Outcome::Failure, at(12)).unwrap();
        assert_eq!(b.state(), State::Open, "3 of 6 = 50 %, in the same second");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_trip_at_their_rate() {
        let (b, _) = breaker(
            config()
                .slow_calls(Duration::from_secs(5), 60.0)
                .build()
                .unwrap(),
        );
        for i in 0..5 {
            let permit = b.acquire(T0).unwrap();
            b.record(permit, Outcome::Success, i < 3, T0);
        }
        assert_eq!(b.state(), State::Open, "3 slow of 5 = 60 %");
    }

    fn trip(b: &Breaker, now: Duration) {
        for _ in 0..5 {
            let _ = call(b, Outcome::Failure, now);
        }
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn open_fails_fast_with_the_time_to_the_next_probe() {
        let (b, _) = breaker(config().build().unwrap());
        trip(&b, T0);
        assert_eq!(
            b.acquire(Duration::from_secs(4)),
            Err(Rejection::Open(Some(Duration::from_secs(6))))
        );
        assert_eq!(b.snapshot(Duration::from_secs(4)).rejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_n_probes() {
        let (b, events) = breaker(config().build().unwrap());
        trip(&b, T0);
        let at = Duration::from_secs(10);
        let p1 = b.acquire(at).unwrap();
        let p2 = b.acquire(at).unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        assert!(
            matches!(b.acquire(at), Err(Rejection::Open(_))),
            "a third caller fails fast"
        );
        b.record(p1, Outcome::Success, false, at);
        b.record(p2, Outcome::Success, false, at);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            *events.lock().unwrap(),
            [
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_longer_and_a_healthy_close_resets_the_duration() {
        let (b, _) = breaker(config().build().unwrap());
        trip(&b, T0);
        let at = Duration::from_secs(10);
        let (p1, p2) = (b.acquire(at).unwrap(), b.acquire(at).unwrap());
        b.record(p1, Outcome::Failure, false, at);
        b.record(p2, Outcome::Success, false, at);
        assert_eq!(b.state(), State::Open);
        // Second trip: 20 s.
        assert_eq!(
            b.acquire(at + Duration::from_secs(19)),
            Err(Rejection::Open(Some(Duration::from_secs(1))))
        );
        let at = at + Duration::from_secs(20);
        let (p1, p2) = (b.acquire(at).unwrap(), b.acquire(at).unwrap());
        b.record(p1, Outcome::Success, false, at);
        b.record(p2, Outcome::Success, false, at);
        assert_eq!(b.state(), State::Closed);
        trip(&b, at);
        // After a healthy close the next trip is back to 10 s.
        assert_eq!(
            b.acquire(at + Duration::from_secs(9)),
            Err(Rejection::Open(Some(Duration::from_secs(1))))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_gives_its_permit_back() {
        let (b, _) = breaker(config().half_open_probes(1).build().unwrap());
        trip(&b, T0);
        let at = Duration::from_secs(10);
        let p = b.acquire(at).unwrap();
        assert!(b.acquire(at).is_err());
        b.record(p, Outcome::Ignored, false, at); // dropped, cancelled, rate limited
        assert!(b.acquire(at).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_holds_recovery_back_at_most_one_deadline() {
        let (b, _) = breaker(
            config()
                .half_open_probes(1)
                .half_open_deadline(Duration::from_secs(5))
                .build()
                .unwrap(),
        );
        trip(&b, T0);
        let _hung = b.acquire(Duration::from_secs(10)).unwrap();
        assert!(b.acquire(Duration::from_secs(14)).is_err());
        // Five seconds on, a new probe is admitted and decides.
        let fresh = b.acquire(Duration::from_secs(15)).unwrap();
        b.record(fresh, Outcome::Success, false, Duration::from_secs(15));
        assert_eq!(b.state(), State::Closed);
        // The hung probe's late outcome belongs to an old phase: ignored.
        b.record(_hung, Outcome::Failure, false, Duration::from_secs(16));
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn forced_open_disabled_and_metrics_only_behave_as_named() {
        let (b, _) = breaker(config().build().unwrap());
        b.set_state(State::ForcedOpen, T0);
        assert_eq!(
            b.acquire(Duration::from_secs(3600)),
            Err(Rejection::Open(None))
        );
        b.set_state(State::Disabled, T0);
        for _ in 0..50 {
            call(&b, Outcome::Failure, T0).unwrap();
        }
        assert_eq!(
            (b.state(), b.snapshot(T0).totals.calls),
            (State::Disabled, 0)
        );
        b.set_state(State::MetricsOnly, T0);
        for _ in 0..50 {
            call(&b, Outcome::Failure, T0).unwrap();
        }
        assert_eq!(b.state(), State::MetricsOnly);
        assert_eq!(b.snapshot(T0).totals.failures, 10);
        b.set_state(State::Closed, T0);
        assert_eq!(
            b.snapshot(T0).totals.calls,
            0,
            "closing by hand starts a fresh window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_fails_fast_without_counting_and_is_only_ever_extended() {
        let (b, _) = breaker(config().build().unwrap());
        b.cool_down(Duration::from_secs(30), T0);
        b.cool_down(Duration::from_secs(10), T0); // shorter: ignored
        assert_eq!(
            b.acquire(Duration::from_secs(20)),
            Err(Rejection::CoolingDown(Duration::from_secs(10)))
        );
        b.cool_down(Duration::from_secs(40), Duration::from_secs(20)); // later: extends to 60 s
        assert_eq!(
            b.acquire(Duration::from_secs(50)),
            Err(Rejection::CoolingDown(Duration::from_secs(10)))
        );
        assert!(b.acquire(Duration::from_secs(60)).is_ok());
        assert_eq!((b.state(), b.snapshot(T0).totals.calls), (State::Closed, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn one_event_per_transition_when_many_threads_trip_it_at_once() {
        let (b, events) = breaker(
            config()
                .window(WindowKind::Count(100))
                .minimum_calls(10)
                .build()
                .unwrap(),
        );
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if let Ok(p) = b.acquire(T0) {
                            b.record(p, Outcome::Failure, false, T0);
                        }
                    }
                });
            }
        });
        assert_eq!(*events.lock().unwrap(), [(State::Closed, State::Open)]);
    }

    /// RESILIENCE.md §9 property 7: at half the threshold's failure rate,
    /// false trips happen as often as the binomial law says, which they
    /// only do if every call is counted exactly.
    #[tokio::test(start_paused = true)]
    async fn false_trips_at_half_the_threshold_match_the_binomial_prediction() {
        let (b, _) = breaker(
            config()
                .window(WindowKind::Count(20))
                .minimum_calls(20)
                .build()
                .unwrap(),
        );
        let (n, p, trials) = (20u32, 0.25f64, 100_000u32);
        let mut z = 12_345u64;
        let mut draw = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((x ^ (x >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut trips = 0u32;
        for _ in 0..trials {
            b.set_state(State::Closed, T0);
            for _ in 0..n {
                let outcome = if draw() < p {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                let _ = call(&b, outcome, T0);
            }
            trips += u32::from(b.state() == State::Open);
        }
        // P(X >= 10) for X ~ Binomial(20, 0.25).
        let choose =
            |n: u32, k: u32| (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1));
        let expected: f64 = (10..=n)
            .map(|k| choose(n, k) * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32))
            .sum::<f64>()
            * f64::from(trials);
        let observed = f64::from(trips);
        assert!(
            (observed - expected).abs() <= 0.1 * expected,
            "{observed} trips, {expected:.0} expected"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn open_durations_are_jittered_within_their_spread() {
        let (b, _) = breaker(config().open_jitter(0.2).build().unwrap());
        let mut waits = Vec::new();
        for _ in 0..50 {
            b.set_state(State::Closed, T0);
            trip(&b, T0);
            let Err(Rejection::Open(Some(wait))) = b.acquire(T0) else {
                panic!()
            };
            assert!(
                wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12),
                "{wait:?}"
            );
            waits.push(wait);
        }
        waits.sort();
        waits.dedup();
        assert!(
            waits.len() > 40,
            "the durations are spread: {} distinct of 50",
            waits.len()
        );
        assert!(
            waits[0] < Duration::from_secs(9) && waits[waits.len() - 1] > Duration::from_secs(11)
        );
    }
}

/// Exhaustive interleavings of the transitions and the probe permits, with
/// loom: `RUSTFLAGS="--cfg tower_llm_loom" cargo test -p tower-llm-circuit --lib --release loom`.
#[cfg(all(test, tower_llm_loom))]
mod loom_models {
    use super::*;
    use crate::window::WindowKind;
    use loom::sync::atomic::AtomicUsize;

    fn breaker(probes: u32, events: Arc<AtomicUsize>) -> Arc<Breaker> {
        let config = CircuitConfig::builder()
            .window(WindowKind::Count(4))
            .minimum_calls(2)
            .consecutive_failures(None)
            .open_jitter(0.0)
            .half_open_probes(probes)
            .build()
            .unwrap();
        let on: Arc<OnTransition> = Arc::new(move |_: &Transition| {
            events.fetch_add(1, Ordering::SeqCst);
        });
        Arc::new(Breaker::new(
            "k".into(),
            tokio::time::Instant::now(),
            Arc::new(config),
            Some(on),
            Duration::ZERO,
        ))
    }

    #[test]
    fn loom_two_failures_racing_open_the_circuit_exactly_once() {
        loom::model(|| {
            let events = Arc::new(AtomicUsize::new(0));
            let b = breaker(1, Arc::clone(&events));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let b = Arc::clone(&b);
                    loom::thread::spawn(move || {
                        let p = b.acquire(Duration::ZERO).unwrap();
                        b.record(p, Outcome::Failure, false, Duration::ZERO);
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(b.state(), State::Open);
            assert_eq!(events.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn loom_half_open_never_admits_more_probes_than_permitted() {
        loom::model(|| {
            let events = Arc::new(AtomicUsize::new(0));
            let b = breaker(1, events);
            b.set_state(State::HalfOpen, Duration::ZERO);
            let admitted = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (b, admitted) = (Arc::clone(&b), Arc::clone(&admitted));
                    loom::thread::spawn(move || {
                        if let Ok(p) = b.acquire(Duration::ZERO) {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            // The probe is abandoned: its permit goes back.
                            b.record(p, Outcome::Ignored, false, Duration::ZERO);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert!(admitted.load(Ordering::SeqCst) >= 1);
            assert!(
                Phase::unpack(b.phase.load(Ordering::SeqCst)).permits <= 1,
                "a permit was duplicated"
            );
            assert_eq!(
                Phase::unpack(b.phase.load(Ordering::SeqCst)).permits,
                1,
                "every released permit came back"
            );
        });
    }

    #[test]
    fn loom_callers_ending_an_open_interval_together_arm_one_phase_of_n_probes() {
        loom::model(|| {
            let events = Arc::new(AtomicUsize::new(0));
            let b = breaker(1, events);
            b.set_state(State::Open, Duration::ZERO);
            // Far past any open interval.
            let later = Duration::from_secs(3600);
            let admitted = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (b, admitted) = (Arc::clone(&b), Arc::clone(&admitted));
                    loom::thread::spawn(move || {
                        if b.acquire(later).is_ok() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(
                admitted.load(Ordering::SeqCst),
                1,
                "exactly the one permitted probe"
            );
            assert_eq!(b.state(), State::HalfOpen);
        });
    }

    #[test]
    fn loom_racing_probe_outcomes_make_one_transition() {
        loom::model(|| {
            let events = Arc::new(AtomicUsize::new(0));
            let b = breaker(2, Arc::clone(&events));
            b.set_state(State::HalfOpen, Duration::ZERO);
            let before = events.load(Ordering::SeqCst);
            let permits = [
                b.acquire(Duration::ZERO).unwrap(),
                b.acquire(Duration::ZERO).unwrap(),
            ];
            let handles: Vec<_> = permits
                .into_iter()
                .map(|p| {
                    let b = Arc::clone(&b);
                    loom::thread::spawn(move || {
                        b.record(p, Outcome::Success, false, Duration::ZERO)
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(b.state(), State::Closed);
            assert_eq!(events.load(Ordering::SeqCst) - before, 1);
        });
    }
}
