//! Pacing: a call its key's rate-limit headers say will be refused is
//! not sent.
//!
//! Providers report on every answer, successes included, how many
//! requests and tokens a key has left and when its buckets are full again
//! (`x-ratelimit-*` from OpenAI, Azure, Groq and Together,
//! `anthropic-ratelimit-*`, the IETF `RateLimit` fields; read by
//! [`RateLimitHeaders`]). The circuit keeps each key's latest report and
//! the calls it has sent since; when what is left cannot cover the calls
//! in flight plus the next one (its tokens estimated from the body's size
//! and its `max_tokens`: [`RequestMeta::estimated_tokens`]), the call is
//! answered at once with a rate-limited [`LlmError`] whose hint is the
//! wait until the reset. A retry layer above then waits for it if that
//! fits the request's deadline; a fallback moves on to another target.
//! A key whose answers carry no such headers is never paced, unless
//! [`PacingConfig`] gives it limits.
//!
//! This is the proactive half of what LiteLLM's router does with
//! `enable_pre_call_checks` and its usage-based routing (a deployment
//! whose remaining tokens cannot cover the request is skipped); the
//! reactive half, a cooldown after a hinted 429, is the breaker's.
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_circuit::CircuitLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitLayer::default();
//! let handle = layer.handle();
//! // Nothing seen yet: not paced.
//! assert_eq!(handle.paced_for("openai/gpt-4o"), None);
//! assert!(handle.pacing("openai/gpt-4o").is_none());
//! # }
//! ```
//!
//! [`RateLimitHeaders`]: tower_llm_classify::hint::RateLimitHeaders
//! [`RequestMeta::estimated_tokens`]: tower_llm_classify::RequestMeta::estimated_tokens
//! [`LlmError`]: tower_llm_classify::LlmError

mod config;
mod handle;
mod view;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tower_llm_classify::hint::{Hint, HintSource, MAX_HINT, RateLimitHeaders};
use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};

pub use config::{PaceLimits, PacingConfig};
pub use handle::{PaceBucket, PacingSnapshot, SharedPacing};

use view::{Admitted, Buckets, View};

/// One key's pacing.
#[derive(Debug)]
pub(crate) struct KeyPacing {
    limits: Option<PaceLimits>,
    /// The longest reset believed (the circuit's quota cooldown).
    max_reset: Duration,
    view: Mutex<View>,
}

impl KeyPacing {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every key's pacing, shared by the registry.
#[derive(Debug)]
pub(crate) struct Pacing {
    config: PacingConfig,
    /// Whether any key may be paced: limits are configured, or some
    /// answer carried rate-limit headers. Until then a call reads this
    /// flag and nothing else.
    active: AtomicBool,
    keys: RwLock<HashMap<Arc<str>, Arc<KeyPacing>>>,
    max_keys: usize,
    max_reset: Duration,
}

/// A call's reservation on its key, handed back when it is answered or
/// dropped (a caller that goes away takes nothing with it).
#[derive(Debug)]
pub(crate) struct PacingPermit {
    key: Arc<KeyPacing>,
    admitted: Option<Admitted>,
}

impl PacingPermit {
    /// The call's answer came with `headers`, at `now`.
    fn answered(mut self, headers: Option<&HeaderMap>, now: impl FnOnce() -> Duration) {
        let report = headers.and_then(|h| read(h, self.key.max_reset));
        let admitted = self.admitted.take();
        let now = if report.is_some() {
            now()
        } else {
            Duration::ZERO
        };
        self.key.view().answered(admitted, report.as_ref(), now);
    }
}

impl Drop for PacingPermit {
    fn drop(&mut self) {
        if let Some(admitted) = self.admitted.take() {
            self.key
                .view()
                .answered(Some(admitted), None, Duration::ZERO);
        }
    }
}

/// What a call carries to its answer: nothing when pacing is off; the
/// pacing to tell when its key is not paced (yet); its reservation when
/// it is.
#[derive(Debug)]
pub(crate) enum Pace {
    Off,
    Watch(Arc<Pacing>),
    Paced(PacingPermit),
}

impl Pace {
    /// The call's answer came, with `headers` when it had a head.
    pub(crate) fn answered(
        self,
        key: &str,
        headers: Option<&HeaderMap>,
        now: impl FnOnce() -> Duration,
    ) {
        match self {
            Pace::Off => {}
            Pace::Watch(pacing) => {
                if let Some(headers) = headers {
                    pacing.observe(key, headers, now);
                }
            }
            Pace::Paced(permit) => permit.answered(headers, now),
        }
    }
}

/// What `headers` report, each reset at most `max_reset`: as with the
/// breaker's hinted cooldowns, one header cannot shut a key for longer
/// than its quota cooldown. A bucket without a reset is left out (nothing
/// says when it refills, so nothing could be waited for).
fn read(headers: &HeaderMap, max_reset: Duration) -> Option<RateLimitHeaders> {
    let mut report = RateLimitHeaders::read_with(headers, SystemTime::now)?;
    for bucket in [&mut report.requests, &mut report.tokens] {
        *bucket = bucket.and_then(|mut b| {
            b.reset = Some(b.reset?.min(max_reset));
            Some(b)
        });
    }
    (report.requests.is_some() || report.tokens.is_some()).then_some(report)
}

impl Pacing {
    pub(crate) fn new(config: PacingConfig, max_keys: usize, max_reset: Duration) -> Arc<Pacing> {
        Arc::new(Pacing {
            active: AtomicBool::new(config.has_limits()),
            config,
            keys: RwLock::new(HashMap::new()),
            max_keys,
            max_reset,
        })
    }

