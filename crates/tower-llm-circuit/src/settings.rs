//! Configuration as data: from a file (with the `serde` feature) and from
//! environment variables — in the same style as the retry crate's
//! `RetrySettings` (data) beside `RetryPolicy` (checked): here
//! `CircuitSettings` beside `CircuitConfig`.

use std::time::Duration;

use crate::config::{CircuitConfig, CircuitConfigBuilder, ConfigError};
use crate::window::WindowKind;

/// A circuit configuration as plain data: a preset and the settings that
/// override it. Every field is optional.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use tower_llm_circuit::CircuitSettings;
///
/// let settings: CircuitSettings = serde_json::from_str(
///     r#"{"preset": "fast_trip", "failure_rate": 40, "open_ms": 20000}"#,
/// ).unwrap();
/// let config = settings.build().unwrap();
/// # let _ = config;
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct CircuitSettings {
    /// `standard` (the default), `fast_trip` or `lenient`.
    pub preset: Option<String>,
    /// A count window of this many calls.
    pub window_calls: Option<u32>,
    /// A time window of this many seconds (instead of `window_calls`).
    pub window_seconds: Option<u32>,
    /// Calls before the rates can open the circuit.
    pub minimum_calls: Option<u32>,
    /// Failure rate (percent) that opens it.
    pub failure_rate: Option<f64>,
    /// Calls slower than this (ms) are slow.
    pub slow_call_ms: Option<u64>,
    /// Slow-call rate (percent) that opens it.
    pub slow_call_rate: Option<f64>,
    /// Consecutive failures that open it (0 turns the rule off).
    pub consecutive_failures: Option<u32>,
    /// The first open duration (ms).
    pub open_ms: Option<u64>,
    /// Growth of the open duration per re-open.
    pub open_multiplier: Option<f64>,
    /// The longest open duration (ms).
    pub max_open_ms: Option<u64>,
    /// Probes in half-open.
    pub half_open_probes: Option<u32>,
    /// Cooldown after quota exhausted (ms).
    pub quota_cooldown_ms: Option<u64>,
    /// Whether a hinted rate limit cools the key down.
    pub rate_limit_cooldown: Option<bool>,
    /// Whether an overloaded answer counts as a failure of the target.
    pub count_overload: Option<bool>,
    /// Whether a failure after the answer's content had started (a stream
    /// cut or stalled midway) counts as a failure of the target.
    pub count_after_content: Option<bool>,
    /// Most keys held.
    pub max_keys: Option<usize>,
    /// Spread of each open duration (0.2: ±20 %).
    pub open_jitter: Option<f64>,
    /// How long half-open waits for its probes (ms).
    pub half_open_deadline_ms: Option<u64>,
    /// A first event later than this (ms) makes a call slow.
    pub slow_first_content_ms: Option<u64>,
    /// Whether 401s count as failures.
    pub count_authentication_failures: Option<bool>,
    /// A key idle this long (ms) may be evicted.
    pub idle_eviction_ms: Option<u64>,
    /// Seed of the open-duration jitter.
    pub seed: Option<u64>,
    /// The adaptive limit a key starts with (calls in flight).
    pub limit_initial: Option<u32>,
    /// The lowest adaptive limit (at least 1).
    pub limit_min: Option<u32>,
    /// The highest adaptive limit.
    pub limit_max: Option<u32>,
    /// What a decrease multiplies the limit by, in [0.5, 1).
    pub limit_backoff: Option<f64>,
    /// Shed answers (percent of a window's answers) that lower the limit,
    /// in (0, 100]; a percent, as `failure_rate`.
    pub limit_shed_rate: Option<f64>,
    /// Most calls waiting for room on one key (0: never wait).
    pub limit_queue: Option<u32>,
    /// Longest wait for room (ms).
    pub limit_queue_wait_ms: Option<u64>,
    /// A response head slower than this (ms) does not raise the limit.
    pub limit_growth_latency_ms: Option<u64>,
    /// Whether the adaptive limit is off until a window's shed answers
    /// first reach `limit_shed_rate` (`false`: on from the start at
    /// `limit_initial`).
    pub limit_off_until_shed: Option<bool>,
    /// How long (ms) a limit that is on stays on without a window that
    /// lowered it.
    pub limit_quiet_ms: Option<u64>,
    /// Whether answers' rate-limit headers pace their keys (on unless set
    /// `false`).
    pub pacing: Option<bool>,
    /// Whether what a key's headers say is left refills at an even pace
    /// until their reset, as the providers' token buckets do (off unless
    /// set: see [`PacingConfig::continuous_refill`](crate::PacingConfig::continuous_refill)).
    pub pacing_continuous_refill: Option<bool>,
    /// Requests per minute of every key not named in `pace_limits`, for
    /// targets that send no rate-limit headers.
    pub rpm: Option<u64>,
    /// Tokens per minute of every key not named in `pace_limits`.
    pub tpm: Option<u64>,
    /// Requests and tokens per minute by key, or by a key's first segment
    /// (a target's name with target/model keys): `{"local": {"rpm": 60}}`.
    pub pace_limits: std::collections::BTreeMap<String, crate::PaceLimits>,
}

