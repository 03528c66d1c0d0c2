//! One key's view of its rate limits: what its last answer said is left,
//! what is in flight since, and the configured per-minute windows. Pure:
//! every method takes the time, in the registry's clock.

use std::collections::VecDeque;
use std::time::Duration;

use tower_llm_classify::hint::{RateLimitBucket, RateLimitHeaders};

use super::config::PaceLimits;

/// The window of configured limits: per minute, as the providers state
/// them. It slides: LiteLLM's router counts a deployment's `rpm`/`tpm` in
/// fixed minute windows (`litellm/router_strategy/lowest_tpm_rpm_v2.py`),
/// which lets twice the limit through across a window's edge; a log of
/// the last minute's calls never sends more than the limit in any minute,
/// so a provider counting in fixed windows, sliding ones or token buckets
/// of that size never refuses what it lets through.
pub(crate) const MINUTE: Duration = Duration::from_secs(60);

/// The log counts calls per second: a key holds at most 61 entries
/// whatever its rate, and a call is taken to leave the minute at the end
/// of its second's (never early; at most a second late).
const SLOT: Duration = Duration::from_secs(1);

/// One second of the log: its start, and the calls and tokens admitted
/// in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    start: Duration,
    calls: u64,
    tokens: u64,
}

impl Slot {
    /// When its calls have all left the minute.
    fn leaves(&self) -> Duration {
        self.start.saturating_add(SLOT).saturating_add(MINUTE)
    }
}

/// A bucket as the last applied answer reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    remaining: u64,
    limit: Option<u64>,
    /// When it is full again, in the registry's time.
    reset_at: Duration,
    /// When it was reported.
    at: Duration,
}

impl Bucket {
    /// A reported bucket received at `now`; none without a reset (nothing
    /// says when it refills, so nothing can be waited for).
    fn from_report(report: RateLimitBucket, now: Duration) -> Option<Bucket> {
        Some(Bucket {
            remaining: report.remaining,
            limit: report.limit,
            reset_at: now.saturating_add(report.reset?),
            at: now,
        })
    }

    /// When `need` fits, or `None` when it fits at `now`. What was
    /// reported left stays until the reset; with `continuous` and a known
    /// limit it grows at an even pace from `remaining` when reported to
    /// the limit at the reset, as a token bucket refills (Anthropic:
    /// "your capacity is continuously replenished up to your maximum
    /// limit", docs.claude.com/en/api/rate-limits; OpenAI's reset is the
    /// time until the bucket is full).
    fn fits_at(&self, need: u64, now: Duration, continuous: bool) -> Option<Duration> {
        if self.remaining >= need {
            return None;
        }
        let span = self.reset_at.saturating_sub(self.at);
        let Some(limit) = self.limit.filter(|limit| {
            continuous && *limit > self.remaining && need <= *limit && !span.is_zero()
        }) else {
            return Some(self.reset_at);
        };
        let share = (need - self.remaining) as f64 / (limit - self.remaining) as f64;
        // Rounded up to the millisecond: never before it has refilled.
        let refilled = Duration::from_millis((span.as_secs_f64() * share * 1000.0).ceil() as u64);
        let at = self.at.saturating_add(refilled).min(self.reset_at);
        (at > now).then_some(at)
    }
}

impl Bucket {
    /// What is left at `now`, before what is in flight: what was
    /// reported, grown toward the limit as [`fits_at`](Self::fits_at)
    /// lets it with `continuous`.
    fn left_at(&self, now: Duration, continuous: bool) -> u64 {
        let span = self.reset_at.saturating_sub(self.at);
        match self.limit {
            Some(limit) if continuous && limit > self.remaining && !span.is_zero() => {
                let passed = now.saturating_sub(self.at).min(span);
                let grown =
                    (limit - self.remaining) as f64 * passed.as_secs_f64() / span.as_secs_f64();
                self.remaining.saturating_add(grown as u64).min(limit)
            }
            _ => self.remaining,
        }
    }
}

