//! Deployment groups: targets that serve the same model (several keys,
//! regions or providers), of which one is picked per request.
//!
//! A fallback's targets are groups, tried in order; a target added alone
//! is a group of one, tried exactly as before groups existed (nothing is
//! counted or timed for it). Within a group of two or more, each request
//! (and each move after a failure) picks one member that was not tried
//! yet, by the group's [`Strategy`], among those that are available: the
//! group skips a member whose breaker refused a call until its next probe,
//! one cooling down after a rate limit until its wait is over, and any the
//! [`CheckAvailability`] installed says no to. A failure moves on within
//! the group first, by the same rules; the next group is tried only when
//! every member of this one was tried or is unavailable. When nothing
//! available is left anywhere, the members left are tried anyway, so the
//! caller gets the layers' own refusal (with its wait) rather than no
//! answer. A member given a [`last_chance`](crate::Target::last_chance)
//! service is called through it only when no other member is left for
//! the request (every other one tried, or unavailable while some are
//! available): which member that is depends on the request's picks, not
//! on the order the members were added.

mod availability;
mod pick;
mod stats;
mod strategy;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use availability::SharedCheck;
pub use availability::{Availability, Candidate, CheckAvailability};
pub(crate) use pick::{Cursor, PickRequest, note_failure, pick};
pub(crate) use stats::{Deployment, GroupStats};
pub use strategy::{Strategy, UnknownStrategy};
pub(crate) use tracker::Tracker;

/// A group: where its members are among the fallback's targets, how it
/// picks, and (two members or more) what it knows of them.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) strategy: Strategy,
    /// `None` for a group of one.
    pub(crate) stats: Option<Arc<GroupStats>>,
}

/// The most members a group may have (picking keeps them in a bit set).
pub const MAX_GROUP_SIZE: usize = 64;

/// One group of a fallback, as `/health` shows it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GroupSnapshot {
    /// How it picks.
    pub strategy: Strategy,
    /// Its members, in the order given.
    pub deployments: Vec<DeploymentSnapshot>,
}

/// One member of a group, now.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeploymentSnapshot {
    /// The target's name.
    pub target: Arc<str>,
    /// Its static weight (1 unless set).
    pub weight: u32,
    /// Requests in flight (a stream until its body ends); 0 for a group
    /// of one, which counts nothing.
    pub in_flight: u32,
    /// How many times the group picked it; 0 for a group of one.
    pub picks: u64,
    /// The latency estimate (time to the answer, or to a stream's first
    /// content), if it answered yet.
    pub latency: Option<Duration>,
    /// How long it is still skipped after a refusal, if it is.
    pub unavailable_for: Option<Duration>,
}

impl Group {
    pub(crate) fn snapshot<S>(&self, targets: &[crate::Target<S>]) -> GroupSnapshot {
        let members = &targets[self.start..self.start + self.len];
        let now = self.stats.as_ref().map_or(0, |s| s.now());
        let deployments = members
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let stats = self.stats.as_ref().and_then(|s| s.members.get(i));
                let until = stats.map_or(0, |d| {
                    d.blocked_until.load(std::sync::atomic::Ordering::Relaxed)
                });
                DeploymentSnapshot {
                    target: Arc::clone(&target.name),
                    weight: target.weight,
                    in_flight: stats.map_or(0, |d| {
                        d.in_flight.load(std::sync::atomic::Ordering::Relaxed)
                    }),
                    picks: stats.map_or(0, |d| d.picks.load(std::sync::atomic::Ordering::Relaxed)),
                    latency: stats.and_then(|d| d.latency.estimate(now)),
                    unavailable_for: (until > now).then(|| Duration::from_nanos(until - now)),
                }
            })
            .collect();
        GroupSnapshot {
            strategy: self.strategy,
            deployments,
        }
    }
}
