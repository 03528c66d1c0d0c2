//! The public vocabulary of a breaker: its states, the transitions
//! between them, and the snapshot a `/health` endpoint reads.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::window::Totals;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
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

impl State {
    const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    pub(super) fn from_u8(value: u8) -> State {
        State::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(State::Closed)
    }

    pub(super) fn as_u8(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
        }
    }

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for State {
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
    pub from: State,
    /// The state entered.
    pub to: State,
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
    pub state: State,
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
}