/// Requests and tokens: what is left and when each bucket is full again
/// (in the registry's time), as replicas share them.
pub(crate) type Buckets = [Option<(u64, Duration)>; 2];

/// What admitting a call reserved, handed back when it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The order of admission: an answer to an older call than the last
    /// applied one says less about what is left (see [`View::answered`]).
    seq: u64,
    tokens: u64,
}

/// One key's view.
#[derive(Debug, Default)]
pub(crate) struct View {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// Calls admitted and not answered yet, and their estimated tokens:
    /// a reported `remaining` does not count them.
    in_flight: u64,
    in_flight_tokens: u64,
    next_seq: u64,
    /// The admission order of the call whose answer was last applied.
    applied_seq: u64,
    /// The configured limits' window: the calls of the last minute, when
    /// each was admitted and its estimated tokens, oldest first.
    log: VecDeque<Slot>,
    /// The calls and tokens in `log`.
    log_calls: u64,
    log_tokens: u64,
    /// Whether what is left refills at an even pace until the reset
    /// ([`Bucket::fits_at`]).
    continuous: bool,
}

impl View {
    /// An empty view; `continuous`: see [`Bucket::fits_at`].
    pub(crate) fn new(continuous: bool) -> Self {
        View {
            continuous,
            ..View::default()
        }
    }

    /// Forgets buckets whose reset has passed: they are full again, and
    /// the next answer says how full.
    fn expire(&mut self, now: Duration) {
        for bucket in [&mut self.requests, &mut self.tokens] {
            if bucket.is_some_and(|b| b.reset_at <= now) {
                *bucket = None;
            }
        }
        while let Some(slot) = self.log.front()
            && slot.leaves() <= now
        {
            self.log_calls = self.log_calls.saturating_sub(slot.calls);
            self.log_tokens = self.log_tokens.saturating_sub(slot.tokens);
            self.log.pop_front();
        }
    }

    /// When enough of the log has left for `needed` more of what `of`
    /// counts (calls or tokens).
    fn freed(&self, needed: u64, of: impl Fn(&Slot) -> u64) -> Duration {
        let mut freed = 0_u64;
        for slot in &self.log {
            freed = freed.saturating_add(of(slot));
            if freed >= needed {
                return slot.leaves();
            }
        }
        self.log.back().map_or(Duration::ZERO, Slot::leaves)
    }

    /// How long a call costing `tokens` must wait before its key can take
    /// it, or `None` when it can be sent now: the headers' buckets first,
    /// the configured limits for what they do not report.
    fn wait(&mut self, now: Duration, tokens: u64, limits: Option<PaceLimits>) -> Option<Duration> {
        self.expire(now);
        let mut wait: Option<Duration> = None;
        let mut refuse = |until: Duration| {
            let w = until.saturating_sub(now);
            wait = Some(wait.map_or(w, |x| x.max(w)));
        };
        let continuous = self.continuous;
        if let Some(b) = self.requests
            && let Some(at) = b.fits_at(self.in_flight.saturating_add(1), now, continuous)
        {
            refuse(at);
        }
        // A request larger than the whole bucket never fits: it is sent,
        // and the provider says so (OpenAI's "Request too large").
        if let Some(b) = self.tokens
            && b.limit.is_none_or(|limit| tokens <= limit)
            && let Some(at) = b.fits_at(
                self.in_flight_tokens.saturating_add(tokens),
                now,
                continuous,
            )
        {
            refuse(at);
        }
        if let Some(limits) = limits {
            if self.requests.is_none()
                && let Some(rpm) = limits.rpm
                && self.log_calls >= rpm
            {
                // Room for one more once all but `rpm - 1` have left.
                refuse(self.freed(self.log_calls + 1 - rpm, |s| s.calls));
            }
            // A configured limit is the gateway's own for a target that
            // reports none and refuses nothing (a local model): a call
            // larger than the minute's tokens takes the whole minute
            // (it waits for it to be clear), so that stating a larger
            // `max_tokens` never buys more.
            let used = self.log_tokens;
            if self.tokens.is_none()
                && let Some(tpm) = limits.tpm
                && used.saturating_add(tokens.min(tpm)) > tpm
            {
                refuse(self.freed(used.saturating_add(tokens.min(tpm)) - tpm, |s| s.tokens));
            }
        }
        wait
    }