/// The environment variables [`CircuitSettings::from_env`] reads.
pub const ENV_VARS: [&str; 6] = [
    "TOWER_LLM_CIRCUIT_WINDOW_CALLS",
    "TOWER_LLM_CIRCUIT_MINIMUM_CALLS",
    "TOWER_LLM_CIRCUIT_FAILURE_RATE",
    "TOWER_LLM_CIRCUIT_CONSECUTIVE_FAILURES",
    "TOWER_LLM_CIRCUIT_OPEN_MS",
    "TOWER_LLM_CIRCUIT_HALF_OPEN_PROBES",
];

impl CircuitSettings {
    /// Overrides from the process environment (see [`ENV_VARS`]).
    pub fn from_env(self) -> Result<Self, ConfigError> {
        self.from_env_with(|name| std::env::var(name).ok())
    }

    /// Overrides from `lookup` (the environment, or a map in tests).
    pub fn from_env_with(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        fn parse<T: std::str::FromStr>(
            name: &str,
            lookup: &impl Fn(&str) -> Option<String>,
        ) -> Result<Option<T>, ConfigError> {
            tower_llm_classify::env::parse_var(name, lookup).map_err(ConfigError)
        }
        self.window_calls = parse(ENV_VARS[0], &lookup)?.or(self.window_calls);
        self.minimum_calls = parse(ENV_VARS[1], &lookup)?.or(self.minimum_calls);
        self.failure_rate = parse(ENV_VARS[2], &lookup)?.or(self.failure_rate);
        self.consecutive_failures = parse(ENV_VARS[3], &lookup)?.or(self.consecutive_failures);
        self.open_ms = parse(ENV_VARS[4], &lookup)?.or(self.open_ms);
        self.half_open_probes = parse(ENV_VARS[5], &lookup)?.or(self.half_open_probes);
        Ok(self)
    }

