//! How long something takes: a fixed time or a seeded distribution.

use std::fmt;
use std::time::Duration;

/// A duration that may vary from request to request: fixed, uniform, or
/// long-tailed (log-normal).
///
/// Every draw is a pure function of the simulator's seed and the request's
/// index, so a run with the same seed sees the same latencies.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_testkit::Delay;
///
/// let fixed = Delay::fixed(Duration::from_millis(20));
/// let spread = Delay::uniform(Duration::from_millis(10), Duration::from_millis(30));
/// // p99 ten times the median, as a slow upstream has.
/// let tail = Delay::long_tail(Duration::from_millis(50), Duration::from_millis(500));
/// assert_eq!(fixed.sample(7), Duration::from_millis(20));
/// assert!(spread.sample(7) >= Duration::from_millis(10));
/// assert!(tail.sample(7) > Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delay(Shape);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Fixed(Duration),
    Uniform(Duration, Duration),
    LogNormal {
        median: Duration,
        p99: Duration,
        sigma: f64,
    },
}

/// The parameters of a [`Delay`], for printing it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Parts {
    Fixed(Duration),
    Uniform(Duration, Duration),
    LongTail(Duration, Duration),
}

/// The 99th percentile of the standard normal distribution.
const Z_99: f64 = 2.326_347_874;

/// Log-normal draws are clipped here so a freak draw cannot stall a test.
const TAIL_CLIP: f64 = 20.0;

impl Delay {
    /// No delay at all.
    pub const ZERO: Delay = Delay(Shape::Fixed(Duration::ZERO));

    /// Always `duration`.
    pub const fn fixed(duration: Duration) -> Self {
        Delay(Shape::Fixed(duration))
    }

    /// Uniform between `min` and `max` (swapped if given the wrong way round).
    pub fn uniform(min: Duration, max: Duration) -> Self {
        if min <= max {
            Delay(Shape::Uniform(min, max))
        } else {
            Delay(Shape::Uniform(max, min))
        }
    }

    /// Log-normal with the given median and 99th percentile: a service whose
    /// slow calls are much slower than its typical ones. Draws are clipped at
    /// 20 × the median. A `p99` below the median is taken as the median.
    pub fn long_tail(median: Duration, p99: Duration) -> Self {
        let ratio = p99.as_secs_f64() / median.as_secs_f64().max(f64::MIN_POSITIVE);
        let sigma = if ratio > 1.0 { ratio.ln() / Z_99 } else { 0.0 };
        Delay(Shape::LogNormal {
            median,
            p99: p99.max(median),
            sigma,
        })
    }

    pub(crate) fn parts(&self) -> Parts {
        match self.0 {
            Shape::Fixed(d) => Parts::Fixed(d),
            Shape::Uniform(min, max) => Parts::Uniform(min, max),
            Shape::LogNormal { median, p99, .. } => Parts::LongTail(median, p99),
        }
    }

    /// Whether every draw is zero.
    pub fn is_zero(&self) -> bool {
        match self.0 {
            Shape::Fixed(d) => d.is_zero(),
            Shape::Uniform(_, max) => max.is_zero(),
            Shape::LogNormal { median, .. } => median.is_zero(),
        }
    }

    /// The draw for `key` (any 64-bit value: the simulator passes a hash of
    /// its seed and the request index).
    pub fn sample(&self, key: u64) -> Duration {
        match self.0 {
            Shape::Fixed(d) => d,
            Shape::Uniform(min, max) => {
                let span = (max - min).as_secs_f64();
                min.saturating_add(
                    Duration::try_from_secs_f64(span * unit(key)).unwrap_or(max - min),
                )
            }
            Shape::LogNormal { median, sigma, .. } => {
                let z = standard_normal(key);
                let factor = (sigma * z).exp().min(TAIL_CLIP);
                Duration::try_from_secs_f64(median.as_secs_f64() * factor).unwrap_or(Duration::MAX)
            }
        }
    }
}

impl Default for Delay {
    fn default() -> Self {
        Delay::ZERO
    }
}

impl From<Duration> for Delay {
    fn from(duration: Duration) -> Self {
        Delay::fixed(duration)
    }
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Shape::Fixed(d) => write!(f, "{d:?}"),
            Shape::Uniform(min, max) => write!(f, "{min:?}..{max:?}"),
            Shape::LogNormal { median, p99, .. } => write!(f, "median {median:?}, p99 {p99:?}"),
        }
    }
}

/// SplitMix64: a stateless, well-mixed hash of a 64-bit key
/// (Steele, Lea and Flood, "Fast splittable pseudorandom number generators").
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key for draw `purpose` of request `index` under `seed`.
pub(crate) fn key(seed: u64, index: u64, purpose: u64) -> u64 {
    mix(mix(seed ^ mix(index)) ^ purpose)
}

/// A uniform draw in `[0, 1)` from `key`.
pub(crate) fn unit(key: u64) -> f64 {
    // The top 53 bits fill an f64 mantissa exactly.
    (mix(key) >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw from `key` (Box–Muller).
fn standard_normal(key: u64) -> f64 {
    let u1 = 1.0 - unit(key); // (0, 1]: ln is finite
    let u2 = unit(key ^ 0xD1B5_4A32_D192_ED03);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_draws_stay_inside_their_bounds() {
        let d = Delay::uniform(Duration::from_millis(30), Duration::from_millis(10));
        for k in 0..10_000 {
            let s = d.sample(k);
            assert!(s >= Duration::from_millis(10) && s <= Duration::from_millis(30));
        }
    }

    #[test]
    fn long_tail_hits_its_median_and_p99() {
        let d = Delay::long_tail(Duration::from_millis(100), Duration::from_millis(1000));
        let mut draws: Vec<Duration> = (0..100_000).map(|k| d.sample(key(1, k, 0))).collect();
        draws.sort();
        let median = draws[50_000].as_secs_f64();
        let p99 = draws[99_000].as_secs_f64();
        assert!((median - 0.1).abs() < 0.005, "median {median}");
        assert!((p99 - 1.0).abs() < 0.08, "p99 {p99}");
        assert!(draws[99_999] <= Duration::from_secs(2));
    }

    #[test]
    fn draws_are_a_function_of_the_key() {
        let d = Delay::uniform(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(d.sample(42), d.sample(42));
        assert_ne!(d.sample(42), d.sample(43));
    }

    #[test]
    fn unit_draws_are_roughly_uniform() {
        let mut buckets = [0u32; 10];
        for k in 0..100_000 {
            buckets[(unit(k) * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((9_500..10_500).contains(&b), "{buckets:?}");
        }
    }
}
