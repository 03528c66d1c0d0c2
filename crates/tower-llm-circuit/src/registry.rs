//! The keys: one breaker each, shared by every clone of the service,
//! bounded, idle keys evicted.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{Breaker, CircuitState, DecisionSlot, KeySnapshot, OnTransition};
use crate::config::CircuitConfig;

/// Shards of the key map: a call takes the read lock of one shard only,
/// so calls on different keys rarely meet, and calls on one key share a
/// read lock (no writer unless a key is added).
const SHARDS: usize = 16;

type Shard = RwLock<HashMap<Arc<str>, Arc<Breaker>>>;

pub(crate) struct Registry {
    /// Unique in the process (callers' caches tell registries apart by it).
    pub(crate) id: u64,
    start: Instant,
    pub(crate) config: Arc<CircuitConfig>,
    /// `config.needs_times()`, read on every call.
    pub(crate) timed: bool,
    on_transition: Option<Arc<OnTransition>>,
    /// Where every breaker's decisions go, to be shared with other replicas.
    pub(crate) decisions: Arc<DecisionSlot>,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    /// Bumped whenever a key is evicted: callers caching a breaker check it.
    pub(crate) evictions: std::sync::atomic::AtomicU64,
    /// Every key's rate-limit view (shared by the futures that report to it).
    pub(crate) pacing: Arc<crate::pacing::Pacing>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

/// Whether eviction leaves `breaker` alone: a state set by hand (it stays
/// until it is reset), or calls in flight or waiting in its adaptive limit
/// (evicted, its calls would be counted and limited apart from the key's
/// new ones).
fn kept(breaker: &Breaker) -> bool {
    matches!(
        breaker.state(),
        CircuitState::ForcedOpen | CircuitState::Disabled | CircuitState::MetricsOnly
    ) || breaker.limiter().in_flight() != 0
        || breaker.limiter().waiting() != 0
}

impl Registry {
    pub(crate) fn new(config: CircuitConfig, on_transition: Option<Arc<OnTransition>>) -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let pacing = crate::pacing::Pacing::new(
            config.pacing.clone(),
            config.max_keys,
            config.quota_cooldown,
        );
        Registry {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            start: Instant::now(),
            timed: config.needs_times(),
            config: Arc::new(config),
            on_transition,
            decisions: Arc::default(),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            evictions: std::sync::atomic::AtomicU64::new(0),
            pacing,
        }
    }

    /// Time since the registry started (Tokio's clock).
    pub(crate) fn now(&self) -> Duration {
        self.since_start(Instant::now())
    }

    /// `instant` in the registry's time: how long after its start.
    pub(crate) fn since_start(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.start)
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The breaker of `key`, made if new.
    pub(crate) fn get(&self, key: &str, now: Duration) -> Arc<Breaker> {
        let shard = self.shard(key);
        if let Some(breaker) = shard.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Arc::clone(breaker);
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        if let Some(breaker) = map.get(key) {
            return Arc::clone(breaker);
        }
        self.evict(&mut map, now);
        let key: Arc<str> = Arc::from(key);
        let breaker = Arc::new(
            Breaker::new(
                Arc::clone(&key),
                self.start,
                Arc::clone(&self.config),
                self.on_transition.clone(),
                now,
            )
            .with_decisions(Arc::clone(&self.decisions)),
        );
        map.insert(key, Arc::clone(&breaker));
        breaker
    }

