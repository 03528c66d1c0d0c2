//! Whether the shared state is reachable, said once per outage.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Whether this replica shares its decisions now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SharedStatus {
    /// Not connected yet (just started).
    Connecting,
    /// Subscribed, the current state loaded, publishing works.
    Connected,
    /// Redis is unreachable or slow: decisions are in-process only (every
    /// call still goes on as without shared state); reconnecting.
    Degraded,
}

impl SharedStatus {
    /// A stable snake_case name, for `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedStatus::Connecting => "connecting",
            SharedStatus::Connected => "connected",
            SharedStatus::Degraded => "degraded",
        }
    }
}

impl fmt::Display for SharedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counts behind a [`SharedStatus`], for `/health` or `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedStats {
    /// Reachable or not.
    pub status: SharedStatus,
    /// This replica's decisions written to Redis.
    pub published: u64,
    /// Decisions not sent because the queue to Redis was full.
    pub dropped: u64,
    /// Writes that failed (Redis down or slow), the checks for its
    /// return included.
    pub failed: u64,
    /// Other replicas' decisions that changed a local key.
    pub applied: u64,
    /// Outages so far (each logged once, at warn).
    pub outages: u64,
}

/// The two halves that must both work for [`SharedStatus::Connected`].
#[derive(Clone, Copy, Debug, Default)]
struct Halves {
    /// The subscription is live and the state was loaded.
    subscribed: bool,
    /// The last write succeeded (or none failed yet).
    writing: bool,
}

/// The status and the counters, shared by the handle and its tasks.
#[derive(Debug)]
pub(crate) struct Health {
    halves: Mutex<Halves>,
    status: watch::Sender<SharedStatus>,
    pub(crate) published: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) applied: AtomicU64,
    outages: AtomicU64,
}

impl Health {
    pub(crate) fn new() -> Self {
        Health {
            halves: Mutex::new(Halves {
                subscribed: false,
                writing: true,
            }),
            status: watch::Sender::new(SharedStatus::Connecting),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            outages: AtomicU64::new(0),
        }
    }

    pub(crate) fn status(&self) -> SharedStatus {
        *self.status.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<SharedStatus> {
        self.status.subscribe()
    }

    pub(crate) fn stats(&self) -> SharedStats {
        SharedStats {
            status: self.status(),
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }

    /// The subscription is up (state loaded) or lost, because of `why`.
    pub(crate) fn subscribed(&self, up: bool, why: &dyn fmt::Display) {
        self.update(|h| h.subscribed = up, !up, why);
    }

    /// A write succeeded or failed, because of `why`.
    pub(crate) fn writing(&self, ok: bool, why: &dyn fmt::Display) {
        self.update(|h| h.writing = ok, !ok, why);
    }

    /// Changes a half and says so when the whole changes: at warn when an
    /// outage starts (once, however many writes fail in it), at info when
    /// it ends.
    fn update(&self, change: impl FnOnce(&mut Halves), failure: bool, why: &dyn fmt::Display) {
        let mut halves = self.halves.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut halves);
        let before = self.status();
        let now = if halves.subscribed && halves.writing {
            SharedStatus::Connected
        } else if failure || before != SharedStatus::Connecting {
            SharedStatus::Degraded
        } else {
            SharedStatus::Connecting
        };
        if before == now {
            return;
        }
        match now {
            SharedStatus::Degraded => {
                self.outages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: crate::TRACING_TARGET,
                    error = %why,
                    "shared state unreachable: circuit decisions stay in this process until it is back"
                );
            }
            SharedStatus::Connected if before == SharedStatus::Degraded => {
                tracing::info!(target: crate::TRACING_TARGET, "shared state reachable again: current state reloaded");
            }
            _ => {
                tracing::debug!(target: crate::TRACING_TARGET, "shared state connected");
            }
        }
        self.status.send_replace(now);
    }
}
