//! What pacing reads and the limits configured for keys that send no
//! rate-limit headers.

use crate::config::ConfigError;

/// Requests and tokens per minute a key may use, for targets that send no
/// rate-limit headers (Ollama, vLLM, a gateway in front of a provider).
///
/// ```
/// use tower_llm_circuit::PaceLimits;
///
/// let limits = PaceLimits::rpm(500).with_tpm(30_000);
/// assert_eq!((limits.rpm, limits.tpm), (Some(500), Some(30_000)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct PaceLimits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute (estimated per request from its body's size and
    /// its `max_tokens`: [`RequestMeta::estimated_tokens`](tower_llm_classify::RequestMeta::estimated_tokens)).
    pub tpm: Option<u64>,
}

impl PaceLimits {
    /// At most `rpm` requests per minute.
    pub fn rpm(rpm: u64) -> Self {
        PaceLimits {
            rpm: Some(rpm),
            tpm: None,
        }
    }

    /// At most `tpm` tokens per minute.
    pub fn tpm(tpm: u64) -> Self {
        PaceLimits {
            rpm: None,
            tpm: Some(tpm),
        }
    }

    /// These limits, and at most `tpm` tokens per minute.
    pub fn with_tpm(mut self, tpm: u64) -> Self {
        self.tpm = Some(tpm);
        self
    }

    /// These limits, and at most `rpm` requests per minute.
    pub fn with_rpm(mut self, rpm: u64) -> Self {
        self.rpm = Some(rpm);
        self
    }

    fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }
}

/// How the circuit paces each key ahead of its rate limits.
///
/// By default it reads the rate-limit headers of every answer and paces a
/// key only once its headers have said how much is left; a key whose
/// answers carry none is never paced. Limits configured here pace keys
/// that send no headers (the headers win once they come).
///
/// A configured key is matched exactly, else by its first segment (the
/// part before the first `/`): with [`KeyBy::TargetModel`](crate::KeyBy)
/// that is the target's name, with the default
/// [`KeyBy::ProviderModel`](crate::KeyBy) the provider's.
///
/// ```
/// use tower_llm_circuit::{CircuitConfig, PaceLimits, PacingConfig};
///
/// let pacing = PacingConfig::default()
///     .limit("local", PaceLimits::rpm(120))
///     .limit("primary/gpt-4o", PaceLimits::rpm(500).with_tpm(30_000));
/// let config = CircuitConfig::builder().pacing(pacing).build().unwrap();
/// # let _ = config;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacingConfig {
    pub(crate) from_headers: bool,
    pub(crate) limits: Vec<(String, PaceLimits)>,
    pub(crate) default_limits: Option<PaceLimits>,
    pub(crate) continuous_refill: bool,
}

impl Default for PacingConfig {
    /// From headers, refilled evenly until their reset, no configured
    /// limits.
    fn default() -> Self {
        PacingConfig {
            from_headers: true,
            limits: Vec::new(),
            default_limits: None,
            continuous_refill: true,
        }
    }
}

impl PacingConfig {
    /// No pacing at all: headers are not read and nothing is limited.
    pub fn off() -> Self {
        PacingConfig {
            from_headers: false,
            limits: Vec::new(),
            default_limits: None,
            continuous_refill: false,
        }
    }

    /// Whether answers' rate-limit headers pace their keys (on by default).
    pub fn from_headers(mut self, on: bool) -> Self {
        self.from_headers = on;
        self
    }

    /// Whether what a key's headers say is left refills at an even pace
    /// until their reset, as a token bucket does, when they give the
    /// bucket's limit (on by default; off, what is left is held until the
    /// reset). Anthropic documents token buckets ("continuously
    /// replenished", docs.claude.com/en/api/rate-limits) and OpenAI's
    /// reset is the time until the bucket is full: on, a key that ran
    /// out is called again as soon as its bucket has room for one, not
    /// when it is full. Held until the reset, a busy key waited about a
    /// minute each time it ran out: in the chaos suite's `deployments`
    /// scenario the paced group's p99 was 93.6 s with 42 % of requests
    /// waiting a second or more, against 16.5 s and 7 % with the refill
    /// (429s 0 against 11 of 2,711 calls, 0.4 %, from the simulator's
    /// sliding window, which frees a slot only as an old call leaves).
    /// Against a provider counting a sliding window, turn it off.
    pub fn continuous_refill(mut self, on: bool) -> Self {
        self.continuous_refill = on;
        self
    }

    /// Limits for `key` (a whole key, or its first segment).
    pub fn limit(mut self, key: impl Into<String>, limits: PaceLimits) -> Self {
        let key = key.into();
        self.limits.retain(|(k, _)| *k != key);
        self.limits.push((key, limits));
        self
    }

    /// Limits for every key not configured by name.
    pub fn default_limit(mut self, limits: PaceLimits) -> Self {
        self.default_limits = Some(limits);
        self
    }

    /// The limits configured for `key`: its own, else its first
    /// segment's, else the default.
    pub fn limits_for(&self, key: &str) -> Option<PaceLimits> {
        if self.limits.is_empty() {
            return self.default_limits;
        }
        let first = key.split('/').next().unwrap_or(key);
        self.limits
            .iter()
            .find(|(k, _)| k == key)
            .or_else(|| self.limits.iter().find(|(k, _)| k == first))
            .map(|(_, l)| *l)
            .or(self.default_limits)
    }

    /// Whether `key` itself is configured (not through its first segment
    /// or the default).
    pub(crate) fn names(&self, key: &str) -> bool {
        self.limits.iter().any(|(k, _)| k == key)
    }

    /// Whether some key has configured limits.
    pub(crate) fn has_limits(&self) -> bool {
        self.default_limits.is_some() || !self.limits.is_empty()
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let all = self
            .limits
            .iter()
            .map(|(k, l)| (k.as_str(), l))
            .chain(self.default_limits.iter().map(|l| ("default", l)));
        for (key, limits) in all {
            if limits.is_empty() || limits.rpm == Some(0) || limits.tpm == Some(0) {
                return Err(ConfigError(format!(
                    "pacing limits of `{key}`: set rpm or tpm, each at least 1"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_matched_whole_then_by_its_first_segment_then_by_default() {
        let config = PacingConfig::default()
            .limit("primary", PaceLimits::rpm(10))
            .limit("primary/gpt-4o", PaceLimits::rpm(20))
            .default_limit(PaceLimits::rpm(30));
        assert_eq!(
            config.limits_for("primary/gpt-4o"),
            Some(PaceLimits::rpm(20))
        );
        assert_eq!(config.limits_for("primary/o1"), Some(PaceLimits::rpm(10)));
        assert_eq!(config.limits_for("other/o1"), Some(PaceLimits::rpm(30)));
        assert_eq!(PacingConfig::default().limits_for("a/b"), None);
    }

    #[test]
    fn zero_or_empty_limits_are_refused() {
        for limits in [
            PaceLimits::default(),
            PaceLimits::rpm(0),
            PaceLimits::tpm(0),
        ] {
            assert!(PacingConfig::default().limit("a", limits).check().is_err());
        }
        assert!(
            PacingConfig::default()
                .limit("a", PaceLimits::rpm(1))
                .check()
                .is_ok()
        );
    }
}
