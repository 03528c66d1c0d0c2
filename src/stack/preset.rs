//! The named starting points of a stack.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tower_llm_circuit::CircuitConfig;
use tower_llm_retry::RetryPolicy;

/// A preset: a retry policy and a breaker configuration that belong
/// together.
///
/// | preset | retry | circuit |
/// |---|---|---|
/// | `sdk_default` | 3 attempts, 0.5 s doubling to 8 s, full jitter (the official SDKs' pacing), 20 % budget | `standard`: 50 % failures over the last 50 calls (20 at least) or 10 in a row, 10 s open |
/// | `high_availability` | more attempts within a deadline, shorter waits | `fast_trip`: trips early so the fallback takes over |
/// | `cost_sensitive` | one retry: every attempt is billed | `standard` |
/// | `development` | fail fast and visibly | `lenient` |
///
/// The exact figures are in [`RetryPolicy`]'s and [`CircuitConfig`]'s
/// preset docs.
///
/// ```
/// use tower_llm::stack::Preset;
///
/// let preset: Preset = "high_availability".parse().unwrap();
/// assert_eq!(preset, Preset::HighAvailability);
/// assert_eq!(preset.circuit_preset(), "fast_trip");
/// assert!("fastest".parse::<Preset>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// The official SDKs' retry pacing, the standard breaker.
    #[default]
    SdkDefault,
    /// For a gateway that must answer: retries within a deadline and a
    /// breaker that trips early so the fallback takes over.
    HighAvailability,
    /// When every attempt is billed: one retry, the standard breaker.
    CostSensitive,
    /// For local work: fail fast and visibly, a lenient breaker.
    Development,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 4] = [
        Preset::SdkDefault,
        Preset::HighAvailability,
        Preset::CostSensitive,
        Preset::Development,
    ];

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::SdkDefault => "sdk_default",
            Preset::HighAvailability => "high_availability",
            Preset::CostSensitive => "cost_sensitive",
            Preset::Development => "development",
        }
    }

    /// The retry policy of this preset. In a stack the breaker, not the
    /// budget, is what stops an outage from multiplying load (measured:
    /// `cargo bench --bench chaos -- outage retry_storm`), so
    /// `sdk_default` gets the 20 % budget of tower's `TpsBudget`, Finagle
    /// and Envoy instead of the retry crate's standalone 10 %: at 10 %, a
    /// provider failing 22 % of calls at random left 13 % of requests
    /// failed for want of budget (chaos `transient`).
    pub fn retry(self) -> RetryPolicy {
        match self {
            Preset::SdkDefault => RetryPolicy::sdk_default()
                .to_builder()
                .budget(Duration::from_secs(10), 1, 0.2)
                .build()
                .unwrap_or_else(|_| RetryPolicy::sdk_default()),
            Preset::HighAvailability => RetryPolicy::high_availability(),
            Preset::CostSensitive => RetryPolicy::cost_sensitive(),
            Preset::Development => RetryPolicy::development(),
        }
    }

    /// The name of the circuit preset this preset uses.
    pub fn circuit_preset(self) -> &'static str {
        match self {
            Preset::SdkDefault | Preset::CostSensitive => "standard",
            Preset::HighAvailability => "fast_trip",
            Preset::Development => "lenient",
        }
    }

    /// The breaker configuration of this preset.
    pub fn circuit(self) -> CircuitConfig {
        match self {
            Preset::SdkDefault | Preset::CostSensitive => CircuitConfig::standard(),
            Preset::HighAvailability => CircuitConfig::fast_trip(),
            Preset::Development => CircuitConfig::lenient(),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A preset name that is not one of [`Preset::ALL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPreset(pub String);

impl fmt::Display for UnknownPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not one of sdk_default, high_availability, cost_sensitive, development",
            self.0
        )
    }
}

impl std::error::Error for UnknownPreset {}

impl FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(name: &str) -> Result<Self, UnknownPreset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == name.trim())
            .ok_or_else(|| UnknownPreset(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_round_trips_through_its_name() {
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>(), Ok(preset));
            assert_eq!(preset.to_string(), preset.as_str());
        }
    }

    #[test]
    fn presets_differ_where_they_say_they_do() {
        assert!(
            Preset::CostSensitive.retry().max_attempts()
                < Preset::SdkDefault.retry().max_attempts()
        );
        assert_eq!(Preset::SdkDefault.retry().max_attempts(), 3);
    }
}
