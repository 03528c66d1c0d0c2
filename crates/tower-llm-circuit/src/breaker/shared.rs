//! Decisions shared between replicas: what this breaker tells the others
//! (opened until, cooling down until, closed again) and how it takes what
//! they tell it, without telling it back.
//!
//! Only decisions cross, never call-by-call counts: each replica keeps its
//! own window, as LiteLLM's router does with its Redis-shared cooldowns
//! (`litellm/router_utils/cooldown_cache.py` shares the cooldown, not the
//! failures that led to it).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[cfg(tower_llm_loom)]
use loom::sync::atomic::Ordering;
#[cfg(not(tower_llm_loom))]
use std::sync::atomic::Ordering;

use super::{ARMING, Breaker, CircuitState, nanos};

/// How much longer than its own longest open a replica keeps a key open
/// when another replica says so (the fleet's probe grace is well under).
const SHARED_SLACK: Duration = Duration::from_secs(60);

/// Why a key cools down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CooldownCause {
    /// A rate limit (a 429 that said when to come back).
    RateLimited,
    /// An exhausted quota (billing, credits): the configured quota cooldown.
    QuotaExhausted,
}

impl CooldownCause {
    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CooldownCause::RateLimited => "rate_limited",
            CooldownCause::QuotaExhausted => "quota_exhausted",
        }
    }
}

/// A decision this process took about one key, to share with other
/// replicas (see [`CircuitHandle::share_decisions`](crate::CircuitHandle::share_decisions)).
///
/// Only the process's own decisions are told: what it applied because
/// another replica said so ([`CircuitHandle::apply_open_until`](crate::CircuitHandle::apply_open_until)
/// and the others) is not, so two replicas never echo a decision back and
/// forth.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyDecision {
    /// The key opened (its window or its probes failed, or opened by
    /// hand) and refuses calls until `until`.
    Opened {
        /// The key.
        key: Arc<str>,
        /// When its next probe is allowed.
        until: tokio::time::Instant,
    },
    /// The key cools down until `until` (started or lengthened).
    CoolingDown {
        /// The key.
        key: Arc<str>,
        /// When calls may go again.
        until: tokio::time::Instant,
        /// Why.
        cause: CooldownCause,
        /// The wait the answer asked for (the provider's hint, capped), or
        /// the configured quota cooldown.
        hint: Duration,
    },
    /// The key closed again after being open (its probes succeeded, a
    /// health probe did, or it was reset by hand).
    Closed {
        /// The key.
        key: Arc<str>,
    },
}

impl KeyDecision {
    /// The key the decision is about.
    pub fn key(&self) -> &str {
        match self {
            KeyDecision::Opened { key, .. }
            | KeyDecision::CoolingDown { key, .. }
            | KeyDecision::Closed { key } => key,
        }
    }
}

/// Called with every decision this process takes (see [`KeyDecision`]).
pub type OnDecision = dyn Fn(&KeyDecision) + Send + Sync;

/// Where a registry's breakers send their decisions: empty until a
/// listener is attached, then set once.
#[derive(Default)]
pub(crate) struct DecisionSlot(OnceLock<Arc<OnDecision>>);

impl fmt::Debug for DecisionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionSlot")
            .field("attached", &self.0.get().is_some())
            .finish()
    }
}

impl DecisionSlot {
    /// Attaches `listener`; `false` if one was attached already.
    pub(crate) fn attach(&self, listener: Arc<OnDecision>) -> bool {
        self.0.set(listener).is_ok()
    }
}

impl Breaker {
    /// This breaker's decisions go to `slot` (its registry's).
    pub(crate) fn with_decisions(mut self, slot: Arc<DecisionSlot>) -> Self {
        self.decisions = slot;
        self
    }

    /// `t` (nanoseconds after the registry's start) as an instant.
    fn instant(&self, t: u64) -> Option<tokio::time::Instant> {
        self.start.checked_add(Duration::from_nanos(t))
    }

    /// Tells the listener, if any, a decision of this process.
    fn share(&self, decision: impl FnOnce(Arc<str>) -> Option<KeyDecision>) {
        if let Some(listener) = self.decisions.0.get()
            && let Some(decision) = decision(Arc::clone(&self.key))
        {
            listener(&decision);
        }
    }

    pub(super) fn share_opened(&self, until: u64) {
        self.share(|key| {
            self.instant(until)
                .map(|until| KeyDecision::Opened { key, until })
        });
    }

    pub(super) fn share_closed(&self) {
        self.share(|key| Some(KeyDecision::Closed { key }));
    }

    pub(super) fn share_cooldown(&self, until: u64, cause: CooldownCause, hint: Duration) {
        self.share(|key| {
            self.instant(until).map(|until| KeyDecision::CoolingDown {
                key,
                until,
                cause,
                hint,
            })
        });
    }

    /// Another replica opened this key until `until`: closed, open or
    /// half-open, it is open until then at least (a longer open interval
    /// stays). A state set by hand is left alone. Not shared back. `true`
    /// if anything changed.
    pub(crate) fn apply_open_until(&self, until: tokio::time::Instant) -> bool {
        let now = nanos(self.now());
        // Never longer than this replica's own longest open, and a minute
        // (another replica keeps a key open a little past its opener):
        // a value in Redis (a clock years ahead, or anyone who can write
        // there) must not shut a key for centuries, with no probe to end it.
        let longest = now.saturating_add(nanos(
            self.config.max_open_duration.saturating_add(SHARED_SLACK),
        ));
        let until = nanos(until.saturating_duration_since(self.start))
            .min(longest)
            .min(ARMING - 1);
        if until <= now {
            return false;
        }
        loop {
            let state = self.state();
            match state {
                CircuitState::Open => {
                    // `ARMING` is above every time: an interval being ended
                    // now is left to the caller ending it.
                    let before = self.open_until.fetch_max(until, Ordering::AcqRel);
                    return before < until;
                }
                CircuitState::Closed | CircuitState::HalfOpen => {
                    self.open_until.store(until, Ordering::Release);
                    if self
                        .state
                        .compare_exchange(
                            state.as_u8(),
                            CircuitState::Open.as_u8(),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
                    {
                        // Its probes, if it fails them itself, open it for
                        // longer, as after a trip of its own.
                        let _ = self.trips.fetch_max(1, Ordering::AcqRel);
                        self.emit(state, CircuitState::Open, "opened by another replica");
                        return true;
                    }
                    // Changed meanwhile: look again.
                }
                CircuitState::ForcedOpen | CircuitState::Disabled | CircuitState::MetricsOnly => {
                    return false;
                }
            }
        }
    }

    /// Another replica's key cools down until `until`: this one too,
    /// unless its own cooldown lasts longer. Not shared back.
    pub(crate) fn apply_cooldown_until(&self, until: tokio::time::Instant) -> bool {
        let now = nanos(self.now());
        // Never longer than this replica's own longest cooldown (its quota
        // cooldown, which caps a rate limit's hinted one too).
        let longest = now.saturating_add(nanos(self.config.quota_cooldown));
        let until = nanos(until.saturating_duration_since(self.start)).min(longest);
        if until <= now {
            return false;
        }
        self.cooldown_until.fetch_max(until, Ordering::AcqRel) < until
    }

    /// Another replica's key closed again: if this one is open or
    /// half-open, it closes too, with a fresh window. Not shared back.
    pub(crate) fn apply_closed(&self) -> bool {
        self.close_quietly(CircuitState::Open, "closed by another replica")
            || self.close_quietly(CircuitState::HalfOpen, "closed by another replica")
    }
}
