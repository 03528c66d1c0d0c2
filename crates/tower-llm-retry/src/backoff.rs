//! How long to wait before the next attempt when the server gave no hint.
//!
//! The strategies are those of Marc Brooker's "Exponential Backoff And
//! Jitter" (AWS Architecture Blog, 2015,
//! <https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>),
//! whose simulation found full jitter the best trade between total work and
//! completion time under contention; it is the default.
//!
//! # Numbering
//!
//! Retry `n` waits up to `min(cap, base·multiplier^n)` with `n = 0` for the
//! first retry, so `base` is the longest first wait. That is how the SDKs
//! count: openai-python and anthropic-python wait
//! `min(0.5 s · 2^nb_retries, 8 s)` with `nb_retries = 0` before the first
//! retry (`_calculate_retry_timeout` in `_base_client.py`), the AWS SDKs'
//! standard mode `rand · min(2^(attempt − 1), 20 s)` after attempt 1
//! (botocore `retries/standard.py`, `ExponentialBackoff`), and gRPC starts
//! at `initial_backoff`. The blog's simulator
//! (aws-samples/aws-arch-backoff-simulator) counts the first retry as
//! `n = 1`, so its first full-jitter wait is `U(0, 2·base)`: its schedule
//! with base `b` is this one with base `2b`, delay for delay (decorrelated
//! jitter, which starts from `base` whatever the count, excepted). Its
//! optimistic-concurrency simulation at 100 clients, base 5 ms, cap 2 s, is
//! `Backoff::exponential(10 ms, 2 s)` here: 795 calls in 4.92 s against the
//! blog's 794 in 4.95 s (`cargo bench -p tower-llm-bench --bench chaos -- aws_backoff`).

use std::time::Duration;

/// How a computed delay is spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Jitter {
    /// `U[0, t]` where `t = min(cap, base·multiplier^n)` (AWS "full jitter").
    #[default]
    Full,
    /// `t/2 + U[0, t/2]` (AWS "equal jitter").
    Equal,
    /// `min(cap, U[base, 3·previous])` (AWS "decorrelated jitter").
    Decorrelated,
    /// Exactly `t`: no spread (a fleet retries in lockstep; for tests).
    None,
}

/// An exponential schedule with jitter.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_retry::{Backoff, Jitter};
///
/// // The official SDKs' pacing: 0.5 s doubling up to 8 s.
/// let backoff = Backoff::exponential(Duration::from_millis(500), Duration::from_secs(8));
/// assert_eq!(backoff.jitter(), Jitter::Full);
/// // Retry n = 3 waits somewhere in [0, 4 s].
/// assert!(backoff.delay(3, Duration::ZERO, 0.999) <= Duration::from_secs(4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    base: Duration,
    multiplier: f64,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// 0.5 s doubling to 8 s with full jitter: the official SDKs' schedule
    /// (`INITIAL_RETRY_DELAY`, `MAX_RETRY_DELAY` in openai-python's and
    /// anthropic-python's `_constants.py`), with AWS full jitter.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(500), Duration::from_secs(8))
    }
}