    fn find(&self, key: &str) -> Option<Arc<KeyPacing>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn get_or_insert(&self, key: &str, now: Duration) -> Arc<KeyPacing> {
        if let Some(found) = self.find(key) {
            return found;
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = keys.get(key) {
            return Arc::clone(found);
        }
        if keys.len() >= self.max_keys {
            keys.retain(|_, k| Arc::strong_count(k) > 1 || !k.view().idle(now));
        }
        // Every kept view in use or waiting for its reset (up to an hour):
        // a key the configuration names is kept anyway (they are few); any
        // other shares one view with every such key of its first segment
        // (its target), so that the keys (a model name is a caller's) grow
        // past `max_keys` by at most one per target, and a flood of new
        // names is paced together, more tightly, never not at all.
        let key = if keys.len() >= self.max_keys && !self.config.names(key) {
            let first = key.split('/').next().unwrap_or(key);
            let shared = format!("{first}/{OVERFLOW}");
            if let Some(found) = keys.get(shared.as_str()) {
                return Arc::clone(found);
            }
            Cow::Owned(shared)
        } else {
            Cow::Borrowed(key)
        };
        let made = Arc::new(KeyPacing {
            limits: self.config.limits_for(&key),
            max_reset: self.max_reset,
            view: Mutex::new(View::new(self.config.continuous_refill)),
        });
        keys.insert(Arc::from(&*key), Arc::clone(&made));
        self.active.store(true, Ordering::Release);
        made
    }

    /// Admits a call to `key` costing `tokens` (`None`: unknown, counted
    /// as one), or the error that refuses it. `now` is read only when the
    /// key is paced.
    pub(crate) fn admit(
        self: &Arc<Self>,
        key: &str,
        tokens: Option<u64>,
        now: impl FnOnce() -> Duration,
    ) -> Result<Pace, LlmError> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(self.watch());
        }
        let found = self.find(key);
        if found.is_none() && self.config.limits_for(key).is_none() {
            return Ok(self.watch());
        }
        let now = now();
        let found = match found {
            Some(found) => found,
            None => self.get_or_insert(key, now),
        };
        let tokens = tokens.unwrap_or(1);
        let admitted = found.view().admit(now, tokens, found.limits);
        match admitted {
            Ok(admitted) => Ok(Pace::Paced(PacingPermit {
                key: found,
                admitted: Some(admitted),
            })),
            Err(wait) => Err(paced_error(key, wait)),
        }
    }

    fn watch(self: &Arc<Self>) -> Pace {
        if self.config.from_headers {
            Pace::Watch(Arc::clone(self))
        } else {
            Pace::Off
        }
    }

    /// An answer to a call its key was not paced for: its headers start
    /// the key's view.
    fn observe(&self, key: &str, headers: &HeaderMap, now: impl FnOnce() -> Duration) {
        let Some(report) = read(headers, self.max_reset) else {
            return;
        };
        let now = now();
        self.get_or_insert(key, now)
            .view()
            .answered(None, Some(&report), now);
    }

