//! The settings of the adaptive concurrency limit, checked when built.

use std::time::Duration;

use crate::config::ConfigError;

/// How each key's concurrency limit moves, and how long a call waits for
/// room. Build with [`AdaptiveLimitConfig::builder`]; the defaults are
/// [`standard`](AdaptiveLimitConfig::standard).
///
/// | setting | `standard` | why |
/// |---|---|---|
/// | off until shed | yes | see below |
/// | quiet period | 60 s | see below |
/// | initial limit | 20 (only when on from the start) | Netflix concurrency-limits' `AIMDLimit` starts at 20 |
/// | minimum | 1 | a key is never starved: one call always goes |
/// | maximum | 200 | `AIMDLimit`'s maximum; a limit that grows past it turns off |
/// | backoff | × 0.5, once per window | see below |
/// | shed rate | 30 % of a window's answers | see below |
/// | queue | 64 calls, 2 s each | a call waits for room rather than fail at once, but not longer than a retry's backoff would |
/// | growth latency | none | an LLM answer's duration is the request's doing (`max_tokens`) |
///
/// # Off until the key is overloaded
///
/// A key's limit is off (no limit, no queue) until a window of its answers
/// first has the shed rate's share of shed ones; it then starts at what
/// was in flight at that moment times the backoff (never below the
/// minimum) and moves as below. It turns off again when it grows past the
/// maximum, when a [quiet period](AdaptiveLimitConfigBuilder::quiet_period)
/// passes without a window that lowered it, and when the key's breaker
/// closes after being open. The AWS SDKs' adaptive retry mode does the
/// same with its client-side rate limiter (botocore `retries/adaptive.py`:
/// the token bucket is enabled only after the first throttling answer).
/// A limit that is on from the start at a guessed value throttles
/// healthy keys the guess is wrong for: a gateway with 500 callers on
/// one healthy provider waited at 20 and needed about 100,000 successes to
/// grow to 500; and streams that stall (20 % of them silent until a 60 s
/// idle timeout, the chaos suite's `stream_stall` scenario) fill a limit
/// of 20 within a second, so every other call of a target that answers
/// 80 % of its calls waited 2 s and was refused. While off, a window is
/// twice the calls in flight's worth of answers (at least 20), as it is
/// twice the limit's when on.
///
/// The quiet period is 60 s: long enough to span the sawtooth of a key
/// that is still overloaded (after a halving from a limit `L`, additive
/// increase takes `L / 2` rounds of `L` answers to reach the shed point
/// again: 20 rounds of a few seconds each for an LLM key near 40), so an
/// overload that lasts keeps its limit on instead of letting its whole
/// load back in each time; and the minute over which providers measure
/// their request and token limits (OpenAI's and Anthropic's RPM and TPM),
/// so the overload of one minute is not carried into the next.
/// [`off_until_shed(false)`](AdaptiveLimitConfigBuilder::off_until_shed)
/// keeps the limit on from the start, at the initial limit, never off.
///
/// # Why a shed rate, and not every shed answer
///
/// A fleet provider answers a few percent of calls "overloaded" at random,
/// whatever the load of one client (OpenAI's 503 `server_is_overloaded`,
/// Anthropic's 529): one shed answer says little about this key's load.
/// AIMD that halves on any shed answer settles, under a random loss
/// rate `p`, near `sqrt(1.5 / p)` calls: 3 at 20 %. The chaos suite's
/// `transient` scenario (32 callers, 20 % of calls answered 503 at random)
/// measured it: the limit sat near 3 and the median answer took 550 ms
/// instead of 50 ms, though the upstream was never overloaded. A breaker
/// answers the same question (is a failure noise or a trend?) with a
/// failure rate over a minimum number of calls
/// ([`failure_rate`](crate::CircuitConfigBuilder::failure_rate) and
/// [`minimum_calls`](crate::CircuitConfigBuilder::minimum_calls)); the
/// limit does the same: it is lowered when shed answers reach the
/// [`shed_rate`](AdaptiveLimitConfigBuilder::shed_rate) share of a window
/// of answers. A window is twice the limit's worth of answers (about two
/// round trips of a key at its limit), at least 20: at 20 % random sheds
/// and a limit of 32, a window of 64 answers reaches 30 % about once in 45
/// (the binomial tail: 2.2 %), so the limit stays near the load; a target
/// shedding the overflow of a real overload sheds a share that grows with
/// the overload (offered 64 calls a second, a capacity of 40 that queues
/// nothing sheds 37.5 %), and a window at 40 % reaches 30 % more than
/// nine times in ten (94 %). The decision is taken as soon
/// as it is certain: a window whose shed answers already make 30 % of its
/// full size lowers the limit at once, so a provider shedding everything
/// lowers it within a few calls.
/// Answers that are neither a success nor a shed (server errors,
/// timeouts, resets) count in the window; refusals made by this stack (an
/// open breaker, a cooldown, the limit's own) and calls the caller dropped
/// do not.
///
/// # Why × 0.5 once per window
///
/// `AIMDLimit` multiplies its limit by 0.9 on *every* dropped call; a burst
/// of shed answers (a provider sheds every queued call at once) compounds
/// it (0.9^64 ≈ 0.001) and the limit falls to its minimum in one burst.
/// Here a decrease starts a new window, and answers to calls admitted
/// before it are not counted in the next (TCP's one reduction per window,
/// RFC 5681); it halves the limit as TCP Reno does: one burst halves the
/// limit, a provider still shedding halves it again a window later.
///
/// # After an outage
///
/// When the key's breaker closes again after being open (its probes
/// succeeded, or a health probe did), the limit turns off (with
/// [`off_until_shed(false)`](AdaptiveLimitConfigBuilder::off_until_shed):
/// a limit below the initial one starts again from it): an outage's shed
/// answers (a target down behind a 503) drove the limit down, but said
/// nothing about the recovered target's capacity. Growing back from 1 by
/// one call per limit's worth of successes would keep a busy recovered
/// key below its load for as many windows, its calls over the limit
/// waiting, or refused and sent to another target. Starting again treats
/// the key as the new key it is; TCP's slow start (doubling per window
/// from 1) would probe its way up, but the breaker's half-open probes
/// already did, and a key still overloaded turns its limit on again with
/// its next window of shed answers.
///
/// # Growth
///
/// A call that ends well raises the limit by 1/limit (one per limit's
/// worth of successes, TCP's congestion avoidance) when the key was using
/// at least half of its limit (`AIMDLimit`'s `inflight * 2 >= limit`): an
/// idle key does not grow a limit it never tested. With a growth latency
/// set, a call whose response head took longer does not raise it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveLimitConfig {
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) backoff: f64,
    /// Percent of a window's answers.
    pub(crate) shed_rate: f64,
    pub(crate) max_queue: u32,
    pub(crate) max_queue_wait: Duration,
    pub(crate) growth_latency: Option<Duration>,
    pub(crate) off_until_shed: bool,
    pub(crate) quiet_period: Duration,
}

