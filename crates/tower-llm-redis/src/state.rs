//! `SharedState`: one replica's connection to the decisions of the fleet.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower_llm_circuit::{CircuitHandle, CircuitLayer, KeyDecision, SharedPacing};

use crate::error::SharedStateError;
use crate::pacing::{self, PacingMemory};
use crate::publisher::{self, Outgoing};
use crate::status::{Health, SharedStats, SharedStatus};
use crate::subscriber;
use crate::wire::{Names, WireDecision, epoch_ms_now, from_epoch_ms, ttl_ms};

/// What the handle and its background tasks share.
pub(crate) struct Shared {
    pub(crate) names: Names,
    /// This replica's id: its own messages, heard back, are skipped.
    pub(crate) replica: u64,
    /// The longest a connect or a command may take before Redis counts as
    /// down.
    pub(crate) timeout: Duration,
    /// How often a quiet subscription is checked.
    pub(crate) liveness: Duration,
    /// How much longer than the replica that opened a key the others keep
    /// it open, so that one probe (the opener's) decides for the fleet.
    pub(crate) probe_grace_ms: u64,
    pub(crate) health: Health,
    handles: RwLock<Vec<CircuitHandle>>,
    /// This replica's own decisions that still hold (open and cooldown
    /// apart, by circuit key): told again after a reconnect, since what
    /// was decided while Redis was away was lost. Touched by the writer on
    /// each decision and by the reader on each reconnect, never by a call.
    own: Mutex<HashMap<(Arc<str>, bool), WireDecision>>,
    /// The size at which `own` is next swept of what no longer holds:
    /// twice what the last sweep left (at least [`OWN_SWEEP_MIN`]), so
    /// that a healthy Redis connection, which never reconnects, does not
    /// keep every key that ever opened or cooled down.
    own_sweep_at: std::sync::atomic::AtomicUsize,
    /// The pacing views last told or heard, per key.
    pub(crate) pacing: PacingMemory,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("names", &self.names)
            .field("replica", &self.replica)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Applies another replica's decision to every attached breaker set.
    pub(crate) fn apply(&self, key: &str, decision: &WireDecision) {
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for handle in handles.iter() {
            changed |= match decision {
                WireDecision::Open { until_ms } => {
                    from_epoch_ms(until_ms.saturating_add(self.probe_grace_ms))
                        .is_some_and(|until| handle.apply_open_until(key, until))
                }
                WireDecision::Cooldown { until_ms, .. } => from_epoch_ms(*until_ms)
                    .is_some_and(|until| handle.apply_cooldown_until(key, until)),
                WireDecision::Closed => handle.apply_closed(key),
                WireDecision::Pace { requests, tokens } => pacing::view(key, [*requests, *tokens])
                    .is_some_and(|view| handle.apply_pacing(&view)),
            };
        }
        if let WireDecision::Pace { requests, tokens } = decision {
            // Heard, so not told back unless it changes here.
            self.pacing.note(key, [*requests, *tokens]);
        }
        if changed {
            self.health.applied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every attached key's pacing view (keys whose answers said what
    /// they have left).
    pub(crate) fn pacing_views(&self) -> Vec<SharedPacing> {
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        handles
            .iter()
            .flat_map(CircuitHandle::shared_pacing)
            .collect()
    }

    /// Notes a decision of this replica (an open or a cooldown that holds
    /// replaces the one before; a close forgets the open).
    pub(crate) fn remember(&self, key: &Arc<str>, decision: &WireDecision) {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        if own.len() >= self.own_sweep_at.load(Ordering::Relaxed) {
            own.retain(|_, decision| still_holds(decision));
            self.own_sweep_at
                .store((own.len() * 2).max(OWN_SWEEP_MIN), Ordering::Relaxed);
        }
        match decision {
            WireDecision::Open { .. } => {
                own.insert((Arc::clone(key), true), decision.clone());
            }
            WireDecision::Cooldown { .. } => {
                own.insert((Arc::clone(key), false), decision.clone());
            }
            WireDecision::Closed => {
                own.remove(&(Arc::clone(key), true));
            }
            // Told again after a reconnect by the pacing task itself.
            WireDecision::Pace { .. } => {}
        }
    }

    /// This replica's own decisions that still hold (the expired ones
    /// forgotten).
    pub(crate) fn own_state(&self) -> Vec<(Arc<str>, WireDecision)> {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.retain(|_, decision| still_holds(decision));
        own.iter()
            .map(|((key, _), decision)| (Arc::clone(key), decision.clone()))
            .collect()
    }
}

/// The smallest size of a replica's own decisions at which they are
/// swept of the expired ones.
const OWN_SWEEP_MIN: usize = 64;

/// Whether one of this replica's own decisions still holds: an open or a
/// cooldown not over yet.
fn still_holds(decision: &WireDecision) -> bool {
    match decision {
        WireDecision::Open { until_ms } | WireDecision::Cooldown { until_ms, .. } => {
            ttl_ms(*until_ms).is_some()
        }
        WireDecision::Closed | WireDecision::Pace { .. } => false,
    }
}

/// Aborts the background tasks when the last [`SharedState`] goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One replica's share of the fleet's circuit decisions, through Redis.
///
/// Attached to a [`CircuitLayer`] (or its [`CircuitHandle`]), it tells the
/// other replicas what this one decides — a key opened until an instant, a
/// key cooling down until an instant, a key closed again — and applies what
/// they decide to this one's breakers, never shortening a longer local
/// state. Call-by-call counts are not shared: each replica keeps its own
/// windows.
///
/// Nothing on a call's path waits for Redis: a healthy call takes no
/// decision and sends nothing; a decision is queued (bounded; dropped and
/// counted when full) for a background task that writes it. Redis down or
/// slow, the replica goes on with its own decisions
/// ([`SharedStatus::Degraded`], logged once per outage at warn) and reloads
/// the stored state when Redis is back.
///
/// # Clone
///
/// Cheap: an `Arc`. The background tasks stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct SharedState {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Outgoing>,
    _tasks: Arc<Tasks>,
}

impl fmt::Debug for SharedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedState")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`SharedState`], from [`SharedState::builder`].
#[derive(Clone, Debug)]
pub struct SharedStateBuilder {
    url: String,
    prefix: String,
    queue: usize,
    timeout: Duration,
    liveness: Duration,
    probe_grace: Duration,
    pacing_every: Duration,
}

impl SharedStateBuilder {
    /// How many decisions may wait to be written (1024 by default); past
    /// that, new ones are dropped and counted.
    pub fn queue_capacity(mut self, decisions: usize) -> Self {
        self.queue = decisions;
        self
    }

