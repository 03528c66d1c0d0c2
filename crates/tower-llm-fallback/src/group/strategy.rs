//! [`Strategy`]: how a group picks one of its deployments.

use std::fmt;
use std::str::FromStr;

/// How a group of equivalent deployments picks one per request.
///
/// ```
/// use tower_llm_fallback::Strategy;
///
/// assert_eq!("least_busy".parse::<Strategy>().unwrap(), Strategy::LeastBusy);
/// assert_eq!(Strategy::default().as_str(), "latency");
/// assert!("fastest".parse::<Strategy>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// The power of two choices over a peak-EWMA of latency (time to the
    /// answer; for a stream, to its first content), weighted by the
    /// requests in flight: two deployments drawn at random, the cheaper
    /// one taken. tower's `balance::p2c` over `load::PeakEwma`, itself
    /// Finagle's `P2CPeakEwma`: a deployment that turns slow is left at
    /// once (the peak), and tried again as its estimate decays. A member
    /// whose share of its rate limits left is known
    /// ([`CheckAvailability::headroom`](crate::CheckAvailability::headroom))
    /// costs its latency divided by that share instead, so that members
    /// with different limits are used in proportion to them.
    #[default]
    Latency,
    /// The deployment with the fewest requests in flight (a stream counts
    /// until its body ends); ties broken at random.
    LeastBusy,
    /// At random, in proportion to each deployment's static
    /// [`weight`](crate::Target::weight) (reserved capacity, a cheaper
    /// region first): LiteLLM's `simple-shuffle` with weights.
    Weighted,
}

impl Strategy {
    /// The name used in files and reports: `latency`, `least_busy`,
    /// `weighted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Latency => "latency",
            Strategy::LeastBusy => "least_busy",
            Strategy::Weighted => "weighted",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A strategy name that is not one of `latency`, `least_busy`, `weighted`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownStrategy(pub(crate) String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "strategy `{}` is not one of latency, least_busy, weighted",
            self.0
        )
    }
}

impl std::error::Error for UnknownStrategy {}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "latency" => Ok(Strategy::Latency),
            "least_busy" => Ok(Strategy::LeastBusy),
            "weighted" => Ok(Strategy::Weighted),
            _ => Err(UnknownStrategy(s.to_owned())),
        }
    }
}
