//! What a breaker decides with: windows, thresholds, open durations,
//! probes, cooldowns. Checked when built; shared by every key.

use std::fmt;
use std::time::Duration;

use crate::window::WindowKind;

/// The settings of every breaker of a layer. Build with
/// [`CircuitConfig::builder`] or a preset.
///
/// | | `standard` | `fast_trip` | `lenient` |
/// |---|---|---|---|
/// | window | last 50 calls | last 20 calls | last 60 s |
/// | minimum calls | 20 | 5 | 20 |
/// | failure rate to open | 50 % | 50 % | 70 % |
/// | consecutive failures to open | 10 | 5 | none |
/// | open for | 10 s, ×1.5 per re-open, ≤ 30 s | 5 s, ×2, ≤ 30 s | 30 s, ×2, ≤ 10 min |
/// | probes in half-open | 3 | 1 | 5 |
///
/// `standard` trips sooner than Resilience4j's defaults (100 calls, 60 s
/// open) because LLM providers fail in bursts and a fallback is usually
/// ready; its consecutive-failure trip is Envoy's outlier default (5
/// consecutive 5xx) and Finagle's failure accrual.
///
/// # Why open intervals stop growing at 30 s
///
/// Finagle's failure accrual marks a host dead for
/// `Backoff.equalJittered(5 s, 300 s)` and Envoy's outlier detection
/// ejects for 30 s × ejections ≤ 300 s: both take one replica out of a
/// pool of interchangeable ones, where leaving a recovered host out for
/// minutes costs a sliver of capacity. A key here is a model the caller
/// chose first, its fallback usually a worse or dearer one, and the cost
/// of an open interval that overshoots the recovery is every request of
/// that time on the fallback. A probe costs one request one fast failed
/// attempt before it moves on (a request does not probe a key again after
/// its probe failed: see [`RequestToken`](crate::RequestToken)). So
/// `standard` grows as Resilience4j's exponential wait interval does (its
/// `IntervalFunction` multiplier defaults to 1.5: 10 → 15 → 22.5 s) and
/// stops at 30 s, and `fast_trip` stops there too: a target down for an
/// hour costs 3 probes per 30 s, and one that recovers is found within
/// 30 s (the chaos suite's `flapping` scenario: 503 for 60 s, one request
/// every 4 s). `lenient`, for a key with nowhere else to go, keeps
/// growing to 10 min.
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitConfig {
    pub(crate) window: WindowKind,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: f64,
    pub(crate) slow_call_rate: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_first_content: Option<Duration>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_duration: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) max_open_duration: Duration,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_deadline: Option<Duration>,
    pub(crate) count_authentication_failures: bool,
    pub(crate) quota_cooldown: Duration,
    pub(crate) rate_limit_cooldown: bool,
    pub(crate) count_overload: bool,
    pub(crate) count_after_content: bool,
    pub(crate) max_keys: usize,
    pub(crate) idle_eviction: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) adaptive_limit: crate::AdaptiveLimitConfig,
    pub(crate) pacing: crate::PacingConfig,
}

