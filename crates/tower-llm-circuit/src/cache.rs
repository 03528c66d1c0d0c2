//! The breaker this thread used last: a run of calls on one key skips
//! writing the key (when it can be compared where it is), hashing it, the
//! shard lock, and the clock arithmetic of most calls.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::key::{KeyBy, KeyInput};
use crate::registry::Registry;

/// How often a thread notes that it still uses a key: the breaker keeps
/// its last use to the second, for idle eviction.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

struct LastUsed {
    /// The registry's id: unique in the process.
    registry: u64,
    /// The registry's evictions when the breaker was looked up: any since,
    /// and the breaker may be gone from the registry.
    evictions: u64,
    key: String,
    breaker: Arc<Breaker>,
    /// When this thread next notes the key's use.
    touch_due: Instant,
}

struct Cache {
    /// Where keys that must be computed are written (its allocation kept).
    key: String,
    last: Option<LastUsed>,
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            key: String::new(),
            last: None,
        })
    };
}

/// The breaker of the request's key, at `now`: this thread's last one if
/// it is the same key of the same registry and nothing was evicted since,
/// else the registry's.
pub(crate) fn breaker_for(
    registry: &Registry,
    key_by: &KeyBy,
    input: &KeyInput<'_>,
    now: Instant,
) -> Arc<Breaker> {
    let evictions = registry.evictions.load(Ordering::Acquire);
    CACHE.with_borrow_mut(|Cache { key, last }| {
        if let Some(last) = last.as_mut()
            && last.registry == registry.id
            && last.evictions == evictions
            && is_key(key_by, input, key, &last.key)
        {
            if now >= last.touch_due {
                last.breaker.note_use(registry.since_start(now));
                last.touch_due = touch_due(now);
            }
            return Arc::clone(&last.breaker);
        }
        key_by.write(input, key);
        let since_start = registry.since_start(now);
        let breaker = registry.get(key, since_start);
        breaker.note_use(since_start);
        let mut used = LastUsed {
            registry: registry.id,
            evictions,
            key: String::new(),
            breaker: Arc::clone(&breaker),
            touch_due: touch_due(now),
        };
        // The key moves into the entry; the buffer takes the old entry's
        // allocation.
        std::mem::swap(&mut used.key, key);
        if let Some(old) = last.replace(used) {
            *key = old.key;
        }
        breaker
    })
}

/// Whether the request's key is `last`: compared in place when the request
/// holds the key's parts, else written into `buffer` first.
#[inline]
fn is_key(key_by: &KeyBy, input: &KeyInput<'_>, buffer: &mut String, last: &str) -> bool {
    match key_by.parts(input) {
        Some(parts) => parts.spell(last),
        None => {
            key_by.write(input, buffer);
            buffer == last
        }
    }
}

fn touch_due(now: Instant) -> Instant {
    now.checked_add(TOUCH_EVERY).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CircuitConfig;
    use http::{HeaderMap, Uri};
    use tower_llm_classify::RequestMeta;

    fn meta(model: &str) -> (Uri, HeaderMap, RequestMeta) {
        let uri: Uri = "https://api.openai.com/v1/chat/completions"
            .parse()
            .unwrap();
        let headers = HeaderMap::new();
        let body = format!(r#"{{"model":"{model}"}}"#);
        let meta = RequestMeta::from_request(&uri, &headers, Some(body.as_bytes()));
        (uri, headers, meta)
    }

    fn lookup(registry: &Registry, key_by: &KeyBy, model: &str) -> Arc<Breaker> {
        let (uri, headers, meta) = meta(model);
        let input = KeyInput {
            meta: &meta,
            uri: &uri,
            headers: &headers,
        };
        breaker_for(registry, key_by, &input, Instant::now())
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn calls_served_from_the_cache_still_note_that_the_key_is_in_use() {
        let registry = Registry::new(CircuitConfig::standard(), None);
        let first = lookup(&registry, &KeyBy::ProviderModel, "gpt-4o");
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(30)).await;
            let again = lookup(&registry, &KeyBy::ProviderModel, "gpt-4o");
            assert!(Arc::ptr_eq(&first, &again));
        }
        // Idle eviction reads it: the key was used just now, not 300 s ago.
        let last_used = || Duration::from_nanos(first.last_used.load(Ordering::Relaxed));
        assert_eq!(last_used(), registry.since_start(Instant::now()));
        // Noted at most once a second, and never more than a second old.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(400)).await;
            lookup(&registry, &KeyBy::ProviderModel, "gpt-4o");
            let age = registry.since_start(Instant::now()) - last_used();
            assert!(age <= Duration::from_secs(1), "{age:?}");
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn another_key_registry_or_eviction_is_looked_up_again() {
        let registry = Registry::new(CircuitConfig::standard(), None);
        let custom = KeyBy::Custom(Arc::new(|input: &KeyInput<'_>, out: &mut String| {
            out.push_str(input.meta.model.as_deref().unwrap_or("-"));
        }));
        for key_by in [KeyBy::ProviderModel, custom] {
            let a = lookup(&registry, &key_by, "a");
            assert!(Arc::ptr_eq(&a, &lookup(&registry, &key_by, "a")));
            let b = lookup(&registry, &key_by, "b");
            assert!(!Arc::ptr_eq(&a, &b));
            assert!(Arc::ptr_eq(&a, &lookup(&registry, &key_by, "a")));
        }
        let a = lookup(&registry, &KeyBy::ProviderModel, "a");
        let other = Registry::new(CircuitConfig::standard(), None);
        assert!(!Arc::ptr_eq(
            &a,
            &lookup(&other, &KeyBy::ProviderModel, "a")
        ));
        // Evicted: the cached breaker is no longer the key's.
        assert!(Arc::ptr_eq(
            &a,
            &lookup(&registry, &KeyBy::ProviderModel, "a")
        ));
        registry.evict_key("openai/a");
        let fresh = lookup(&registry, &KeyBy::ProviderModel, "a");
        assert!(!Arc::ptr_eq(&a, &fresh));
        assert!(Arc::ptr_eq(&fresh, &registry.find("openai/a").unwrap()));
    }
}
