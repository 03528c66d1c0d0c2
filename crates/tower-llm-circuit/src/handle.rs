//! Control and visibility: force a key open or closed, reset it, disable
//! it, and read every key's state.

use std::sync::Arc;

use crate::breaker::{CircuitState, KeyDecision, KeySnapshot};
use crate::registry::Registry;

/// A handle on a layer's breakers, for an admin endpoint or a test.
///
/// ```
/// use tower_llm_circuit::{CircuitConfig, CircuitLayer, CircuitState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitLayer::new(CircuitConfig::standard());
/// let handle = layer.handle();
/// handle.force_open("openai/gpt-4o");
/// assert_eq!(handle.state("openai/gpt-4o"), Some(CircuitState::ForcedOpen));
/// handle.reset("openai/gpt-4o");
/// assert_eq!(handle.snapshot()[0].state, CircuitState::Closed);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CircuitHandle {
    registry: Arc<Registry>,
}

impl CircuitHandle {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        CircuitHandle { registry }
    }

    /// The breakers' registry (for the other modules' views: pacing).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    fn set(&self, key: &str, state: CircuitState) {
        let now = self.registry.now();
        self.registry.get(key, now).set_state(state, now);
    }

    /// Every call to `key` fails at once until it is reset.
    pub fn force_open(&self, key: &str) {
        self.set(key, CircuitState::ForcedOpen);
    }

    /// Closes `key` with a fresh window (its cooldown, if any, stays).
    /// From an open state, its adaptive limit turns off (on from the
    /// start: if lowered, starts again from the initial limit), as when its
    /// probes close it.
    pub fn force_closed(&self, key: &str) {
        self.set(key, CircuitState::Closed);
    }

    /// Closes `key`, clears its window and ends its cooldown. From an open
    /// state, its adaptive limit turns off (on from the start: if lowered,
    /// starts again from the initial limit), as when its probes close it.
    pub fn reset(&self, key: &str) {
        let now = self.registry.now();
        let breaker = self.registry.get(key, now);
        breaker.set_state(CircuitState::Closed, now);
        breaker.end_cooldown();
    }

    /// Lets every call to `key` through without counting.
    pub fn disable(&self, key: &str) {
        self.set(key, CircuitState::Disabled);
    }

    /// Lets every call to `key` through, counting, never opening.
    pub fn metrics_only(&self, key: &str) {
        self.set(key, CircuitState::MetricsOnly);
    }

    /// The state of `key`, if it has been seen.
    pub fn state(&self, key: &str) -> Option<CircuitState> {
        self.registry.find(key).map(|b| b.state())
    }

    /// Every key's state, window totals, rejections and remaining waits,
    /// sorted by key.
    pub fn snapshot(&self) -> Vec<KeySnapshot> {
        self.registry.snapshot()
    }

    /// How many keys are held.
    pub fn keys(&self) -> usize {
        self.registry.len()
    }
}

/// How a health probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeResult {
    /// The key was not open: nothing was probed.
    NotOpen,
    /// The probe succeeded: the key is closed again.
    Closed,
    /// The probe failed: the key stays open.
    StillOpen,
}

impl CircuitHandle {
    /// While `key` is open (or half-open), runs `probe` — a `GET /health`, a
    /// one-token completion — and closes the key if it returns `true`,
    /// instead of waiting for live traffic to probe it. A key that is not
    /// open is left alone and `probe` is not run.
    ///
    /// ```
    /// use tower_llm_circuit::{CircuitConfig, CircuitLayer, ProbeResult, CircuitState};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = CircuitLayer::new(CircuitConfig::standard()).handle();
    /// assert_eq!(handle.probe("openai/gpt-4o", async { true }).await, ProbeResult::NotOpen);
    /// # }
    /// ```
    pub async fn probe(
        &self,
        key: &str,
        probe: impl std::future::Future<Output = bool>,
    ) -> ProbeResult {
        let Some(breaker) = self.registry.find(key) else {
            return ProbeResult::NotOpen;
        };
        if !matches!(breaker.state(), CircuitState::Open | CircuitState::HalfOpen) {
            return ProbeResult::NotOpen;
        }
        if !probe.await {
            return ProbeResult::StillOpen;
        }
        if breaker.close_after_probe() {
            ProbeResult::Closed
        } else {
            ProbeResult::NotOpen
        }
    }

    /// The keys that are open or half-open now (for a probe loop).
    pub fn open_keys(&self) -> Vec<Arc<str>> {
        self.snapshot()
            .into_iter()
            .filter(|k| matches!(k.state, CircuitState::Open | CircuitState::HalfOpen))
            .map(|k| k.key)
            .collect()
    }
}