    /// The longest a connect or a command may take before Redis counts as
    /// down (250 ms by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often a quiet subscription is pinged, to notice a connection
    /// that died without a word (5 s by default).
    pub fn liveness_interval(mut self, interval: Duration) -> Self {
        self.liveness = interval;
        self
    }

    /// How much longer than the replica that opened a key the others keep
    /// it open (1 s by default). When the open interval ends, the replica
    /// that opened the key probes it alone; its outcome — closed again, or
    /// open for longer — reaches the others before their own interval
    /// ends, so the fleet sends one probe per open interval instead of one
    /// per replica. If that replica is gone (or has no call for the key),
    /// the others probe this much later. Zero: every replica probes when
    /// the interval ends.
    pub fn probe_grace(mut self, grace: Duration) -> Self {
        self.probe_grace = grace;
        self
    }

    /// How often the keys' pacing views (what their answers said they
    /// have left, and until when) are read and the low ones that changed —
    /// a tenth or less of the most seen left, or nothing — told to the
    /// other replicas (250 ms by default): at most one write per such key
    /// per interval, whatever the number of calls, and none for keys with
    /// plenty left. Zero: no pacing is shared.
    pub fn share_pacing_every(mut self, interval: Duration) -> Self {
        self.pacing_every = interval;
        self
    }