    /// Whether a call costing `tokens` is larger than the provider's
    /// whole tokens bucket, as its headers report it: the provider refuses
    /// such a call without counting it.
    fn never_fits(&self, tokens: u64) -> bool {
        self.tokens
            .is_some_and(|b| b.limit.is_some_and(|limit| tokens > limit))
    }

    /// The share of its limits the key has left at `now` for more calls,
    /// from 0 to 1: the tightest of its buckets whose limit is known (what
    /// is left less what is in flight, over the limit) and its configured
    /// limits' last minute. `None` when nothing gives a limit. A picker
    /// weighs deployments with it, so that each is used in proportion to
    /// its limits rather than until it runs out.
    pub(crate) fn headroom(&mut self, now: Duration, limits: Option<PaceLimits>) -> Option<f64> {
        self.expire(now);
        let continuous = self.continuous;
        let share = |left: u64, used: u64, limit: u64| {
            (limit > 0).then(|| left.saturating_sub(used) as f64 / limit as f64)
        };
        let mut tightest: Option<f64> = None;
        let mut take = |share: Option<f64>| {
            if let Some(share) = share {
                tightest = Some(tightest.map_or(share, |t| t.min(share)).clamp(0.0, 1.0));
            }
        };
        if let Some(b) = self.requests {
            take(
                b.limit
                    .and_then(|limit| share(b.left_at(now, continuous), self.in_flight, limit)),
            );
        }
        if let Some(b) = self.tokens {
            take(
                b.limit.and_then(|limit| {
                    share(b.left_at(now, continuous), self.in_flight_tokens, limit)
                }),
            );
        }
        if let Some(limits) = limits {
            if self.requests.is_none()
                && let Some(rpm) = limits.rpm
            {
                take(share(rpm, self.log_calls, rpm));
            }
            if self.tokens.is_none()
                && let Some(tpm) = limits.tpm
            {
                take(share(tpm, self.log_tokens, tpm));
            }
        }
        tightest
    }

    /// key can take it.
    pub(crate) fn admit(
        &mut self,
        now: Duration,
        tokens: u64,
        limits: Option<PaceLimits>,
    ) -> Result<Admitted, Duration> {
        if let Some(wait) = self.wait(now, tokens, limits) {
            return Err(wait);
        }
        // A call larger than the provider's whole tokens bucket is sent so
        // that the provider says so (OpenAI's 429 "Request too large", a
        // payload too large here), and the provider counts none of it: it
        // holds none of the key's tokens. Holding its estimate (a caller's
        // `max_tokens` can be anything) would refuse every other caller's
        // call while it is in flight. Under a configured limit (no
        // provider to refuse it), it holds the whole minute and no more.
        let tokens = if self.never_fits(tokens) {
            0
        } else {
            limits
                .and_then(|limits| limits.tpm)
                .filter(|_| self.tokens.is_none())
                .map_or(tokens, |tpm| tokens.min(tpm))
        };
        self.in_flight += 1;
        self.in_flight_tokens = self.in_flight_tokens.saturating_add(tokens);
        if limits.is_some() {
            let start = Duration::from_secs(now.as_secs());
            match self.log.back_mut() {
                Some(slot) if slot.start == start => {
                    slot.calls += 1;
                    slot.tokens = slot.tokens.saturating_add(tokens);
                }
                _ => self.log.push_back(Slot {
                    start,
                    calls: 1,
                    tokens,
                }),
            }
            self.log_calls += 1;
            self.log_tokens = self.log_tokens.saturating_add(tokens);
        }
        self.next_seq += 1;
        Ok(Admitted {
            seq: self.next_seq,
            tokens,
        })
    }

