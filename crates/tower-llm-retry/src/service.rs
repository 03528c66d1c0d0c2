//! The `Retry` service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_llm_classify::{BoxError, LlmError};
use tower_service::Service;

use crate::body::{ReplayBody, RetryBody};
use crate::future::ResponseFuture;
use crate::policy::RetryPolicy;

/// Retries failed calls to an LLM API as their classification allows.
///
/// The inner service receives `http::Request<ReplayBody>` (the caller's
/// body read once, replayed per attempt) and must return its failures as
/// errors that carry a classification: put [`Classify`] below it (the
/// stack order is Retry → Circuit → Classify → client).
///
/// # Clone
///
/// Clones share the policy and the retry budget (both in an `Arc` made when
/// the layer was built); `RetryLayer::layer` called again (axum does) also
/// shares them.
///
/// [`Classify`]: tower_llm_classify::Classify
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What every clone shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: RetryPolicy,
    seed: u64,
    draws: AtomicU64,
    /// The success counters (calls, attempts), registered with the
    /// installed recorder at the first success and kept: a lookup through
    /// the `metrics` macros costs an allocation per call with the
    /// Prometheus exporter. The fallback keeps its picks counters so too.
    #[cfg(feature = "metrics")]
    pub(crate) successes: std::sync::OnceLock<(metrics::Counter, metrics::Counter)>,
}

impl Shared {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        let seed = policy.seed.unwrap_or_else(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x0072_6574_7279_u64)
        });
        Shared {
            policy,
            seed,
            draws: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            successes: std::sync::OnceLock::new(),
        }
    }

    /// A uniform draw in `[0, 1)`: SplitMix64 over a shared counter, so a
    /// seeded policy gives the same sequence of delays run after run.
    pub(crate) fn draw(&self) -> f64 {
        let mut z = self.seed.wrapping_add(
            self.draws
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<S> Retry<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Retry {
            inner,
            shared: Arc::new(Shared::new(policy)),
        }
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Retry { inner, shared }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody>, Response = Response<R>> + Clone,
    S::Error: Into<LlmError>,
    B: Body,
    B::Error: Into<BoxError>,
    R: Body<Data = Bytes>,
    R::Error: Into<LlmError>,
{
    type Response = Response<RetryBody<R>>;
    type Error = LlmError;
    type Future = ResponseFuture<S, B, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service makes the first attempt; the clone left behind
        // is polled for readiness again before the next call (tower's
        // `Retry` does the same).
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(ready, Arc::clone(&self.shared), request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The delays the layer draws follow the specified law:
    /// Kolmogorov–Smirnov against U[0, 2 s] for the third attempt's
    /// full-jitter delay, 10^5 draws.
    #[test]
    fn full_jitter_delays_pass_a_kolmogorov_smirnov_test_against_uniform() {
        let shared = Shared::new(RetryPolicy::builder().seed(3).build().unwrap());
        let backoff = shared.policy.backoff;
        let top = backoff.delay(2, Duration::ZERO, 1.0).as_secs_f64();
        assert_eq!(top, 2.0);
        let n = 100_000;
        let mut xs: Vec<f64> = (0..n)
            .map(|_| {
                backoff
                    .delay(2, Duration::ZERO, shared.draw())
                    .as_secs_f64()
                    / top
            })
            .collect();
        xs.sort_by(f64::total_cmp);
        let d = xs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                (x - i as f64 / n as f64)
                    .abs()
                    .max(((i + 1) as f64 / n as f64 - x).abs())
            })
            .fold(0.0, f64::max);
        // Critical value at p = 0.01: 1.628 / sqrt(n).
        assert!(d < 1.628 / (n as f64).sqrt(), "D = {d}");
        assert!(
            xs.iter().all(|x| (0.0..=1.0).contains(x)),
            "no delay above the cap"
        );
    }

    #[test]
    fn a_seeded_policy_draws_the_same_sequence() {
        let a = Shared::new(RetryPolicy::builder().seed(5).build().unwrap());
        let b = Shared::new(RetryPolicy::builder().seed(5).build().unwrap());
        let c = Shared::new(RetryPolicy::builder().seed(6).build().unwrap());
        let (xa, xb, xc): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            (0..10).map(|_| a.draw()).collect(),
            (0..10).map(|_| b.draw()).collect(),
            (0..10).map(|_| c.draw()).collect(),
        );
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }
}