/// A listener was already attached to these breakers
/// ([`CircuitHandle::share_decisions`] takes one per layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlreadySharing;

impl std::fmt::Display for AlreadySharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("these breakers already share their decisions with a listener")
    }
}

impl std::error::Error for AlreadySharing {}

/// Sharing with other replicas: this process's decisions out, theirs in.
///
/// A replica hears its own decisions through [`share_decisions`](Self::share_decisions)
/// and applies another's with the `apply_*` methods, which never shorten
/// a longer local state and are not told back to the listener (no echo
/// between replicas). Decisions carry instants; what crosses between
/// processes is the listener's business (wall-clock time, converted back
/// by each replica).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use tower_llm_circuit::{CircuitConfig, CircuitLayer, KeyDecision};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let replica_a = CircuitLayer::new(CircuitConfig::standard()).handle();
/// let replica_b = CircuitLayer::new(CircuitConfig::standard()).handle();
/// let told = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&told);
/// replica_b
///     .share_decisions(move |d: &KeyDecision| sink.lock().unwrap().push(d.clone()))
///     .unwrap();
///
/// // Replica A opened the key for 10 s; B hears it and refuses it too…
/// let until = tokio::time::Instant::now() + Duration::from_secs(10);
/// assert!(replica_b.apply_open_until("openai/gpt-4o", until));
/// let key = &replica_b.snapshot()[0];
/// assert!(key.open_remaining.is_some());
/// // …without telling it on as its own decision.
/// assert!(told.lock().unwrap().is_empty());
/// # let _ = replica_a;
/// # }
/// ```
impl CircuitHandle {
    /// Calls `listener` with every decision these breakers take
    /// themselves: a key opened until an instant, cooling down until an
    /// instant, closed again. Called on the thread that took it, inside
    /// the call that took it: keep it short (hand it to a channel). A
    /// healthy call takes no decision, so never calls it.
    ///
    /// # Errors
    ///
    /// [`AlreadySharing`] if a listener was attached already (one per
    /// layer, set once).
    pub fn share_decisions(
        &self,
        listener: impl Fn(&KeyDecision) + Send + Sync + 'static,
    ) -> Result<(), AlreadySharing> {
        if self.registry.decisions.attach(Arc::new(listener)) {
            Ok(())
        } else {
            Err(AlreadySharing)
        }
    }

    /// Another replica opened `key` until `until`: it is open here until
    /// then at least (closed, open for less or half-open, it opens until
    /// `until`; open for longer, it stays so). A state set by hand is left
    /// alone, and an instant already past changes nothing. `true` if the
    /// key changed. Not told to [`share_decisions`](Self::share_decisions)'s
    /// listener.
    pub fn apply_open_until(&self, key: &str, until: tokio::time::Instant) -> bool {
        let now = self.registry.now();
        self.registry.get(key, now).apply_open_until(until)
    }

    /// Another replica's `key` cools down until `until`: it does here too,
    /// unless its own cooldown lasts longer. `true` if the key changed.
    /// Not told to the listener.
    pub fn apply_cooldown_until(&self, key: &str, until: tokio::time::Instant) -> bool {
        let now = self.registry.now();
        self.registry.get(key, now).apply_cooldown_until(until)
    }