    /// Starts the background tasks; Redis need not be up (the state starts
    /// [`Connecting`](SharedStatus::Connecting) and connects when it can).
    ///
    /// # Errors
    ///
    /// A URL that is not a Redis URL, an empty prefix or one with spaces
    /// or control characters, a queue of zero, or no Tokio runtime.
    pub fn connect(self) -> Result<SharedState, SharedStateError> {
        let client =
            redis::Client::open(self.url.as_str()).map_err(SharedStateError::InvalidUrl)?;
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SharedStateError::InvalidPrefix);
        }
        if self.queue == 0 {
            return Err(SharedStateError::ZeroQueue);
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SharedStateError::NoRuntime)?;
        let shared = Arc::new(Shared {
            names: Names::new(&self.prefix),
            replica: replica_id(),
            timeout: self.timeout.max(Duration::from_millis(1)),
            liveness: self.liveness.max(Duration::from_millis(10)),
            probe_grace_ms: u64::try_from(self.probe_grace.as_millis()).unwrap_or(u64::MAX),
            health: Health::new(),
            handles: RwLock::new(Vec::new()),
            own: Mutex::new(HashMap::new()),
            own_sweep_at: std::sync::atomic::AtomicUsize::new(OWN_SWEEP_MIN),
            pacing: PacingMemory::default(),
        });
        let (queue, receiver) = mpsc::channel(self.queue);
        let mut tasks = vec![
            runtime.spawn(publisher::run(
                Arc::clone(&shared),
                client.clone(),
                receiver,
            )),
            runtime.spawn(subscriber::run(Arc::clone(&shared), client)),
        ];
        if !self.pacing_every.is_zero() {
            tasks.push(runtime.spawn(pacing::run(
                Arc::clone(&shared),
                queue.clone(),
                self.pacing_every.max(Duration::from_millis(10)),
            )));
        }
        Ok(SharedState {
            shared,
            queue,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }
}

/// A random id for this replica (its own messages are skipped).
fn replica_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(epoch_ms_now());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl SharedState {
    /// Shared state on the Redis at `url` (`redis://host:port/db`, read it
    /// from the environment as keys are), under the key prefix `prefix`
    /// (several gateways can share one Redis with different prefixes),
    /// with the default settings. See [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// As [`SharedStateBuilder::connect`].
    pub fn connect(url: &str, prefix: &str) -> Result<SharedState, SharedStateError> {
        SharedState::builder(url, prefix).connect()
    }

    /// Settings beyond the URL and the prefix.
    pub fn builder(url: &str, prefix: &str) -> SharedStateBuilder {
        SharedStateBuilder {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            queue: 1024,
            timeout: Duration::from_millis(250),
            liveness: Duration::from_secs(5),
            probe_grace: Duration::from_secs(1),
            pacing_every: Duration::from_millis(250),
        }
    }

    /// Shares the decisions of the breakers behind `handle`: its own go
    /// out, the others' come in. Several breaker sets may be attached.
    ///
    /// # Errors
    ///
    /// [`SharedStateError::AlreadySharing`] if these breakers share their
    /// decisions elsewhere already.
    pub fn attach(&self, handle: &CircuitHandle) -> Result<(), SharedStateError> {
        let queue = self.queue.clone();
        // Weak: the breakers hold the listener and the state holds the
        // breakers' handle; a strong reference would keep both forever.
        let shared = Arc::downgrade(&self.shared);
        handle
            .share_decisions(move |decision: &KeyDecision| {
                let Some(wire) = WireDecision::from_decision(decision) else {
                    return;
                };
                // Never waits: a full queue drops the decision (counted).
                if queue.try_send((Arc::from(decision.key()), wire)).is_err()
                    && let Some(shared) = shared.upgrade()
                {
                    shared.health.dropped.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(|_| SharedStateError::AlreadySharing)?;
        self.shared
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle.clone());
        Ok(())
    }

    /// [`attach`](Self::attach) the breakers of `layer`.
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach).
    pub fn attach_layer(&self, layer: &CircuitLayer) -> Result<(), SharedStateError> {
        self.attach(&layer.handle())
    }

    /// Whether decisions are shared now.
    pub fn status(&self) -> SharedStatus {
        self.shared.health.status()
    }

    /// The status and its counts.
    pub fn stats(&self) -> SharedStats {
        self.shared.health.stats()
    }

    /// The status as it changes.
    pub fn watch_status(&self) -> watch::Receiver<SharedStatus> {
        self.shared.health.watch()
    }

    /// Waits until connected (subscribed and the stored state loaded).
    /// Wrap it in a timeout: with Redis down it waits for as long.
    pub async fn connected(&self) {
        let mut status = self.watch_status();
        // The sender lives in `self`: the wait ends only by a change.
        let _ = status.wait_for(|s| *s == SharedStatus::Connected).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            names: Names::new("test"),
            replica: 1,
            timeout: Duration::from_secs(1),
            liveness: Duration::from_secs(1),
            probe_grace_ms: 0,
            health: Health::new(),
            handles: RwLock::new(Vec::new()),
            own: Mutex::new(HashMap::new()),
            own_sweep_at: std::sync::atomic::AtomicUsize::new(OWN_SWEEP_MIN),
            pacing: PacingMemory::default(),
        }
    }

    fn own_len(shared: &Shared) -> usize {
        shared.own.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[test]
    fn own_decisions_that_are_over_are_forgotten_while_redis_stays_up() {
        let shared = shared();
        let past = epoch_ms_now().saturating_sub(1_000);
        for i in 0..10_000 {
            let key: Arc<str> = Arc::from(format!("target/model-{i}"));
            shared.remember(&key, &WireDecision::Open { until_ms: past });
        }
        assert!(own_len(&shared) <= OWN_SWEEP_MIN, "{}", own_len(&shared));
        // Those that still hold are all kept.
        let later = epoch_ms_now() + 60_000;
        for i in 0..1_000 {
            let key: Arc<str> = Arc::from(format!("target/live-{i}"));
            shared.remember(&key, &WireDecision::Open { until_ms: later });
        }
        assert_eq!(shared.own_state().len(), 1_000);
    }
}