impl Backoff {
    /// `base` doubling up to `cap`, with full jitter.
    pub fn exponential(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            multiplier: 2.0,
            cap,
            jitter: Jitter::Full,
        }
    }

    /// Always `delay`, no jitter.
    pub fn constant(delay: Duration) -> Self {
        Backoff {
            base: delay,
            multiplier: 1.0,
            cap: delay,
            jitter: Jitter::None,
        }
    }

    /// Uses `jitter` instead.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Multiplies by `multiplier` per retry instead of 2.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The first delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The growth factor.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The largest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Checks the numbers: a finite multiplier of at least 1 and a base no
    /// larger than the cap.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(format!(
                "backoff multiplier must be a finite number >= 1, not {}",
                self.multiplier
            ));
        }
        if self.base > self.cap {
            return Err(format!(
                "backoff base ({:?}) is larger than its cap ({:?})",
                self.base, self.cap
            ));
        }
        Ok(())
    }

    /// The delay before retry `n` (0 for the first retry), given the
    /// previous delay (for decorrelated jitter) and a uniform draw `u` in
    /// `[0, 1)`.
    pub fn delay(&self, n: u32, previous: Duration, u: f64) -> Duration {
        let u = if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let cap = self.cap.as_secs_f64();
        // min(cap, base·m^n), computed without overflow.
        let grown = self.base.as_secs_f64() * self.multiplier.powi(n.min(1024) as i32);
        let ceiling = if grown.is_finite() {
            grown.min(cap)
        } else {
            cap
        };
        let secs = match self.jitter {
            Jitter::Full => ceiling * u,
            Jitter::Equal => ceiling / 2.0 + ceiling / 2.0 * u,
            Jitter::None => ceiling,
            Jitter::Decorrelated => {
                let base = self.base.as_secs_f64();
                let top = (previous.as_secs_f64().max(base) * 3.0).min(cap.max(base));
                (base + (top - base) * u).min(cap)
            }
        };
        Duration::try_from_secs_f64(secs).unwrap_or(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_default_is_the_sdk_schedule_with_full_jitter() {
        let b = Backoff::default();
        let tops: Vec<Duration> = (0..6).map(|n| b.delay(n, Duration::ZERO, 1.0)).collect();
        assert_eq!(
            tops,
            [
                500 * MS,
                1000 * MS,
                2000 * MS,
                4000 * MS,
                8000 * MS,
                8000 * MS
            ]
        );
        assert_eq!(b.delay(2, Duration::ZERO, 0.0), Duration::ZERO);
    }

    #[test]
    fn equal_jitter_keeps_at_least_half() {
        let b = Backoff::exponential(100 * MS, Duration::from_secs(10)).with_jitter(Jitter::Equal);
        assert_eq!(b.delay(1, Duration::ZERO, 0.0), 100 * MS);
        assert_eq!(b.delay(1, Duration::ZERO, 1.0), 200 * MS);
    }

    #[test]
    fn constant_is_constant() {
        let b = Backoff::constant(250 * MS);
        assert!((0..10).all(|n| b.delay(n, Duration::ZERO, 0.5) == 250 * MS));
    }

    #[test]
    fn huge_retry_counts_stay_at_the_cap() {
        let b = Backoff::default().with_jitter(Jitter::None);
        assert_eq!(
            b.delay(u32::MAX, Duration::ZERO, 0.5),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert!(
            Backoff::default()
                .with_multiplier(f64::NAN)
                .validate()
                .is_err()
        );
        assert!(Backoff::default().with_multiplier(0.5).validate().is_err());
        assert!(
            Backoff::exponential(Duration::from_secs(9), Duration::from_secs(8))
                .validate()
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn full_jitter_stays_inside_zero_and_the_exponential(n in 0u32..40, u in 0.0f64..1.0, base_ms in 1u64..2000, cap_ms in 2000u64..120_000) {
            let b = Backoff::exponential(Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            let d = b.delay(n, Duration::ZERO, u);
            let top = (base_ms as f64 * 2f64.powi(n as i32)).min(cap_ms as f64);
            prop_assert!(d.as_secs_f64() * 1000.0 <= top + 1e-6);
        }

        #[test]
        fn the_blogs_schedule_with_base_b_is_this_one_with_base_2b(
            n in 0u32..40,
            u in 0.0f64..1.0,
            b_ms in 1u64..1000,
            cap_ms in 2000u64..120_000,
        ) {
            // aws-arch-backoff-simulator: retry `attempt` (1 for the first)
            // waits from v = min(cap, base·2^attempt).
            let (b, cap) = (b_ms as f64 / 1000.0, cap_ms as f64 / 1000.0);
            let v = (b * 2f64.powi(n as i32 + 1)).min(cap);
            let ours = |jitter| {
                Backoff::exponential(Duration::from_millis(2 * b_ms), Duration::from_millis(cap_ms))
                    .with_jitter(jitter)
                    .delay(n, Duration::ZERO, u)
                    .as_secs_f64()
            };
            for (jitter, blog) in [
                (Jitter::Full, v * u),
                (Jitter::Equal, v / 2.0 + v / 2.0 * u),
                (Jitter::None, v),
            ] {
                prop_assert!((ours(jitter) - blog).abs() <= 1e-9, "{jitter:?}: {} vs {blog}", ours(jitter));
            }
        }

        #[test]
        fn equal_jitter_stays_between_half_and_whole(n in 0u32..40, u in 0.0f64..1.0) {
            let b = Backoff::default().with_jitter(Jitter::Equal);
            let top = b.delay(n, Duration::ZERO, 1.0);
            let d = b.delay(n, Duration::ZERO, u);
            prop_assert!(d >= top / 2 && d <= top);
        }

        #[test]
        fn decorrelated_jitter_stays_between_base_and_cap(prev_ms in 0u64..100_000, u in 0.0f64..1.0) {
            let b = Backoff::default().with_jitter(Jitter::Decorrelated);
            let d = b.delay(3, Duration::from_millis(prev_ms), u);
            prop_assert!(d >= b.base() && d <= b.cap());
            prop_assert!(d.as_secs_f64() <= (prev_ms as f64 / 1000.0).max(0.5) * 3.0 + 1e-9);
        }

        #[test]
        fn any_draw_gives_a_delay_no_larger_than_the_cap(n in any::<u32>(), u in any::<f64>(), prev in any::<u64>()) {
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated, Jitter::None] {
                let b = Backoff::default().with_jitter(jitter);
                prop_assert!(b.delay(n, Duration::from_millis(prev), u) <= b.cap());
            }
        }
    }
}
