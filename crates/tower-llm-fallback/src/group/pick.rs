//! Which target a request goes to next: the groups in order, one member
//! of a group picked by its strategy.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tower_llm_classify::{ErrorKind, LlmError, Phase, RequestMeta};

use super::availability::{Availability, Candidate, CheckAvailability};
use super::stats::{GroupStats, UNKNOWN_WAIT, nanos};
use super::{Group, Strategy};
use crate::protocol::Protocol;
use crate::route::Route;
use crate::service::Shared;
use crate::target::Target;

/// Where a request is among a fallback's groups.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cursor {
    /// The next group to enter.
    next: usize,
    /// The group being served (once one was entered).
    group: usize,
    /// Its members already tried, as bits.
    tried: u64,
    /// Whether the last pick left no other member of its group available
    /// and untried (its group's last chance).
    alone: bool,
}

impl Cursor {
    /// Whether no target can come after the one just picked: the last
    /// group, every member of it tried.
    pub(crate) fn nothing_after<S>(&self, shared: &Shared<S>) -> bool {
        self.next >= shared.groups.len()
            && shared
                .groups
                .get(self.group)
                .is_none_or(|g| self.tried.count_ones() as usize >= g.len)
    }

    /// Whether the member just picked is the last its group has for the
    /// request: every other member was tried, or is unavailable.
    pub(crate) fn alone(&self) -> bool {
        self.alone
    }
}

/// The request a pick is for (its parts and body; `None` when they were
/// moved to the last target already).
pub(crate) type PickRequest<'a> = Option<(&'a http::request::Parts, &'a Bytes)>;

/// Moves `cursor` to the next target the route allows (`current` is set to
/// it): a member not yet tried of the group being served, else of the
/// groups after it. Members that are unavailable are skipped while any
/// available target is left; then the rest are taken as they come.
/// `false` when none is left.
pub(crate) fn pick<S>(
    shared: &Shared<S>,
    cursor: &mut Cursor,
    route: Route,
    too_small: Option<u64>,
    request: PickRequest<'_>,
    current: &mut usize,
) -> bool {
    let wanted = Wanted {
        route,
        too_small,
        protocol: request.and_then(|(parts, _)| parts.extensions.get::<Protocol>()),
        // Only a check asks for it.
        model: request
            .filter(|_| shared.check.is_some())
            .and_then(|(parts, _)| {
                parts
                    .extensions
                    .get::<RequestMeta>()
                    .and_then(|meta| meta.model.as_deref())
            }),
    };
    let from = *cursor;
    let picked = pass(shared, cursor, wanted, request, true).or_else(|| {
        *cursor = from;
        pass(shared, cursor, wanted, request, false)
    });
    match picked {
        Some(index) => {
            *current = index;
            true
        }
        None => false,
    }
}

/// One pass over the groups from `cursor`, skipping unavailable members
/// when `available_only`.
fn pass<S>(
    shared: &Shared<S>,
    cursor: &mut Cursor,
    wanted: Wanted<'_>,
    request: PickRequest<'_>,
    available_only: bool,
) -> Option<usize> {
    let choose = |cursor: &mut Cursor| {
        let group = shared.groups.get(cursor.group)?;
        let (member, others) =
            choose(shared, group, cursor.tried, wanted, request, available_only)?;
        cursor.tried |= 1 << member;
        cursor.alone = !others;
        Some(group.start + member)
    };
    if cursor.next > 0
        && let Some(index) = choose(cursor)
    {
        return Some(index);
    }
    while cursor.next < shared.groups.len() {
        cursor.group = cursor.next;
        cursor.next += 1;
        cursor.tried = 0;
        if let Some(index) = choose(cursor) {
            return Some(index);
        }
    }
    None
}

/// What a target must be to take the request: the route the last failure
/// set, the largest context window known too small, the protocol the
/// request names; and the model it asks for (both read once per pick).
#[derive(Clone, Copy)]
struct Wanted<'a> {
    route: Route,
    too_small: Option<u64>,
    protocol: Option<&'a Protocol>,
    model: Option<&'a str>,
}

/// Whether `target` may serve a failure routed `route`, in the protocol
/// the request names: once a request is known too long for a window, no
/// target with that window or a smaller one is tried again, whatever the
/// route.
fn eligible<S>(target: &Target<S>, wanted: Wanted<'_>) -> bool {
    let Wanted {
        route,
        too_small,
        protocol,
        ..
    } = wanted;
    if protocol.is_some_and(|p| *p != target.protocol) {
        return false;
    }
    let fits = match (target.context_window, too_small) {
        (Some(window), Some(small)) => window > small,
        _ => true,
    };
    fits && match route {
        Route::Next => !target.reserved,
        Route::LargerContext => target.larger_context,
        Route::ContentFilter => target.content_filter,
        Route::Stop => false,
    }
}