/// A configuration that does not hold together, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid circuit configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl CircuitConfig {
    /// A builder starting from [`standard`](Self::standard).
    pub fn builder() -> CircuitConfigBuilder {
        CircuitConfigBuilder {
            config: CircuitConfig::base(),
        }
    }

    fn base() -> CircuitConfig {
        CircuitConfig {
            window: WindowKind::Count(50),
            // The chaos suite (crates/tower-llm-bench/benches/chaos, `transient`: 22 % random
            // failures) opened a breaker with 10 minimum calls and 5
            // consecutive failures about once per 2,400 attempts — and an
            // open breaker with nowhere else to go turns 22 % failures into
            // 100 %. With 20 and 10 the false-trip odds at p = 0.22 are
            // ~0.5 % per window start and ~5e-4 per 2,400 attempts; a dead
            // provider still trips within 10 calls.
            minimum_calls: 20,
            failure_rate: 50.0,
            slow_call_rate: 100.0,
            slow_call_duration: None,
            slow_first_content: None,
            consecutive_failures: Some(10),
            open_duration: Duration::from_secs(10),
            open_multiplier: 1.5,
            max_open_duration: Duration::from_secs(30),
            open_jitter: 0.2,
            half_open_probes: 3,
            half_open_deadline: None,
            count_authentication_failures: false,
            quota_cooldown: Duration::from_secs(3600),
            rate_limit_cooldown: true,
            count_overload: true,
            count_after_content: true,
            max_keys: 10_000,
            idle_eviction: Duration::from_secs(3600),
            seed: None,
            adaptive_limit: crate::AdaptiveLimitConfig::standard(),
            pacing: crate::PacingConfig::default(),
        }
    }

    /// The default: see the table above.
    pub fn standard() -> CircuitConfig {
        CircuitConfig::base()
    }

    /// Trips early, probes once: for a gateway with a fallback ready.
    pub fn fast_trip() -> CircuitConfig {
        CircuitConfig {
            window: WindowKind::Count(20),
            minimum_calls: 5,
            // 3 opened on a 25 %-failure primary within ~50 requests (the
            // chaos example); 5 takes ~1,000 at that rate, 5 calls when dead.
            consecutive_failures: Some(5),
            open_duration: Duration::from_secs(5),
            open_multiplier: 2.0,
            max_open_duration: Duration::from_secs(30),
            half_open_probes: 1,
            ..CircuitConfig::base()
        }
    }

    /// Tolerates more: for a single provider with nowhere else to go.
    pub fn lenient() -> CircuitConfig {
        CircuitConfig {
            window: WindowKind::Time(60),
            minimum_calls: 20,
            failure_rate: 70.0,
            consecutive_failures: None,
            open_duration: Duration::from_secs(30),
            open_multiplier: 2.0,
            max_open_duration: Duration::from_secs(600),
            half_open_probes: 5,
            ..CircuitConfig::base()
        }
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> CircuitConfigBuilder {
        CircuitConfigBuilder {
            config: self.clone(),
        }
    }

    /// The window.
    pub fn window(&self) -> WindowKind {
        self.window
    }

    /// Probes admitted in half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// Whether a failure after the answer's content had started counts
    /// against the target (see
    /// [`count_after_content`](CircuitConfigBuilder::count_after_content)).
    pub fn count_after_content(&self) -> bool {
        self.count_after_content
    }

    /// The settings of the adaptive limit that shares these keys
    /// ([`CircuitLayer::adaptive_limit`](crate::CircuitLayer::adaptive_limit)).
    pub fn adaptive_limit(&self) -> &crate::AdaptiveLimitConfig {
        &self.adaptive_limit
    }

    /// How keys are paced ahead of their rate limits.
    pub fn pacing(&self) -> &crate::PacingConfig {
        &self.pacing
    }

    /// How long an open circuit waits before its `n`-th consecutive probe
    /// phase (n = 1 for the first trip), before jitter.
    pub fn open_duration_for(&self, n: u32) -> Duration {
        let grown = self.open_duration.as_secs_f64()
            * self
                .open_multiplier
                .powi(n.saturating_sub(1).min(64) as i32);
        let capped = grown.min(self.max_open_duration.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.max_open_duration)
    }

    /// Whether an outcome needs the time of its call: slow-call rules and
    /// time windows do; a count window without them does not (a trip
    /// reads the clock itself).
    pub(crate) fn needs_times(&self) -> bool {
        self.slow_call_duration.is_some()
            || self.slow_first_content.is_some()
            || matches!(self.window, WindowKind::Time(_))
    }

    /// How long half-open may wait for its probes before admitting new
    /// ones: the configured deadline, else the base open duration.
    pub(crate) fn half_open_deadline(&self) -> Duration {
        self.half_open_deadline.unwrap_or(self.open_duration)
    }
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig::standard()
    }
}