    /// The breaker of `key`, if it exists.
    pub(crate) fn find(&self, key: &str) -> Option<Arc<Breaker>> {
        self.shard(key)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Makes room in a full shard (`max_keys` is split over 16 shards,
    /// rounded up): idle keys first, then the least recently used closed
    /// key, then open ones. A state set by hand is never evicted, nor a key
    /// whose adaptive limit has calls in flight or waiting (its
    /// `last_used` is noted when a call starts, so a key serving only
    /// long streams looks idle).
    fn evict(&self, map: &mut HashMap<Arc<str>, Arc<Breaker>>, now: Duration) {
        let per_shard = self.config.max_keys.div_ceil(SHARDS).max(1);
        if map.len() < per_shard {
            return;
        }
        let idle = u64::try_from(self.config.idle_eviction.as_nanos()).unwrap_or(u64::MAX);
        let t = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let before = map.len();
        // A state set by hand stays until it is reset: never evicted idle;
        // nor is a key with calls in flight or waiting.
        map.retain(|_, b| kept(b) || t.saturating_sub(b.last_used.load(Ordering::Relaxed)) < idle);
        if map.len() < before {
            self.evictions.fetch_add(1, Ordering::AcqRel);
        }
        while map.len() >= per_shard {
            // Closed keys first, then open ones; a state set by hand, or a
            // key with calls in flight or waiting, is never evicted (the
            // shard may exceed its share for it).
            let victim = map
                .iter()
                .filter(|(_, b)| !kept(b))
                .min_by_key(|(_, b)| {
                    (
                        b.state() != CircuitState::Closed,
                        b.last_used.load(Ordering::Relaxed),
                    )
                })
                .map(|(k, _)| Arc::clone(k));
            match victim {
                Some(key) => {
                    map.remove(&key);
                    self.evictions.fetch_add(1, Ordering::AcqRel);
                }
                None => return,
            }
        }
    }

    /// Evicts `key` as `evict` would (for tests of the callers' caches).
    #[cfg(test)]
    pub(crate) fn evict_key(&self, key: &str) {
        let mut map = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if map.remove(key).is_some() {
            self.evictions.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub(crate) fn snapshot(&self) -> Vec<KeySnapshot> {
        let now = self.now();
        let mut all: Vec<KeySnapshot> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(|b| b.snapshot(now))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry of one key per shard, idle after 60 s.
    fn one_per_shard() -> Registry {
        let config = CircuitConfig::builder()
            .max_keys(1)
            .idle_eviction(Duration::from_secs(60))
            .build()
            .unwrap();
        Registry::new(config, None)
    }

    /// `count` keys other than `key` in its shard.
    fn shard_mates(registry: &Registry, key: &str, count: usize) -> Vec<String> {
        let shard: *const Shard = registry.shard(key);
        (0..)
            .map(|i| format!("mate-{i}"))
            .filter(|k| std::ptr::eq(registry.shard(k), shard))
            .take(count)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_with_calls_in_flight_in_its_limit_is_never_evicted_idle_or_least_recently_used()
    {
        let registry = one_per_shard();
        let streaming = registry.get("streaming", Duration::ZERO);
        // One long stream: `last_used` noted when it started, never since.
        assert!(streaming.limiter().try_acquire());
        let mates = shard_mates(&registry, "streaming", 3);

        // A full shard, the key least recently used but not idle.
        registry.get(&mates[0], Duration::from_secs(30));
        // A full shard, the key idle.
        registry.get(&mates[1], Duration::from_secs(120));
        let kept = registry.find("streaming").expect("kept");
        assert!(Arc::ptr_eq(&kept, &streaming));

        // Its stream ended: the key goes like any other.
        let window = streaming.limiter().window();
        streaming.limiter().release(
            window,
            crate::adaptive::Sample::Nothing,
            &registry.config.adaptive_limit,
        );
        registry.get(&mates[2], Duration::from_secs(150));
        assert!(registry.find("streaming").is_none());
    }

    type Mock = tower_test::mock::Mock<
        http::Request<http_body_util::Full<bytes::Bytes>>,
        http::Response<http_body_util::Full<bytes::Bytes>>,
    >;
    type MockHandle = tower_test::mock::Handle<
        http::Request<http_body_util::Full<bytes::Bytes>>,
        http::Response<http_body_util::Full<bytes::Bytes>>,
    >;
    type Answer =
        tower_test::mock::SendResponse<http::Response<http_body_util::Full<bytes::Bytes>>>;

    /// A registry whose key `openai/gpt-4o` shares its shard with no other
    /// (so each newcomer evicts an idle key first, else the least recently
    /// used), idle after 60 s, and a mock upstream for the layer under test.
    fn idle_eviction_setup(
        config: crate::config::CircuitConfigBuilder,
    ) -> (Arc<Registry>, Mock, MockHandle) {
        let config = config
            .max_keys(32)
            .idle_eviction(Duration::from_secs(60))
            .build()
            .unwrap();
        let registry = Arc::new(Registry::new(config, None));
        let (mock, mut handle) = tower_test::mock::pair();
        handle.allow(1000);
        (registry, mock, handle)
    }

    /// Calls `service` for `openai/gpt-4o` every 10 s for 150 s (one
    /// thread, so every call after the first hits the thread's cache),
    /// answering each with `answer`, while newcomers take the key's shard at
    /// 100 s and 120 s; `after` runs after each call, with its second.
    async fn call_every_ten_seconds_as_newcomers_arrive<S>(
        registry: &Registry,
        service: &mut S,
        handle: &mut MockHandle,
        answer: impl Fn(Answer),
        mut after: impl FnMut(u64),
    ) where
        S: tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>>,
    {
        use tower::ServiceExt;
        let mates = shard_mates(registry, "openai/gpt-4o", 2);
        for second in (0..=150).step_by(10) {
            if second == 100 {
                registry.get(&mates[0], registry.now());
            }
            if second == 120 {
                registry.get(&mates[1], registry.now());
            }
            let request = http::Request::post("https://api.openai.com/v1/chat/completions")
                .body(http_body_util::Full::from(r#"{"model":"gpt-4o"}"#))
                .unwrap();
            let Ok(ready) = service.ready().await else {
                panic!("the layer is ready");
            };
            let call = ready.call(request);
            let (_, send) = handle.next_request().await.unwrap();
            answer(send);
            let _ = call.await;
            after(second);
            tokio::time::advance(Duration::from_secs(10)).await;
        }
    }

    /// A closed key called every 10 s through a circuit is not taken for
    /// idle when newcomers fill its shard: its use is noted at most once a
    /// second, not once in many cache hits. (Found in review: an untimed lookup
    /// let it look idle for 60 s and lose its window.)
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_key_called_every_ten_seconds_is_never_evicted_as_idle() {
        use tower_llm_classify::{Classification, ErrorKind, LlmError, Phase};

        let (registry, mock, mut handle) = idle_eviction_setup(
            CircuitConfig::builder()
                .minimum_calls(1000)
                .consecutive_failures(None),
        );
        let mut circuit = crate::Circuit::new(
            mock,
            Arc::clone(&registry),
            crate::key::KeyBy::ProviderModel,
        );
        let failure = |send: Answer| {
            send.send_error(LlmError::new(
                Classification::new(ErrorKind::ServerError).with_phase(Phase::BeforeHeaders),
            ))
        };
        call_every_ten_seconds_as_newcomers_arrive(
            &registry,
            &mut circuit,
            &mut handle,
            failure,
            |_| {},
        )
        .await;
        let kept = registry
            .find("openai/gpt-4o")
            .expect("the key in use is kept");
        assert_eq!(kept.snapshot(registry.now()).totals.failures, 16);
    }

    /// The same for the adaptive limit used alone (no circuit around it):
    /// a key called every 10 s keeps its entry, and so its limit, through
    /// newcomers filling its shard. (Its lookup read the clock once in 64
    /// cache hits: the key looked idle for 60 s and was evicted in use.)
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_key_called_every_ten_seconds_through_the_limit_alone_is_never_evicted_as_idle() {
        let (registry, mock, mut handle) = idle_eviction_setup(CircuitConfig::builder());
        let mut limit = crate::adaptive::AdaptiveLimit::new(
            mock,
            Arc::clone(&registry),
            crate::key::KeyBy::ProviderModel,
        );
        let ok = |send: Answer| send.send_response(http::Response::new("{}".into()));
        let mut first = None;
        let same_entry = |second| {
            let kept = registry
                .find("openai/gpt-4o")
                .expect("the key in use is kept");
            let first = first.get_or_insert_with(|| Arc::clone(&kept));
            assert!(Arc::ptr_eq(first, &kept), "the same entry at {second} s");
        };
        call_every_ten_seconds_as_newcomers_arrive(
            &registry,
            &mut limit,
            &mut handle,
            ok,
            same_entry,
        )
        .await;
    }
}