/// The clock, read at most once per pick and only when needed.
struct Clock<'a> {
    stats: &'a GroupStats,
    now: Option<u64>,
}

impl Clock<'_> {
    #[inline]
    fn now(&mut self) -> u64 {
        *self.now.get_or_insert_with(|| self.stats.now())
    }
}

/// The member of `group` to try (an index within the group), and whether
/// another member is left beside it: untried, eligible and, in the pass
/// over available members, available (the installed check asked only
/// when the member picked has a [`last_chance`](Target::last_chance),
/// which is what it decides).
fn choose<S>(
    shared: &Shared<S>,
    group: &Group,
    tried: u64,
    wanted: Wanted<'_>,
    request: PickRequest<'_>,
    available_only: bool,
) -> Option<(usize, bool)> {
    let members = &shared.targets[group.start..group.start + group.len];
    let Some(stats) = group.stats.as_deref() else {
        // A group of one: an ordinary target, as fallback always had.
        return (tried == 0 && eligible(&members[0], wanted)).then_some((0, false));
    };
    let mut clock = Clock { stats, now: None };
    let mut candidates: u64 = 0;
    for (i, target) in members.iter().enumerate() {
        if tried & (1 << i) != 0 || !eligible(target, wanted) {
            continue;
        }
        if available_only && stats.members[i].blocked(&mut || clock.now()) {
            continue;
        }
        candidates |= 1 << i;
    }
    // The installed check is asked of the member the strategy picks only
    // (one question per pick while members are available); a member it
    // refuses is left out and the strategy picks again among the rest.
    let member = loop {
        let count = candidates.count_ones() as usize;
        let member = match count {
            0 => return None,
            1 => candidates.trailing_zeros() as usize,
            _ => match group.strategy {
                Strategy::Latency => latency(shared, stats, candidates, count, |i| {
                    headroom(shared, &members[i], wanted, request)
                }),
                Strategy::LeastBusy => least_busy(shared, stats, candidates),
                Strategy::Weighted => weighted(shared, stats, candidates),
            },
        };
        candidates &= !(1 << member);
        if !available_only || checked(shared, &members[member], wanted, request) {
            break member;
        }
    };
    let deployment = &stats.members[member];
    deployment.picks.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "metrics")]
    deployment
        .counter
        .get_or_init(|| {
            metrics::counter!(
                "tower_llm_fallback_picks_total",
                "route" => shared.name.as_deref().unwrap_or("").to_owned(),
                "target" => members[member].name.to_string()
            )
        })
        .increment(1);
    let others = if available_only && members[member].last_chance.is_some() {
        // Stops at the first sibling the check lets through.
        (0..members.len())
            .filter(|i| candidates & (1 << i) != 0)
            .any(|i| checked(shared, &members[i], wanted, request))
    } else {
        candidates != 0
    };
    Some((member, others))
}

