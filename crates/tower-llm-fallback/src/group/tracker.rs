//! [`Tracker`]: one call to a member of a group, counted in flight until
//! its answer's body ends (or the call fails, or is dropped), and timed to
//! its answer — for a stream, to its first content.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tower_llm_classify::stream::StreamProgress;

use super::stats::GroupStats;
use crate::service::Shared;

/// A call in flight to a member of a group of two or more.
#[derive(Debug)]
pub(crate) struct Tracker {
    stats: Arc<GroupStats>,
    member: usize,
    /// The target's index in the fallback.
    index: usize,
    /// When the call started, ns after the group's epoch.
    started: u64,
    /// A stream whose first content has not come yet: timed when it does.
    waiting: Option<StreamProgress>,
}

impl Tracker {
    /// Starts counting a call to target `index`, if it is in a group of
    /// two or more.
    pub(crate) fn start<S>(shared: &Shared<S>, index: usize) -> Option<Tracker> {
        let group = shared.groups.get(*shared.group_of.get(index)?)?;
        let stats = group.stats.as_ref()?;
        let member = index - group.start;
        stats
            .members
            .get(member)?
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Some(Tracker {
            stats: Arc::clone(stats),
            member,
            index,
            started: stats.now(),
            waiting: None,
        })
    }

    /// The target called.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// When the call started, ns after the group's epoch.
    pub(crate) fn started(&self) -> u64 {
        self.started
    }

    /// The call answered: its latency is the time to now, unless the
    /// answer is a stream whose first content has not come yet (the
    /// retry layer's first-content guard holds a stream back until it
    /// does; without it, the body's frames tell).
    pub(crate) fn answered(&mut self, extensions: &http::Extensions) {
        match extensions.get::<StreamProgress>() {
            Some(progress) if !progress.content_seen() && !progress.failed() => {
                self.waiting = Some(progress.clone());
            }
            _ => self.observe(),
        }
    }

    /// A frame of the answer's body went by.
    #[inline]
    pub(crate) fn on_frame(&mut self) {
        if self
            .waiting
            .as_ref()
            .is_some_and(StreamProgress::content_seen)
        {
            self.waiting = None;
            self.observe();
        }
    }

    fn observe(&self) {
        let now = self.stats.now();
        if let Some(member) = self.stats.members.get(self.member) {
            self.stats
                .observe(member, now.saturating_sub(self.started), now);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(member) = self.stats.members.get(self.member) {
            member.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