    /// The builder this describes: the preset, then each setting given.
    pub fn builder(&self) -> Result<CircuitConfigBuilder, ConfigError> {
        let preset = match self.preset.as_deref().unwrap_or("standard") {
            "standard" => CircuitConfig::standard(),
            "fast_trip" => CircuitConfig::fast_trip(),
            "lenient" => CircuitConfig::lenient(),
            other => {
                return Err(ConfigError(format!(
                    "preset: `{other}` is not one of standard, fast_trip, lenient"
                )));
            }
        };
        let base = preset.clone();
        let mut b = preset.to_builder();
        match (self.window_calls, self.window_seconds) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "window_calls and window_seconds: set one, not both".into(),
                ));
            }
            (Some(n), None) => b = b.window(WindowKind::Count(n)),
            (None, Some(n)) => b = b.window(WindowKind::Time(n)),
            (None, None) => {}
        }
        if let Some(n) = self.minimum_calls {
            b = b.minimum_calls(n);
        }
        if let Some(rate) = self.failure_rate {
            b = b.failure_rate(rate);
        }
        match (self.slow_call_ms, base.slow_call_duration) {
            (Some(ms), _) => {
                b = b.slow_calls(
                    Duration::from_millis(ms),
                    self.slow_call_rate.unwrap_or(base.slow_call_rate),
                );
            }
            // The preset's slow calls, at the rate given.
            (None, Some(duration)) => {
                if let Some(rate) = self.slow_call_rate {
                    b = b.slow_calls(duration, rate);
                }
            }
            // A rate of slow calls without saying what is slow would be
            // ignored: refused instead.
            (None, None) if self.slow_call_rate.is_some() => {
                return Err(ConfigError(
                    "[circuit] slow_call_rate needs slow_call_ms (what counts as slow)".into(),
                ));
            }
            (None, None) => {}
        }
        if let Some(n) = self.consecutive_failures {
            b = b.consecutive_failures((n > 0).then_some(n));
        }
        if self.open_ms.is_some() || self.open_multiplier.is_some() || self.max_open_ms.is_some() {
            b = b.open_duration(
                self.open_ms
                    .map_or(base.open_duration, Duration::from_millis),
                self.open_multiplier.unwrap_or(base.open_multiplier),
                self.max_open_ms
                    .map_or(base.max_open_duration, Duration::from_millis),
            );
        }
        if let Some(n) = self.half_open_probes {
            b = b.half_open_probes(n);
        }
        if let Some(ms) = self.quota_cooldown_ms {
            b = b.quota_cooldown(Duration::from_millis(ms));
        }
        if let Some(on) = self.rate_limit_cooldown {
            b = b.rate_limit_cooldown(on);
        }
        if let Some(on) = self.count_overload {
            b = b.count_overload(on);
        }
        if let Some(on) = self.count_after_content {
            b = b.count_after_content(on);
        }
        if let Some(n) = self.max_keys {
            b = b.max_keys(n);
        }
        if let Some(jitter) = self.open_jitter {
            b = b.open_jitter(jitter);
        }
        if let Some(ms) = self.half_open_deadline_ms {
            b = b.half_open_deadline(Duration::from_millis(ms));
        }
        if let Some(ms) = self.slow_first_content_ms {
            b = b.slow_first_content(Duration::from_millis(ms));
        }
        if let Some(on) = self.count_authentication_failures {
            b = b.count_authentication_failures(on);
        }
        if let Some(ms) = self.idle_eviction_ms {
            b = b.idle_eviction(Duration::from_millis(ms));
        }
        if let Some(seed) = self.seed {
            b = b.seed(seed);
        }
        if self.limit_initial.is_some()
            || self.limit_min.is_some()
            || self.limit_max.is_some()
            || self.limit_backoff.is_some()
            || self.limit_shed_rate.is_some()
            || self.limit_queue.is_some()
            || self.limit_queue_wait_ms.is_some()
            || self.limit_growth_latency_ms.is_some()
            || self.limit_off_until_shed.is_some()
            || self.limit_quiet_ms.is_some()
        {
            let base = &base.adaptive_limit;
            let mut limit = base.to_builder().limits(
                self.limit_initial.unwrap_or(base.initial),
                self.limit_min.unwrap_or(base.min),
                self.limit_max.unwrap_or(base.max),
            );
            if let Some(factor) = self.limit_backoff {
                limit = limit.backoff(factor);
            }
            if let Some(percent) = self.limit_shed_rate {
                limit = limit.shed_rate(percent);
            }
            if self.limit_queue.is_some() || self.limit_queue_wait_ms.is_some() {
                limit = limit.queue(
                    self.limit_queue.unwrap_or(base.max_queue),
                    self.limit_queue_wait_ms
                        .map_or(base.max_queue_wait, Duration::from_millis),
                );
            }
            if let Some(ms) = self.limit_growth_latency_ms {
                limit = limit.growth_latency(Some(Duration::from_millis(ms)));
            }
            if let Some(on) = self.limit_off_until_shed {
                limit = limit.off_until_shed(on);
            }
            if let Some(ms) = self.limit_quiet_ms {
                limit = limit.quiet_period(Duration::from_millis(ms));
            }
            b = b.adaptive_limit(limit.build()?);
        }
        if self.pacing.is_some()
            || self.pacing_continuous_refill.is_some()
            || self.rpm.is_some()
            || self.tpm.is_some()
            || !self.pace_limits.is_empty()
        {
            let mut pacing = base
                .pacing
                .clone()
                .from_headers(self.pacing.unwrap_or(true));
            if let Some(on) = self.pacing_continuous_refill {
                pacing = pacing.continuous_refill(on);
            }
            if self.rpm.is_some() || self.tpm.is_some() {
                pacing = pacing.default_limit(crate::PaceLimits {
                    rpm: self.rpm,
                    tpm: self.tpm,
                });
            }
            for (key, limits) in &self.pace_limits {
                pacing = pacing.limit(key.clone(), *limits);
            }
            b = b.pacing(pacing);
        }
        Ok(b)
    }

    /// The configuration this describes, checked.
    pub fn build(&self) -> Result<CircuitConfig, ConfigError> {
        self.builder()?.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_variables_override_the_preset() {
        let settings = CircuitSettings::default()
            .from_env_with(env(&[
                ("TOWER_LLM_CIRCUIT_WINDOW_CALLS", "30"),
                ("TOWER_LLM_CIRCUIT_MINIMUM_CALLS", "7"),
                ("TOWER_LLM_CIRCUIT_FAILURE_RATE", "35.5"),
                ("TOWER_LLM_CIRCUIT_CONSECUTIVE_FAILURES", "0"),
                ("TOWER_LLM_CIRCUIT_OPEN_MS", "2500"),
                ("TOWER_LLM_CIRCUIT_HALF_OPEN_PROBES", "4"),
            ]))
            .unwrap();
        let config = settings.build().unwrap();
        assert_eq!(config.window(), WindowKind::Count(30));
        assert_eq!(config.minimum_calls, 7);
        assert_eq!(config.failure_rate, 35.5);
        assert_eq!(config.consecutive_failures, None);
        assert_eq!(config.open_duration, Duration::from_millis(2500));
        assert_eq!(config.half_open_probes(), 4);
    }

    #[test]
    fn a_slow_call_rate_without_what_is_slow_is_refused_not_ignored() {
        let settings = CircuitSettings {
            slow_call_rate: Some(40.0),
            ..Default::default()
        };
        let error = settings.build().unwrap_err();
        assert!(error.to_string().contains("slow_call_ms"), "{error}");
        let both = CircuitSettings {
            slow_call_rate: Some(40.0),
            slow_call_ms: Some(30_000),
            ..Default::default()
        };
        assert!(both.build().is_ok());
    }

    #[test]
    fn bad_values_name_their_source() {
        let error = CircuitSettings::default()
            .from_env_with(env(&[("TOWER_LLM_CIRCUIT_OPEN_MS", "soon")]))
            .unwrap_err();
        assert!(
            error.to_string().contains("TOWER_LLM_CIRCUIT_OPEN_MS"),
            "{error}"
        );
        let error = CircuitSettings {
            preset: Some("yolo".into()),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("preset"), "{error}");
        let error = CircuitSettings {
            window_calls: Some(5),
            window_seconds: Some(5),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("not both"), "{error}");
        let error = CircuitSettings {
            failure_rate: Some(150.0),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("failure_rate"), "{error}");
    }

    #[test]
    fn adaptive_limit_settings_override_the_standard_limit_and_bad_ones_are_refused() {
        let config = CircuitSettings {
            limit_initial: Some(8),
            limit_queue_wait_ms: Some(500),
            limit_shed_rate: Some(40.0),
            limit_off_until_shed: Some(false),
            limit_quiet_ms: Some(30_000),
            ..Default::default()
        }
        .build()
        .unwrap();
        let limit = config.adaptive_limit();
        assert!(!limit.off_until_shed());
        assert_eq!(limit.quiet_period(), Duration::from_secs(30));
        assert_eq!((limit.initial(), limit.min(), limit.max()), (8, 1, 200));
        assert_eq!(limit.shed_rate(), 40.0);
        assert_eq!(
            (limit.max_queue(), limit.max_queue_wait()),
            (64, Duration::from_millis(500))
        );
        let error = CircuitSettings {
            limit_min: Some(0),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("min"), "{error}");
        let error = CircuitSettings {
            limit_backoff: Some(0.2),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("backoff"), "{error}");
        let error = CircuitSettings {
            limit_shed_rate: Some(0.0),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("shed_rate"), "{error}");
    }

    #[test]
    fn pacing_settings_configure_limits_by_key_and_bad_ones_are_refused() {
        let mut settings = CircuitSettings {
            rpm: Some(60),
            ..CircuitSettings::default()
        };
        settings
            .pace_limits
            .insert("local".into(), crate::PaceLimits::rpm(10).with_tpm(1000));
        let config = settings.build().unwrap();
        let pacing = config.pacing();
        assert_eq!(
            pacing.limits_for("local/llama3"),
            Some(crate::PaceLimits::rpm(10).with_tpm(1000))
        );
        assert_eq!(
            pacing.limits_for("openai/gpt-4o"),
            Some(crate::PaceLimits::rpm(60))
        );
        assert!(pacing.from_headers);
        let off = CircuitSettings {
            pacing: Some(false),
            ..CircuitSettings::default()
        };
        assert!(!off.build().unwrap().pacing().from_headers);
        let zero = CircuitSettings {
            tpm: Some(0),
            ..CircuitSettings::default()
        };
        assert!(zero.build().unwrap_err().to_string().contains("pacing"));
    }

    #[test]
    fn count_after_content_overrides_the_preset() {
        assert!(
            CircuitSettings::default()
                .build()
                .unwrap()
                .count_after_content()
        );
        let config = CircuitSettings {
            count_after_content: Some(false),
            ..Default::default()
        }
        .build()
        .unwrap();
        assert!(!config.count_after_content());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_settings_file_with_an_unknown_key_is_refused_by_name() {
        let error = serde_json::from_str::<CircuitSettings>(r#"{"failure_rat": 40}"#).unwrap_err();
        assert!(error.to_string().contains("failure_rat"), "{error}");
        let settings: CircuitSettings =
            serde_json::from_str(r#"{"preset":"lenient","window_seconds":30}"#).unwrap();
        assert_eq!(settings.build().unwrap().window(), WindowKind::Time(30));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn pacing_limits_are_read_from_a_settings_file_by_target() {
        let settings: CircuitSettings = serde_json::from_str(
            r#"{"tpm": 90000, "pacing_continuous_refill": true, "pace_limits": {"local": {"rpm": 10, "tpm": 1000}}}"#,
        )
        .unwrap();
        let config = settings.build().unwrap();
        assert!(config.pacing().continuous_refill);
        assert_eq!(
            config.pacing().limits_for("local/llama3"),
            Some(crate::PaceLimits::rpm(10).with_tpm(1000))
        );
        assert_eq!(
            config.pacing().limits_for("primary/gpt-4o"),
            Some(crate::PaceLimits::tpm(90_000))
        );
        let error =
            serde_json::from_str::<CircuitSettings>(r#"{"pace_limits": {"local": {"rpn": 10}}}"#)
                .unwrap_err();
        assert!(error.to_string().contains("rpn"), "{error}");
    }
}