    /// How long the key is paced out for a call costing `tokens`, without
    /// admitting one.
    pub(crate) fn paced_for(
        &mut self,
        now: Duration,
        tokens: u64,
        limits: Option<PaceLimits>,
    ) -> Option<Duration> {
        self.wait(now, tokens, limits)
    }

    /// A call's answer (or its end without one): its reservation is
    /// handed back, and what its headers report replaces the view.
    ///
    /// An answer to a call admitted before the one last applied (answers
    /// may come back out of order; a call admitted before the key was
    /// paced counts as the oldest) was counted by the provider earlier,
    /// so its `remaining` may be higher than what is left now: it can
    /// only lower the view, never raise it.
    pub(crate) fn answered(
        &mut self,
        admitted: Option<Admitted>,
        report: Option<&RateLimitHeaders>,
        now: Duration,
    ) {
        if let Some(a) = admitted {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.in_flight_tokens = self.in_flight_tokens.saturating_sub(a.tokens);
        }
        let Some(report) = report else {
            return;
        };
        self.expire(now);
        let seq = admitted.map_or(0, |a| a.seq);
        let newer = seq >= self.applied_seq;
        if newer {
            self.applied_seq = seq;
        }
        for (bucket, reported) in [
            (&mut self.requests, report.requests),
            (&mut self.tokens, report.tokens),
        ] {
            let Some(new) = reported.and_then(|r| Bucket::from_report(r, now)) else {
                continue;
            };
            *bucket = match *bucket {
                Some(old) if !newer => Some(Bucket {
                    remaining: old.remaining.min(new.remaining),
                    ..old
                }),
                _ => Some(new),
            };
        }
    }

    /// The buckets not yet full again at `now`: requests and tokens left,
    /// and when each is full (in the registry's time), to share.
    pub(crate) fn buckets(&mut self, now: Duration) -> Buckets {
        self.expire(now);
        [self.requests, self.tokens].map(|b| b.map(|b| (b.remaining, b.reset_at)))
    }

    /// Another replica's buckets (what is left, when full again, in the
    /// registry's time): each held one becomes the tighter of the two —
    /// the least left, until the later reset — and one not held is taken
    /// as it is. Never looser than what is held; `true` if it tightened
    /// something.
    pub(crate) fn apply(&mut self, buckets: Buckets, now: Duration) -> bool {
        self.expire(now);
        let mut changed = false;
        for (held, shared) in [&mut self.requests, &mut self.tokens]
            .into_iter()
            .zip(buckets)
        {
            let Some((remaining, reset_at)) = shared.filter(|(_, at)| *at > now) else {
                continue;
            };
            let tighter = match *held {
                None => Bucket {
                    remaining,
                    limit: None,
                    reset_at,
                    at: now,
                },
                Some(old) => Bucket {
                    remaining: old.remaining.min(remaining),
                    limit: old.limit,
                    reset_at: old.reset_at.max(reset_at),
                    at: old.at,
                },
            };
            changed |= *held != Some(tighter);
            *held = Some(tighter);
        }
        changed
    }

    /// What the view holds, for a snapshot: requests and tokens left and
    /// the time until each is full again.
    pub(crate) fn report(&self, now: Duration) -> ViewReport {
        let left = |b: Option<Bucket>| {
            b.filter(|b| b.reset_at > now)
                .map(|b| (b.remaining, b.reset_at.saturating_sub(now)))
        };
        ViewReport {
            requests: left(self.requests),
            tokens: left(self.tokens),
            in_flight: self.in_flight,
        }
    }

    /// Whether the view holds nothing worth keeping at `now`.
    pub(crate) fn idle(&self, now: Duration) -> bool {
        self.in_flight == 0
            && self.requests.is_none_or(|b| b.reset_at <= now)
            && self.tokens.is_none_or(|b| b.reset_at <= now)
            && self.log.back().is_none_or(|slot| slot.leaves() <= now)
    }
}

/// A view's figures at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViewReport {
    pub(crate) requests: Option<(u64, Duration)>,
    pub(crate) tokens: Option<(u64, Duration)>,
    pub(crate) in_flight: u64,
}

#[cfg(test)]
mod tests;