impl AdaptiveLimitConfig {
    /// The defaults: see the table above.
    pub fn standard() -> Self {
        AdaptiveLimitConfig {
            initial: 20,
            min: 1,
            max: 200,
            backoff: 0.5,
            shed_rate: 30.0,
            max_queue: 64,
            max_queue_wait: Duration::from_secs(2),
            growth_latency: None,
            off_until_shed: true,
            quiet_period: Duration::from_secs(60),
        }
    }

    /// A builder starting from [`standard`](Self::standard).
    pub fn builder() -> AdaptiveLimitConfigBuilder {
        AdaptiveLimitConfigBuilder {
            config: AdaptiveLimitConfig::standard(),
        }
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> AdaptiveLimitConfigBuilder {
        AdaptiveLimitConfigBuilder {
            config: self.clone(),
        }
    }

    /// The limit a key starts with when it is on from the start
    /// ([`off_until_shed(false)`](AdaptiveLimitConfigBuilder::off_until_shed)),
    /// and starts again from when its breaker closes after being open.
    pub fn initial(&self) -> u32 {
        self.initial
    }

    /// The lowest limit (at least 1).
    pub fn min(&self) -> u32 {
        self.min
    }

    /// The highest limit: one that grows past it turns off (or stays at
    /// it, when on from the start).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The factor a decrease multiplies the limit by.
    pub fn backoff(&self) -> f64 {
        self.backoff
    }

    /// The share of a window's answers (percent) that must be shed
    /// before the limit is lowered.
    pub fn shed_rate(&self) -> f64 {
        self.shed_rate
    }

    /// Most calls waiting for room on one key.
    pub fn max_queue(&self) -> u32 {
        self.max_queue
    }

    /// Longest wait for room.
    pub fn max_queue_wait(&self) -> Duration {
        self.max_queue_wait
    }

    /// Whether a key's limit is off until a window of its answers first
    /// has the shed rate's share of shed ones (`true` by default).
    pub fn off_until_shed(&self) -> bool {
        self.off_until_shed
    }

    /// How long a limit that is on stays on without a window that lowered
    /// it, when [`off_until_shed`](Self::off_until_shed).
    pub fn quiet_period(&self) -> Duration {
        self.quiet_period
    }
}

impl Default for AdaptiveLimitConfig {
    fn default() -> Self {
        AdaptiveLimitConfig::standard()
    }
}

/// Builds an [`AdaptiveLimitConfig`]; [`build`](Self::build) checks it.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_circuit::AdaptiveLimitConfig;
///
/// let config = AdaptiveLimitConfig::builder()
///     .limits(4, 2, 50)
///     .backoff(0.7)
///     .shed_rate(40.0)
///     .queue(16, Duration::from_millis(500))
///     .build()?;
/// assert_eq!((config.initial(), config.min(), config.max()), (4, 2, 50));
/// assert_eq!(config.shed_rate(), 40.0);
/// assert!(AdaptiveLimitConfig::builder().limits(4, 0, 50).build().is_err());
/// assert!(AdaptiveLimitConfig::builder().shed_rate(130.0).build().is_err());
/// # Ok::<(), tower_llm_circuit::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct AdaptiveLimitConfigBuilder {
    config: AdaptiveLimitConfig,
}

