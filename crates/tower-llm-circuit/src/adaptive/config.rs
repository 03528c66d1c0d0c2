//! The settings of the adaptive concurrency limit, checked when built.

use std::time::Duration;

use crate::config::ConfigError;

/// How each key's concurrency limit moves, and how long a call waits for
/// room. Build with [`AdaptiveLimitConfig::builder`]; the defaults are
/// [`standard`](AdaptiveLimitConfig::standard).
///
/// | setting | `standard` | why |
/// |---|---|---|
/// | initial limit | 20 | Netflix concurrency-limits' `AIMDLimit` starts at 20; above what one key of a provider usually serves at once, so a healthy key never waits |
/// | minimum | 1 | a key is never starved: one call always goes |
/// | maximum | 200 | `AIMDLimit`'s maximum |
/// | backoff | × 0.5, once per window | see below |
/// | queue | 64 calls, 2 s each | a call waits for room rather than fail at once, but not longer than a retry's backoff would |
/// | growth latency | none | an LLM answer's duration is the request's doing (`max_tokens`) |
///
/// # Why × 0.5 once per window
///
/// `AIMDLimit` multiplies its limit by 0.9 on *every* dropped call; a burst
/// of shed answers (a provider sheds every queued call at once) compounds
/// it (0.9^64 ≈ 0.001) and the limit falls to its minimum in one burst.
/// Here a shed answer lowers the limit only if its call was admitted
/// after the last decrease (TCP's one reduction per window, RFC 5681),
/// and by half as TCP Reno does: one burst halves the limit, a provider
/// still shedding halves it again a window later.
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
    pub(crate) max_queue: u32,
    pub(crate) max_queue_wait: Duration,
    pub(crate) growth_latency: Option<Duration>,
}

impl AdaptiveLimitConfig {
    /// The defaults: see the table above.
    pub fn standard() -> Self {
        AdaptiveLimitConfig {
            initial: 20,
            min: 1,
            max: 200,
            backoff: 0.5,
            max_queue: 64,
            max_queue_wait: Duration::from_secs(2),
            growth_latency: None,
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

    /// The limit a key starts with.
    pub fn initial(&self) -> u32 {
        self.initial
    }

    /// The lowest limit (at least 1).
    pub fn min(&self) -> u32 {
        self.min
    }

    /// The highest limit.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The factor a shed answer multiplies the limit by.
    pub fn backoff(&self) -> f64 {
        self.backoff
    }

    /// Most calls waiting for room on one key.
    pub fn max_queue(&self) -> u32 {
        self.max_queue
    }

    /// Longest wait for room.
    pub fn max_queue_wait(&self) -> Duration {
        self.max_queue_wait
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
///     .queue(16, Duration::from_millis(500))
///     .build()?;
/// assert_eq!((config.initial(), config.min(), config.max()), (4, 2, 50));
/// assert!(AdaptiveLimitConfig::builder().limits(4, 0, 50).build().is_err());
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

    /// What a shed answer multiplies the limit by, in [0.5, 1) (the range
    /// `AIMDLimit` accepts).
    pub fn backoff(mut self, factor: f64) -> Self {
        self.config.backoff = factor;
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
        if c.growth_latency.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError(
                "adaptive limit: growth_latency must be longer than zero".into(),
            ));
        }
        Ok(c)
    }
}