/// Asks the installed check (if any) about `target` taking the request.
#[inline]
fn ask<S, T>(
    shared: &Shared<S>,
    target: &Target<S>,
    wanted: Wanted<'_>,
    request: PickRequest<'_>,
    question: impl FnOnce(&dyn CheckAvailability, &Candidate<'_>) -> T,
) -> Option<T> {
    let (Some(check), Some((parts, body))) = (shared.check.as_ref(), request) else {
        return None;
    };
    let candidate = Candidate {
        target: &target.name,
        model: target.model.as_deref().or(wanted.model),
        request: parts,
        body,
    };
    Some(question(check.0.as_ref(), &candidate))
}

/// Whether the installed check (if any) lets `target` take the request.
#[inline]
fn checked<S>(
    shared: &Shared<S>,
    target: &Target<S>,
    wanted: Wanted<'_>,
    request: PickRequest<'_>,
) -> bool {
    ask(shared, target, wanted, request, |check, candidate| {
        check.check(candidate) == Availability::Available
    })
    .is_none_or(|verdict| verdict)
}

/// The share of its capacity the installed check says `target` has left,
/// if it says, never below 1 %: a member about to run out costs a
/// hundred times its latency, not an infinite amount.
#[inline]
fn headroom<S>(
    shared: &Shared<S>,
    target: &Target<S>,
    wanted: Wanted<'_>,
    request: PickRequest<'_>,
) -> Option<f64> {
    ask(shared, target, wanted, request, |check, candidate| {
        check.headroom(candidate)
    })
    .flatten()
    .map(|share| share.clamp(0.01, 1.0))
}

/// The `k`-th set bit of `mask` (0-based).
#[inline]
fn nth(mut mask: u64, k: usize) -> usize {
    for _ in 0..k {
        mask &= mask - 1;
    }
    mask.trailing_zeros() as usize
}

/// The power of two choices: two distinct candidates at random, the one
/// whose latency estimate times its requests in flight (plus one) is
/// lower (tower's `p2c::Balance` over `PeakEwma`). For a member whose
/// share of its rate limits left is known (`headroom`, which counts its
/// calls in flight against its own limit), the latency estimate divided
/// by that share instead: deployments with different limits are used in
/// proportion to them.
fn latency<S>(
    shared: &Shared<S>,
    stats: &GroupStats,
    candidates: u64,
    count: usize,
    headroom: impl Fn(usize) -> Option<f64>,
) -> usize {
    let random = shared.random();
    let first = (random as u32 as usize) % count;
    let mut second = ((random >> 32) as usize) % (count - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (nth(candidates, first), nth(candidates, second));
    let now = stats.latest();
    let cost = |i: usize| {
        let member = &stats.members[i];
        let pending = f64::from(member.in_flight.load(Ordering::Relaxed)) + 1.0;
        match headroom(i) {
            // What is in flight is already counted in what is left, over
            // the member's own limit: counting it again, unscaled, would
            // push a large deployment's load onto the small ones.
            Some(share) => member.latency.at(now) / share,
            None => member.latency.at(now) * pending,
        }
    };
    if cost(b) < cost(a) { b } else { a }
}

/// The candidate with the fewest requests in flight, looking from a
/// random member so that ties spread.
fn least_busy<S>(shared: &Shared<S>, stats: &GroupStats, candidates: u64) -> usize {
    let len = stats.members.len();
    let start = (shared.random() as usize) % len;
    let mut best = (u32::MAX, 0);
    for step in 0..len {
        let i = (start + step) % len;
        if candidates & (1 << i) == 0 {
            continue;
        }
        let busy = stats.members[i].in_flight.load(Ordering::Relaxed);
        if busy < best.0 || best.0 == u32::MAX {
            best = (busy, i);
        }
    }
    best.1
}

/// A candidate at random in proportion to its weight.
fn weighted<S>(shared: &Shared<S>, stats: &GroupStats, candidates: u64) -> usize {
    let mut mask = candidates;
    let mut total: u64 = 0;
    while mask != 0 {
        total += u64::from(stats.members[mask.trailing_zeros() as usize].weight);
        mask &= mask - 1;
    }
    let mut point = shared.random() % total.max(1);
    let mut mask = candidates;
    let mut last = candidates.trailing_zeros() as usize;
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        let weight = u64::from(stats.members[i].weight);
        if point < weight {
            return i;
        }
        point -= weight;
        last = i;
        mask &= mask - 1;
    }
    last
}

/// What a failure of target `index` teaches its group: a refusal by the
/// breaker (open: until its next probe; forced open: for a second) or a
/// rate limit with a wait (the breaker cools the key down for it) keeps it
/// out until then; a failure that reached the target counts as a slow
/// answer (twice the estimate at least), so that a member failing fast
/// does not look fast.
pub(crate) fn note_failure<S>(
    shared: &Shared<S>,
    index: usize,
    error: &LlmError,
    started: Option<u64>,
) {
    let Some((stats, member)) = shared.member(index) else {
        return;
    };
    let c = error.classification();
    let now = stats.now();
    let wait = match c.kind() {
        ErrorKind::CircuitOpen => Some(c.retry_after().unwrap_or(UNKNOWN_WAIT)),
        ErrorKind::RateLimited | ErrorKind::QuotaExhausted => c.retry_after(),
        _ => None,
    };
    if let Some(wait) = wait {
        member.block_until(now.saturating_add(nanos(wait)));
        return;
    }
    if let Some(started) = started
        && c.phase() != Phase::Local
    {
        let elapsed = now.saturating_sub(started);
        let doubled = (member.latency.at(now) * 2.0) as u64;
        stats.observe(member, elapsed.max(doubled), now);
    }
}