    /// How long `key` is paced out for a call costing `tokens`.
    /// `now` is read only for a key that has a view: a picker asks for
    /// every candidate of every request, and most keys have none.
    pub(crate) fn paced_for(
        &self,
        key: &str,
        tokens: u64,
        now: impl FnOnce() -> Duration,
    ) -> Option<Duration> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let found = self.find(key)?;
        let limits = found.limits;
        found.view().paced_for(now(), tokens, limits)
    }

    /// Whether any key may be paced: limits are configured, or some
    /// answer carried rate-limit headers.
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The share of its limits `key` has left (see [`View::headroom`]);
    /// `now` is read only for a key that has a view.
    pub(crate) fn headroom(&self, key: &str, now: impl FnOnce() -> Duration) -> Option<f64> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let found = self.find(key)?;
        let limits = found.limits;
        found.view().headroom(now(), limits)
    }

    /// Every key's buckets not yet full again, to share with other
    /// replicas.
    pub(crate) fn shared(&self, now: Duration) -> Vec<(Arc<str>, Buckets)> {
        let keys: Vec<_> = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect();
        keys.into_iter()
            .filter_map(|(key, pacing)| {
                let buckets = pacing.view().buckets(now);
                buckets
                    .iter()
                    .any(Option::is_some)
                    .then_some((key, buckets))
            })
            .collect()
    }

    /// Another replica's buckets for `key`: see [`View::apply`].
    pub(crate) fn apply(&self, key: &str, mut buckets: Buckets, now: Duration) -> bool {
        if buckets.iter().flatten().all(|(_, at)| *at <= now) {
            return false;
        }
        // No reset further than this replica takes from a header: a view
        // from Redis cannot pace a key out for longer than one's own.
        for (_, at) in buckets.iter_mut().flatten() {
            *at = (*at).min(now.saturating_add(self.max_reset));
        }
        self.get_or_insert(key, now).view().apply(buckets, now)
    }

    pub(crate) fn snapshot(&self, key: &str, now: Duration) -> Option<PacingSnapshot> {
        let found = self.find(key)?;
        let limits = found.limits;
        let mut view = found.view();
        let paced_for = view.paced_for(now, 1, limits);
        Some(PacingSnapshot::new(key, view.report(now), paced_for))
    }
}

/// The second segment of the view that the keys of a first segment share
/// once `max_keys` views are kept and busy (see `Pacing::get_or_insert`).
const OVERFLOW: &str = "*";

/// The error of a call its key's rate limits would refuse: rate limited,
/// retryable after the wait, which is its hint (as the breaker's
/// cooldown answers).
pub(crate) fn paced_error(key: &str, wait: Duration) -> LlmError {
    let message = format!(
        "{key} has no rate limit left for this request; {:.1} s until its reset",
        wait.as_secs_f64()
    );
    let hint = Hint {
        delay: wait.min(MAX_HINT),
        source: HintSource::RateLimitReset,
    };
    LlmError::new(
        Classification::new(ErrorKind::RateLimited)
            // Refused before it left the process: a retry of it takes
            // nothing from the retry budget.
            .with_phase(Phase::Local)
            .with_message(&message)
            .with_hint(Some(hint))
            .with_retryable(true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_never_grow_past_their_bound_while_every_view_waits_for_its_reset() {
        let pacing = Pacing::new(PacingConfig::default(), 2, Duration::from_secs(3600));
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining-requests", "5".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "1h".parse().unwrap());
        for i in 0..100 {
            pacing.observe(&format!("target/model-{i}"), &headers, || Duration::ZERO);
        }
        let kept: Vec<Arc<str>> = pacing
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        // The first two keep their own views; the rest share their
        // target's, which heard all of them.
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(pacing.find("target/model-0").is_some());
        assert!(pacing.find("target/model-99").is_none());
        assert!(pacing.find("target/*").is_some());
    }

    #[test]
    fn another_replicas_view_paces_a_key_out_no_longer_than_a_header_could() {
        let pacing = Pacing::new(PacingConfig::default(), 10, Duration::from_secs(3600));
        let far = Duration::from_secs(u64::MAX / 4);
        assert!(pacing.apply("target/model", [Some((0, far)), None], Duration::ZERO));
        let paced = pacing
            .paced_for("target/model", 1, || Duration::ZERO)
            .unwrap();
        assert_eq!(paced, Duration::from_secs(3600));
    }

    #[test]
    fn a_flood_of_new_keys_is_paced_together_by_its_targets_configured_limits() {
        let config = PacingConfig::default().limit("target", PaceLimits::rpm(2));
        let pacing = Pacing::new(config, 2, Duration::from_secs(3600));
        let now = || Duration::ZERO;
        // Two keys fill the bound, each with a call in flight.
        let held: Vec<_> = (0..2)
            .map(|i| {
                pacing
                    .admit(&format!("target/model-{i}"), None, now)
                    .unwrap()
            })
            .collect();
        // New names share one view: its two calls a minute, not two each.
        assert!(pacing.admit("target/new-0", None, now).is_ok());
        assert!(pacing.admit("target/new-1", None, now).is_ok());
        assert!(pacing.admit("target/new-2", None, now).is_err());
        drop(held);
    }
}
