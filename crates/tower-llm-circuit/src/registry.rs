//! The keys: one breaker each, shared by every clone of the service,
//! bounded, idle keys evicted.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{Breaker, CircuitState, KeySnapshot, OnTransition};
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
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard]>,
    /// Bumped whenever a key is evicted: callers caching a breaker check it.
    pub(crate) evictions: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub(crate) fn new(config: CircuitConfig, on_transition: Option<Arc<OnTransition>>) -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Registry {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            start: Instant::now(),
            timed: config.needs_times(),
            config: Arc::new(config),
            on_transition,
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            evictions: std::sync::atomic::AtomicU64::new(0),
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
        let breaker = Arc::new(Breaker::new(
            Arc::clone(&key),
            self.start,
            Arc::clone(&self.config),
            self.on_transition.clone(),
            now,
        ));
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
    /// key, then open ones. A state set by hand is never evicted.
    fn evict(&self, map: &mut HashMap<Arc<str>, Arc<Breaker>>, now: Duration) {
        let per_shard = self.config.max_keys.div_ceil(SHARDS).max(1);
        if map.len() < per_shard {
            return;
        }
        let idle = u64::try_from(self.config.idle_eviction.as_nanos()).unwrap_or(u64::MAX);
        let t = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let before = map.len();
        // A state set by hand stays until it is reset: never evicted idle.
        map.retain(|_, b| {
            matches!(
                b.state(),
                CircuitState::ForcedOpen | CircuitState::Disabled | CircuitState::MetricsOnly
            ) || t.saturating_sub(b.last_used.load(Ordering::Relaxed)) < idle
        });
        if map.len() < before {
            self.evictions.fetch_add(1, Ordering::AcqRel);
        }
        while map.len() >= per_shard {
            // Closed keys first, then open ones; a state set by hand is
            // never evicted (the shard may exceed its share for it).
            let victim = map
                .iter()
                .filter(|(_, b)| {
                    !matches!(
                        b.state(),
                        CircuitState::ForcedOpen
                            | CircuitState::Disabled
                            | CircuitState::MetricsOnly
                    )
                })
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