    /// Another replica's `key` closed again: if open or half-open here, it
    /// closes with a fresh window (its cooldown, if any, stays). `true` if
    /// the key changed. Not told to the listener.
    pub fn apply_closed(&self, key: &str) -> bool {
        self.registry
            .find(key)
            .is_some_and(|breaker| breaker.apply_closed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::{CircuitConfig, CircuitLayer, CooldownCause};

    const KEY: &str = "openai/gpt-4o";

    fn listening() -> (CircuitHandle, Arc<Mutex<Vec<KeyDecision>>>) {
        let handle = CircuitLayer::new(CircuitConfig::standard()).handle();
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        handle
            .share_decisions(move |d: &KeyDecision| sink.lock().unwrap().push(d.clone()))
            .unwrap();
        (handle, told)
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_listener_is_refused() {
        let (handle, _) = listening();
        assert_eq!(handle.share_decisions(|_| {}), Err(AlreadySharing));
    }

    #[tokio::test(start_paused = true)]
    async fn forcing_a_key_open_by_state_and_closing_it_are_told() {
        let (handle, told) = listening();
        let now = handle.registry.now();
        handle
            .registry
            .get(KEY, now)
            .set_state(CircuitState::Open, now);
        handle.reset(KEY);
        let told = told.lock().unwrap();
        assert!(matches!(&told[0], KeyDecision::Opened { until, .. } if *until > Instant::now()));
        assert_eq!(told[1], KeyDecision::Closed { key: KEY.into() });
        assert_eq!(told.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_and_its_lengthening_are_told_a_shorter_one_is_not() {
        let (handle, told) = listening();
        let now = handle.registry.now();
        let breaker = handle.registry.get(KEY, now);
        breaker.cool_down(Duration::from_secs(30), now, CooldownCause::RateLimited);
        breaker.cool_down(Duration::from_secs(10), now, CooldownCause::RateLimited);
        breaker.cool_down(Duration::from_secs(60), now, CooldownCause::QuotaExhausted);
        let told = told.lock().unwrap();
        let causes: Vec<_> = told
            .iter()
            .map(|d| match d {
                KeyDecision::CoolingDown {
                    cause, hint, until, ..
                } => {
                    assert_eq!(*until, Instant::now() + *hint);
                    (*cause, *hint)
                }
                other => panic!("not a cooldown: {other:?}"),
            })
            .collect();
        assert_eq!(
            causes,
            [
                (CooldownCause::RateLimited, Duration::from_secs(30)),
                (CooldownCause::QuotaExhausted, Duration::from_secs(60)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_applied_open_refuses_the_key_until_its_instant_and_is_not_told() {
        let (handle, told) = listening();
        let until = Instant::now() + Duration::from_secs(20);
        assert!(handle.apply_open_until(KEY, until));
        assert_eq!(handle.state(KEY), Some(CircuitState::Open));
        let now = handle.registry.now();
        assert!(handle.registry.get(KEY, now).acquire(now).is_err());
        tokio::time::advance(Duration::from_secs(21)).await;
        let now = handle.registry.now();
        let permit = handle.registry.get(KEY, now).acquire(now).unwrap();
        assert!(permit.is_probe());
        assert!(told.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_applied_open_never_shortens_a_longer_one() {
        let (handle, _) = listening();
        let long = Instant::now() + Duration::from_secs(60);
        assert!(handle.apply_open_until(KEY, long));
        assert!(!handle.apply_open_until(KEY, Instant::now() + Duration::from_secs(5)));
        let remaining = handle.snapshot()[0].open_remaining.unwrap();
        assert_eq!(remaining, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_applied_open_leaves_a_forced_key_and_a_past_instant_changes_nothing() {
        let (handle, _) = listening();
        handle.force_open(KEY);
        assert!(!handle.apply_open_until(KEY, Instant::now() + Duration::from_secs(5)));
        assert_eq!(handle.state(KEY), Some(CircuitState::ForcedOpen));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!handle.apply_open_until("other/model", Instant::now() - Duration::from_millis(1)));
        assert_eq!(handle.state("other/model"), Some(CircuitState::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn an_applied_cooldown_refuses_the_key_and_never_shortens_a_longer_one() {
        let (handle, told) = listening();
        assert!(handle.apply_cooldown_until(KEY, Instant::now() + Duration::from_secs(30)));
        assert!(!handle.apply_cooldown_until(KEY, Instant::now() + Duration::from_secs(3)));
        let key = &handle.snapshot()[0];
        assert_eq!(key.cooldown_remaining, Some(Duration::from_secs(30)));
        let now = handle.registry.now();
        assert!(handle.registry.get(KEY, now).acquire(now).is_err());
        assert!(told.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn another_replicas_decision_is_held_no_longer_than_this_ones_own_longest() {
        // A clock years ahead, or a value anyone wrote into Redis.
        let (handle, _) = listening();
        let centuries = Instant::now() + Duration::from_secs(600 * 365 * 24 * 3600);
        assert!(handle.apply_open_until(KEY, centuries));
        // The standard preset opens for 30 s at most; a minute more for
        // the fleet's grace.
        let open = handle.snapshot()[0].open_remaining.unwrap();
        assert_eq!(open, Duration::from_secs(90));
        assert!(handle.apply_cooldown_until("other/model", centuries));
        let cooling = handle
            .snapshot()
            .into_iter()
            .find(|k| &*k.key == "other/model")
            .and_then(|k| k.cooldown_remaining)
            .unwrap();
        // Its quota cooldown, an hour, is its longest.
        assert_eq!(cooling, Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn an_applied_close_closes_an_open_key_quietly_and_ignores_an_unknown_one() {
        let (handle, told) = listening();
        assert!(!handle.apply_closed(KEY));
        handle.apply_open_until(KEY, Instant::now() + Duration::from_secs(30));
        assert!(handle.apply_closed(KEY));
        assert_eq!(handle.state(KEY), Some(CircuitState::Closed));
        assert!(!handle.apply_closed(KEY));
        assert!(told.lock().unwrap().is_empty());
    }
}
