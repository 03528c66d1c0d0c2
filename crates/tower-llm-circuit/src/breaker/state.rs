//! The public vocabulary of a breaker: its states, the transitions
//! between them, and the snapshot a `/health` endpoint reads.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::window::Totals;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail at once until the open duration has passed.
    Open,
    /// A few probes are let through; their outcomes decide.
    HalfOpen,
    /// Set by hand: every call fails at once.
    ForcedOpen,
    /// Set by hand: every call flows, nothing is counted.
    Disabled,
    /// Set by hand: every call flows and is counted, the circuit never opens.
    MetricsOnly,
}

impl CircuitState {
    const ALL: [CircuitState; 6] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::ForcedOpen,
        CircuitState::Disabled,
        CircuitState::MetricsOnly,
    ];

    pub(super) fn from_u8(value: u8) -> CircuitState {
        CircuitState::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(CircuitState::Closed)
    }

    pub(super) fn as_u8(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
            CircuitState::ForcedOpen => 3,
            CircuitState::Disabled => 4,
            CircuitState::MetricsOnly => 5,
        }
    }

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
            CircuitState::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The key.
    pub key: Arc<str>,
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
    /// Why, in a few words.
    pub reason: &'static str,
}

/// Called on every state change.
pub type OnTransition = dyn Fn(&Transition) + Send + Sync;

/// A key's state and counts, for a `/health` endpoint.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct KeySnapshot {
    /// The key.
    pub key: Arc<str>,
    /// Its state.
    pub state: CircuitState,
    /// The window's totals.
    pub totals: Totals,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Calls failed fast so far.
    pub rejected: u64,
    /// Time until the next probe, when open.
    pub open_remaining: Option<Duration>,
    /// Time left cooling down, if cooling down.
    pub cooldown_remaining: Option<Duration>,
    /// The key's adaptive concurrency limit (what an
    /// [`AdaptiveLimit`](crate::AdaptiveLimit) on these keys uses).
    pub limit: LimitSnapshot,
}

/// A key's adaptive concurrency limit, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitSnapshot {
    /// Whether the key has a limit now: it is off until a window of its
    /// answers first has enough shed ones (see
    /// [`AdaptiveLimitConfig`](crate::AdaptiveLimitConfig)).
    pub enabled: bool,
    /// The limit: calls allowed in flight (`u32::MAX` while off).
    pub limit: u32,
    /// Calls in flight (streams until their body ends).
    pub in_flight: u32,
    /// Calls waiting for room.
    pub waiting: u32,
}