impl AdaptiveLimitConfigBuilder {
    /// The limit a key starts with, and the lowest and highest it may
    /// reach (`1 <= min <= initial <= max`).
    pub fn limits(mut self, initial: u32, min: u32, max: u32) -> Self {
        self.config.initial = initial;
        self.config.min = min;
        self.config.max = max;
        self
    }

    /// What a decrease multiplies the limit by, in [0.5, 1) (the range
    /// `AIMDLimit` accepts).
    pub fn backoff(mut self, factor: f64) -> Self {
        self.config.backoff = factor;
        self
    }

    /// Lowers the limit only when shed answers make at least `percent` of
    /// a window's answers (in (0, 100]; 30 by default, a percent as the
    /// breaker's [`failure_rate`](crate::CircuitConfigBuilder::failure_rate)).
    /// `100` lowers it only on a window of nothing but shed answers; a
    /// small rate comes back to the classic AIMD that any shed answer
    /// lowers, which random sheds keep small (see
    /// [`AdaptiveLimitConfig`]).
    pub fn shed_rate(mut self, percent: f64) -> Self {
        self.config.shed_rate = percent;
        self
    }

    /// At most `calls` wait for room on one key, each at most `wait`;
    /// beyond either, a call is refused at once. `0` calls: never wait.
    pub fn queue(mut self, calls: u32, wait: Duration) -> Self {
        self.config.max_queue = calls;
        self.config.max_queue_wait = wait;
        self
    }

    /// A call whose response head takes longer than `latency` does not
    /// raise the limit (none by default).
    pub fn growth_latency(mut self, latency: Option<Duration>) -> Self {
        self.config.growth_latency = latency;
        self
    }

    /// Whether a key's limit is off (no limit, no queue) until a window of
    /// its answers first has the shed rate's share of shed ones, and off
    /// again after a quiet period or once it grows past the maximum
    /// (`true`, the default; see [`AdaptiveLimitConfig`]). `false`: on from
    /// the start at the initial limit, never off.
    pub fn off_until_shed(mut self, on: bool) -> Self {
        self.config.off_until_shed = on;
        self
    }

    /// A limit that is on turns off once this long has passed without a
    /// window of answers that lowered it (60 s by default; see
    /// [`AdaptiveLimitConfig`]). Only with
    /// [`off_until_shed`](Self::off_until_shed).
    pub fn quiet_period(mut self, period: Duration) -> Self {
        self.config.quiet_period = period;
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<AdaptiveLimitConfig, ConfigError> {
        let c = self.config;
        if !(1 <= c.min && c.min <= c.initial && c.initial <= c.max) {
            return Err(ConfigError(format!(
                "adaptive limit: 1 <= min <= initial <= max must hold, not min {} initial {} max {}",
                c.min, c.initial, c.max
            )));
        }
        if !(0.5..1.0).contains(&c.backoff) {
            return Err(ConfigError(format!(
                "adaptive limit: backoff must be in [0.5, 1), not {}",
                c.backoff
            )));
        }
        if !(c.shed_rate > 0.0 && c.shed_rate <= 100.0) {
            return Err(ConfigError(format!(
                "adaptive limit: shed_rate must be a percent in (0, 100], not {}",
                c.shed_rate
            )));
        }
        if c.quiet_period.is_zero() {
            return Err(ConfigError(
                "adaptive limit: quiet_period must be longer than zero".into(),
            ));
        }
        if c.growth_latency.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError(
                "adaptive limit: growth_latency must be longer than zero".into(),
            ));
        }
        Ok(c)
    }
}