/// Builds a [`CircuitConfig`]; [`build`](Self::build) checks it.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_circuit::{CircuitConfig, WindowKind};
///
/// let config = CircuitConfig::builder()
///     .window(WindowKind::Time(30))
///     .minimum_calls(20)
///     .failure_rate(40.0)
///     .slow_calls(Duration::from_secs(20), 80.0)
///     .open_duration(Duration::from_secs(15), 2.0, Duration::from_secs(300))
///     .half_open_probes(2)
///     .build()?;
/// assert_eq!(config.half_open_probes(), 2);
/// # Ok::<(), tower_llm_circuit::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitConfigBuilder {
    config: CircuitConfig,
}

impl CircuitConfigBuilder {
    /// The sliding window.
    pub fn window(mut self, window: WindowKind) -> Self {
        self.config.window = window;
        self
    }

    /// Calls the window must hold before its rates can open the circuit.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// The failure rate, in percent (0, 100], at or above which it opens.
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.config.failure_rate = percent;
        self
    }

    /// Calls slower than `duration` (to the end of their body) count as
    /// slow; at or above `percent` slow calls, it opens. For streams, see
    /// also [`slow_first_content`](Self::slow_first_content).
    pub fn slow_calls(mut self, duration: Duration, percent: f64) -> Self {
        self.config.slow_call_duration = Some(duration);
        self.config.slow_call_rate = percent;
        self
    }

    /// A response whose first content comes later than `duration` after
    /// the call counts as slow, toward the slow-call rate set with
    /// [`slow_calls`](Self::slow_calls). For a stream that is its first
    /// content event (keep-alives, pings and role chunks do not count, as
    /// classify's scanner tells them apart); for a whole body, its first
    /// bytes.
    pub fn slow_first_content(mut self, duration: Duration) -> Self {
        self.config.slow_first_content = Some(duration);
        self
    }

    /// Opens after this many consecutive failures, whatever the window
    /// holds (`None` turns it off).
    pub fn consecutive_failures(mut self, failures: Option<u32>) -> Self {
        self.config.consecutive_failures = failures;
        self
    }

    /// Open for `base`, times `multiplier` per consecutive re-open, at most `max`.
    pub fn open_duration(mut self, base: Duration, multiplier: f64, max: Duration) -> Self {
        self.config.open_duration = base;
        self.config.open_multiplier = multiplier;
        self.config.max_open_duration = max;
        self
    }

    /// Spread of each open duration, as a fraction (0.2: ±20 %), so a fleet
    /// does not probe in lockstep. 0 for none.
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.config.open_jitter = fraction;
        self
    }

    /// Probes admitted in half-open; their outcomes decide.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.config.half_open_probes = probes;
        self
    }

    /// How long half-open waits for its probes before admitting new ones
    /// (default: the base open duration), so a hung probe cannot hold
    /// recovery back (Resilience4j issue #903).
    pub fn half_open_deadline(mut self, deadline: Duration) -> Self {
        self.config.half_open_deadline = Some(deadline);
        self
    }

    /// Whether 401s count as failures of the target (off by default: a bad
    /// key is the caller's problem, not the provider's health).
    pub fn count_authentication_failures(mut self, on: bool) -> Self {
        self.config.count_authentication_failures = on;
        self
    }

    /// How long a key cools down after quota exhausted (1 h by default).
    /// It also caps a rate limit's hinted cooldown: a server asking for a
    /// longer wait (up to the two days a hint may say) is treated as out of
    /// quota, so one header cannot shut a key for days.
    pub fn quota_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.quota_cooldown = cooldown;
        self
    }

    /// Whether a rate-limited answer with a hinted wait cools its key down
    /// until the hinted instant (on by default). Turn it off where the key
    /// has nowhere else to send its calls: LiteLLM does not cool down a
    /// deployment that is alone in its group, as a cooldown can then only
    /// turn a chance of success into a certain failure (measured:
    /// `cargo bench -p tower-llm-bench --bench chaos -- rate_limit`). Quota cooldowns stay.
    pub fn rate_limit_cooldown(mut self, on: bool) -> Self {
        self.config.rate_limit_cooldown = on;
        self
    }

    /// Whether an overloaded answer (529, `overloaded_error`, 503
    /// `server_is_overloaded`, a queue that sheds) counts as a failure of
    /// the target (on by default). Turn it off where the key has nowhere
    /// else to send its calls: a busy provider is not a down one, and an
    /// open breaker in front of a lone target turns a share of shed answers
    /// into every call failing (measured: `cargo bench -p tower-llm-bench --bench chaos --
    /// stream_529_first`, 25 % overload as a stream's first event: 89 %
    /// served without the breaker hearing them, 1 % once it did). Connect
    /// failures, timeouts and server errors still count.
    pub fn count_overload(mut self, on: bool) -> Self {
        self.config.count_overload = on;
        self
    }

    /// Whether a failure after the answer's content had started (phase
    /// mid-stream: a stream cut, or ended by its idle timeout, after
    /// content reached the caller) counts as a failure of the target (on
    /// by default). Turn it off where the key has nowhere else to send its
    /// calls: a target that answered and generated is up, and stalls that
    /// come together (streams that went silent, ended by one idle timeout
    /// within a second of each other) would otherwise open the breaker of
    /// a target that serves most of its calls, and every call of the open
    /// interval fails (measured: `cargo bench -p tower-llm-bench --bench chaos --
    /// stream_stall`, 20 % of streams stalled after 5 content events, 32
    /// callers). Off, such a failure is not counted in the window nor in
    /// the consecutive failures, and a half-open probe that ends so
    /// succeeded (the target answered). Failures before any content
    /// (connect, head, first-content timeouts, errors before content)
    /// still count.
    pub fn count_after_content(mut self, on: bool) -> Self {
        self.config.count_after_content = on;
        self
    }

    /// At most this many keys; idle ones are evicted first. A key with
    /// calls in flight or waiting in its adaptive limit is never evicted,
    /// nor a state set by hand (a shard may then hold more than its share).
    /// Pacing keeps as many views: past them, with every view busy, a key
    /// the pacing configuration names keeps its own view, and any other
    /// shares one with the other such keys of its target (`target/*`),
    /// paced together by the target's limits.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.config.max_keys = keys;
        self
    }

    /// A key unused this long may be evicted (1 h by default).
    pub fn idle_eviction(mut self, idle: Duration) -> Self {
        self.config.idle_eviction = idle;
        self
    }

    /// The settings of the adaptive concurrency limit made from this
    /// layer ([`CircuitLayer::adaptive_limit`](crate::CircuitLayer::adaptive_limit)),
    /// which shares its keys; [`AdaptiveLimitConfig::standard`](crate::AdaptiveLimitConfig::standard)
    /// by default. Without that layer in the stack, nothing is limited.
    pub fn adaptive_limit(mut self, limit: crate::AdaptiveLimitConfig) -> Self {
        self.config.adaptive_limit = limit;
        self
    }

    /// How keys are paced ahead of their rate limits: by default from the
    /// rate-limit headers of their answers, once they have sent some
    /// (see [`PacingConfig`](crate::PacingConfig)).
    pub fn pacing(mut self, pacing: crate::PacingConfig) -> Self {
        self.config.pacing = pacing;
        self
    }

    /// Seeds the open-duration jitter, for reproducible runs (mixed with
    /// each key, so keys still differ).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Checks the configuration. A minimum number of calls above a count
    /// window's size is lowered to it (as Resilience4j does).
    pub fn build(self) -> Result<CircuitConfig, ConfigError> {
        let mut c = self.config;
        if let WindowKind::Count(n) = c.window {
            c.minimum_calls = c.minimum_calls.min(n);
        }
        let bad = |message: String| Err(ConfigError(message));
        match c.window {
            WindowKind::Count(0) | WindowKind::Time(0) => {
                return bad("the window must hold at least one call or second".into());
            }
            WindowKind::Time(n) if n > 3600 => {
                return bad(format!("a time window of {n} s is over an hour"));
            }
            _ => {}
        }
        for (name, rate) in [
            ("failure_rate", c.failure_rate),
            ("slow_call_rate", c.slow_call_rate),
        ] {
            if !(rate > 0.0 && rate <= 100.0) {
                return bad(format!("{name} must be in (0, 100], not {rate}"));
            }
        }
        if c.minimum_calls == 0 {
            return bad("minimum_calls must be at least 1".into());
        }
        if c.half_open_probes == 0 || c.half_open_probes > 1000 {
            return bad(format!(
                "half_open_probes must be between 1 and 1000, not {}",
                c.half_open_probes
            ));
        }
        if c.half_open_deadline.is_some_and(|d| d.is_zero()) || c.idle_eviction.is_zero() {
            return bad("half_open_deadline and idle_eviction must be longer than zero".into());
        }
        if c.consecutive_failures == Some(0) {
            return bad("consecutive_failures must be at least 1 (or None)".into());
        }
        if c.open_duration.is_zero() || c.max_open_duration < c.open_duration {
            return bad(format!(
                "open duration must be above zero and at most its maximum ({:?} > {:?})",
                c.open_duration, c.max_open_duration
            ));
        }
        if !c.open_multiplier.is_finite() || c.open_multiplier < 1.0 {
            return bad(format!(
                "open multiplier must be a finite number >= 1, not {}",
                c.open_multiplier
            ));
        }
        if !(0.0..1.0).contains(&c.open_jitter) {
            return bad(format!(
                "open jitter must be in [0, 1), not {}",
                c.open_jitter
            ));
        }
        if c.max_keys == 0 {
            return bad("max_keys must be at least 1".into());
        }
        // It also caps every rate limit's hinted cooldown: zero would turn
        // both the quota and the 429 protection off, silently.
        if c.quota_cooldown.is_zero() {
            return bad(
                "quota cooldown must be above zero (it also caps a rate limit's cooldown)".into(),
            );
        }
        c.pacing.check()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_build() {
        for config in [
            CircuitConfig::standard(),
            CircuitConfig::fast_trip(),
            CircuitConfig::lenient(),
        ] {
            assert!(config.to_builder().build().is_ok(), "{config:?}");
        }
    }

    #[test]
    fn a_minimum_above_the_window_is_lowered_to_it() {
        let c = CircuitConfig::builder()
            .window(WindowKind::Count(10))
            .minimum_calls(50)
            .build()
            .unwrap();
        assert_eq!(c.minimum_calls, 10);
    }

    #[test]
    fn open_durations_grow_to_their_cap() {
        let c = CircuitConfig::standard();
        let d: Vec<u64> = (1..=6)
            .map(|n| c.open_duration_for(n).as_millis() as u64)
            .collect();
        assert_eq!(d, [10_000, 15_000, 22_500, 30_000, 30_000, 30_000]);
        assert_eq!(c.open_duration_for(u32::MAX), Duration::from_secs(30));
        let fast: Vec<u64> = (1..=5)
            .map(|n| CircuitConfig::fast_trip().open_duration_for(n).as_secs())
            .collect();
        assert_eq!(fast, [5, 10, 20, 30, 30]);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let cases = [
            (
                CircuitConfig::builder().window(WindowKind::Count(0)),
                "window",
            ),
            (CircuitConfig::builder().failure_rate(0.0), "failure_rate"),
            (
                CircuitConfig::builder().failure_rate(f64::NAN),
                "failure_rate",
            ),
            (CircuitConfig::builder().minimum_calls(0), "minimum_calls"),
            (
                CircuitConfig::builder().quota_cooldown(Duration::ZERO),
                "quota cooldown",
            ),
            (
                CircuitConfig::builder().half_open_probes(0),
                "half_open_probes",
            ),
            (
                CircuitConfig::builder().consecutive_failures(Some(0)),
                "consecutive_failures",
            ),
            (
                CircuitConfig::builder().open_duration(Duration::ZERO, 2.0, Duration::from_secs(1)),
                "open duration",
            ),
            (
                CircuitConfig::builder().open_duration(
                    Duration::from_secs(1),
                    0.5,
                    Duration::from_secs(9),
                ),
                "multiplier",
            ),
            (CircuitConfig::builder().open_jitter(1.5), "jitter"),
        ];
        for (builder, needle) in cases {
            let error = builder.build().unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
    }
}
