//! The `Fallback` service and its builder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_llm_classify::{BoxError, LlmError};
use tower_service::Service;

use crate::body::FallbackBody;
use crate::future::ResponseFuture;
use crate::group::{
    CheckAvailability, Deployment, Group, GroupSnapshot, GroupStats, MAX_GROUP_SIZE, SharedCheck,
    Strategy,
};
use crate::route::RoutePolicy;
use crate::target::Target;

/// Sends a request to the first of its targets, and when that one fails in
/// a way another could serve, the same conversation to the next, rewritten
/// for it (URL, model, headers) with its own credentials.
///
/// Every target's service has the same type `S`: box them
/// (`tower::util::BoxCloneSyncService`: a served stream may be continued
/// from another task, so the services are `Send + Sync`) when they differ.
/// Readiness is asked of
/// each target's service when it is about to be called, so `poll_ready` of
/// the fallback itself is always ready.
///
/// # Clone
///
/// Cheap: the targets are in an `Arc`.
#[derive(Debug)]
pub struct Fallback<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for Fallback<S> {
    fn clone(&self) -> Self {
        Fallback {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared<S> {
    /// Every group's members in turn, groups in order.
    pub(crate) targets: Vec<Target<S>>,
    /// The groups, tried in order (a target added alone is a group of one).
    pub(crate) groups: Vec<Group>,
    /// The group of each target.
    pub(crate) group_of: Vec<usize>,
    /// The state of the picks' random numbers (SplitMix64).
    pub(crate) random: AtomicU64,
    /// What groups ask of a member before picking it.
    pub(crate) check: Option<SharedCheck>,
    /// The route this fallback serves, for metrics and reports.
    pub(crate) name: Option<Arc<str>>,
    pub(crate) routes: RoutePolicy,
    pub(crate) max_body: usize,
    pub(crate) hedge: Option<HedgePolicy>,
    /// Calls that could have hedged, and hedges sent: the hedging budget.
    pub(crate) hedge_calls: AtomicU64,
    pub(crate) hedges: AtomicU64,
    /// How many times a broken stream may be continued.
    pub(crate) continuations: u32,
    /// Whether target requests say how to remake their heads (`Remake`).
    pub(crate) remake_attempts: bool,
    /// Each target's refusals of continuations (see [`PrefillRefusals`]).
    pub(crate) prefill_refused: Vec<PrefillRefusals>,
}

/// Refusals in a row after which a target is not asked to continue a
/// stream for [`PREFILL_SKIP`].
const PREFILL_REFUSALS_IN_A_ROW: u32 = 3;

/// How long a target that refused [`PREFILL_REFUSALS_IN_A_ROW`]
/// continuations in a row is left out of continuations.
pub(crate) const PREFILL_SKIP: Duration = Duration::from_secs(600);

/// What a target's answers to continuations said. A refusal (400) may be
/// the target's (no prefill at all) or one request's (what it asked for
/// forbids one, such as Anthropic's extended thinking): one refusal leaves
/// the target out of nothing; a few in a row, with none accepted between,
/// leave it out for a while, after which it is asked again. (It was left
/// out for the life of the process at its first refusal: one caller's
/// request turned continuation off for every caller.)
#[derive(Debug, Default)]
pub(crate) struct PrefillRefusals(std::sync::Mutex<(u32, Option<tokio::time::Instant>)>);

impl PrefillRefusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, Option<tokio::time::Instant>)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The calls the hedging budget looks back over, roughly: its counts are
/// halved once the calls reach twice this, so a slow spell after a quiet
/// run can hedge at most about `2 × ratio × HEDGE_WINDOW` calls in a row.
pub(crate) const HEDGE_WINDOW: u64 = 100;

/// When to send a hedge and how many.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HedgePolicy {
    pub(crate) delay: Duration,
    pub(crate) ratio: f64,
}

impl<S> Shared<S> {
    /// A random number for a pick: SplitMix64 over a shared counter (one
    /// atomic add; the sequence is the seed's, whatever the threads).
    #[inline]
    pub(crate) fn random(&self) -> u64 {
        let mut z = self
            .random
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Target `index`'s group state and its place in it, when it is in a
    /// group of two or more.
    pub(crate) fn member(&self, index: usize) -> Option<(&GroupStats, &Deployment)> {
        let group = self.groups.get(*self.group_of.get(index)?)?;
        let stats = group.stats.as_deref()?;
        Some((stats, stats.members.get(index - group.start)?))
    }

    /// Whether target `index` is left out of continuations now, having
    /// refused the last few.
    pub(crate) fn refuses_prefill(&self, index: usize) -> bool {
        self.prefill_refused.get(index).is_some_and(|refusals| {
            refusals
                .lock()
                .1
                .is_some_and(|until| tokio::time::Instant::now() < until)
        })
    }

    /// Target `index` refused a continuation: after a few in a row, it is
    /// left out of them for [`PREFILL_SKIP`].
    pub(crate) fn mark_refuses_prefill(&self, index: usize) {
        if let Some(refusals) = self.prefill_refused.get(index) {
            let mut refusals = refusals.lock();
            refusals.0 += 1;
            if refusals.0 >= PREFILL_REFUSALS_IN_A_ROW {
                *refusals = (0, Some(tokio::time::Instant::now() + PREFILL_SKIP));
            }
        }
    }

    /// Target `index` continued a stream: its refusals start again.
    pub(crate) fn mark_accepts_prefill(&self, index: usize) {
        if let Some(refusals) = self.prefill_refused.get(index) {
            refusals.lock().0 = 0;
        }
    }

    /// Counts a call that could hedge. The budget is of the recent calls:
    /// both counts are halved each time the calls reach
    /// [`HEDGE_WINDOW`] twice over, so that a long quiet run saves no
    /// credit for a later slow spell (a million quiet calls at a 10 %
    /// ratio had allowed the next hundred thousand to hedge, every one).
    pub(crate) fn count_hedge_call(&self) {
        let calls = self.hedge_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if calls >= 2 * HEDGE_WINDOW {
            // Two calls may both see the threshold: each halves what is
            // there when it runs, which only makes the budget stricter.
            let _ = self
                .hedge_calls
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c / 2));
            let _ = self
                .hedges
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| Some(h / 2));
        }
    }

    /// Takes a hedge from the budget: at most `ratio` hedges per recent
    /// call that could have hedged.
    pub(crate) fn take_hedge(&self, policy: &HedgePolicy) -> bool {
        let calls = self.hedge_calls.load(Ordering::Relaxed) as f64;
        self.hedges
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                ((h as f64) < policy.ratio * calls).then_some(h + 1)
            })
            .is_ok()
    }
}

/// Builds a [`Fallback`] over targets in order.
///
/// ```
/// use tower_llm_fallback::{Fallback, Target};
///
/// let fallback = Fallback::builder()
///     .target(Target::new("primary", ()))
///     .target(Target::new("backup", ()).model("llama3.2"))
///     .build()
///     .unwrap();
/// assert_eq!(fallback.target_names(), ["primary", "backup"]);
/// ```
#[derive(Debug)]
pub struct FallbackBuilder<S> {
    targets: Vec<Target<S>>,
    /// Each group's strategy and size, in order.
    groups: Vec<(Strategy, usize)>,
    check: Option<SharedCheck>,
    name: Option<Arc<str>>,
    seed: Option<u64>,
    routes: RoutePolicy,
    max_body: usize,
    continuations: u32,
    hedge: Option<HedgePolicy>,
    remake_attempts: bool,
}

impl Fallback<()> {
    /// A builder.
    pub fn builder<S>() -> FallbackBuilder<S> {
        FallbackBuilder {
            targets: Vec::new(),
            groups: Vec::new(),
            check: None,
            name: None,
            seed: None,
            routes: RoutePolicy {
                on_authentication: true,
                on_invalid_request: false,
            },
            max_body: 32 * 1024 * 1024,
            continuations: 0,
            hedge: None,
            remake_attempts: false,
        }
    }
}

impl<S> Fallback<S> {
    /// The targets' names, in order.
    pub fn target_names(&self) -> Vec<&str> {
        self.shared.targets.iter().map(|t| &*t.name).collect()
    }

    /// The [`Protocol`](crate::Protocol) every target speaks, when they all
    /// speak one: a request for it may then name it in its extensions or
    /// not, and go to the same targets.
    pub fn common_protocol(&self) -> Option<crate::Protocol> {
        let mut targets = self.shared.targets.iter().map(Target::speaks);
        let first = targets.next()?;
        targets.all(|p| p == first).then_some(first)
    }

    /// The groups, in order, with what each knows of its members (a
    /// target added alone is a group of one).
    pub fn groups(&self) -> Vec<GroupSnapshot> {
        self.shared
            .groups
            .iter()
            .map(|group| group.snapshot(&self.shared.targets))
            .collect()
    }

    /// The name given with [`FallbackBuilder::name`].
    pub fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// The name of the target a request's first attempt would go to,
    /// picked as a call picks it (and counted as a pick), without calling
    /// it: for the benches, which measure a pick alone.
    #[doc(hidden)]
    pub fn pick_first(&self, parts: &http::request::Parts, body: &Bytes) -> Option<&str> {
        let mut cursor = crate::group::Cursor::default();
        let mut current = 0;
        crate::group::pick(
            &self.shared,
            &mut cursor,
            crate::route::Route::Next,
            None,
            Some((parts, body)),
            &mut current,
        )
        .then(|| &*self.shared.targets[current].name)
    }
}

impl<S> FallbackBuilder<S> {
    /// Adds a target after the others: a group of one, tried as it comes.
    pub fn target(mut self, target: Target<S>) -> Self {
        self.targets.push(target);
        self.groups.push((Strategy::default(), 1));
        self
    }

    /// Adds a group of equivalent targets after the others (the same model
    /// on several keys, regions or providers): each request tries one
    /// member picked by `strategy` among those available, then, if it
    /// fails, another, before the next group (see [`group`](crate::group)).
    /// A group of one is [`target`](Self::target).
    ///
    /// ```
    /// use tower_llm_fallback::{Fallback, Strategy, Target};
    ///
    /// let fallback = Fallback::builder()
    ///     .group(Strategy::Weighted, [
    ///         Target::new("reserved", ()).weight(3),
    ///         Target::new("paygo", ()),
    ///     ])
    ///     .target(Target::new("local", ()).model("llama3.2"))
    ///     .build()
    ///     .unwrap();
    /// let groups = fallback.groups();
    /// assert_eq!(groups[0].strategy, Strategy::Weighted);
    /// assert_eq!(groups[0].deployments[0].weight, 3);
    /// assert_eq!(groups[1].deployments[0].target.as_ref(), "local");
    /// ```
    pub fn group(
        mut self,
        strategy: Strategy,
        targets: impl IntoIterator<Item = Target<S>>,
    ) -> Self {
        let before = self.targets.len();
        self.targets.extend(targets);
        self.groups.push((strategy, self.targets.len() - before));
        self
    }

    /// What every group of two or more asks of a member before picking it
    /// (see [`CheckAvailability`]), besides skipping those the layers below
    /// refused lately.
    pub fn check_availability(mut self, check: Arc<dyn CheckAvailability>) -> Self {
        self.check = Some(SharedCheck(check));
        self
    }

    /// The route this fallback serves (a model, `gpt-4o*`): the `route`
    /// label of the picks counted with the `metrics` feature.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Seeds the random numbers of the groups' picks, so that a run can be
    /// repeated (by default, a seed of its own for each fallback).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether a 401 from a target moves on (on by default: the caller's
    /// credentials never reach a target, so a 401 is about that target's
    /// own key, which says nothing of the others).
    pub fn move_on_authentication(mut self, on: bool) -> Self {
        self.routes.on_authentication = on;
        self
    }

    /// Whether an invalid request moves on (off by default: it would fail
    /// everywhere).
    pub fn move_on_invalid_request(mut self, on: bool) -> Self {
        self.routes.on_invalid_request = on;
        self
    }

    /// Continues a streamed answer that breaks after content, up to
    /// `times` times (0, the default: never): the same request with the
    /// text the caller holds as the assistant's partial answer, to the
    /// same target when the failure may pass there, else to the next that
    /// can continue ([`Target::continuation`]); the rest is spliced into
    /// the caller's stream (see [`continuation`](crate::continuation)).
    /// Needs Classify below each target, capturing what streams deliver.
    pub fn continue_streams(mut self, times: u32) -> Self {
        self.continuations = times;
        self
    }

    /// Hedging: when the first target has not answered (for a guarded
    /// stream: sent its first content) after `delay`, the next target gets
    /// the same request too; whichever answers first is used and the other
    /// is cancelled. At most `ratio` of the recent calls (a few hundred)
    /// hedge (the hedging budget,
    /// so a slow provider cannot double the load; Dean & Barroso's hedged
    /// requests cost ~2 % more at the 95th-percentile delay).
    pub fn hedge(mut self, delay: Duration, ratio: f64) -> Self {
        self.hedge = Some(HedgePolicy { delay, ratio });
        self
    }

    /// Says, on the request for each target another may follow, how to
    /// make its head again ([`Remake`](tower_llm_classify::replay::Remake)),
    /// so that a retry layer serving the target sends that request as its
    /// first attempt and remakes the head of each further one, instead of
    /// keeping a copy: one copy of the caller's head before the first
    /// attempt instead of two (off by default; `LlmStack` turns it on).
    ///
    /// Only where each target's service passes the request on to its retry
    /// layer unchanged (the retry directly, or layers that do not touch the
    /// request): a layer between the two that changes the request would see
    /// its change in the first attempt only. Targets with a
    /// [request hook](Target::adapt) never remake (the hook runs
    /// once per target).
    pub fn remake_attempts(mut self, on: bool) -> Self {
        self.remake_attempts = on;
        self
    }

    /// The largest request body kept to send again (32 MiB by default).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Checks the targets: at least one, names unique, base URLs absolute,
    /// and no credential without a base URL (it would go wherever the
    /// caller's request pointed).
    pub fn build(self) -> Result<Fallback<S>, crate::ConfigError> {
        if self.targets.is_empty() {
            return Err(crate::ConfigError(
                "a fallback needs at least one target".into(),
            ));
        }
        for (i, target) in self.targets.iter().enumerate() {
            if self.targets[..i].iter().any(|t| t.name == target.name) {
                return Err(crate::ConfigError(format!(
                    "two targets are named `{}`",
                    target.name
                )));
            }
            if let Some(base) = &target.base
                && (base.scheme().is_none() || base.authority().is_none())
            {
                return Err(crate::ConfigError(format!(
                    "target `{}`: base URL `{base}` needs a scheme and a host",
                    target.name
                )));
            }
            if target.credential.is_some() && target.base.is_none() {
                return Err(crate::ConfigError(format!(
                    "target `{}` has a credential but no base URL: its key would go to whatever host the request names",
                    target.name
                )));
            }
        }
        if let Some(hedge) = self.hedge
            && !(hedge.ratio.is_finite() && (0.0..=1.0).contains(&hedge.ratio))
        {
            return Err(crate::ConfigError(format!(
                "hedging ratio must be between 0 and 1, not {}",
                hedge.ratio
            )));
        }
        let mut groups = Vec::with_capacity(self.groups.len());
        let mut group_of = Vec::with_capacity(self.targets.len());
        let epoch = tokio::time::Instant::now();
        let mut start = 0;
        for (strategy, len) in &self.groups {
            let members = &self.targets[start..start + len];
            let first = members.first().map_or("", |t| &*t.name).to_owned();
            if members.is_empty() {
                return Err(crate::ConfigError(
                    "a group needs at least one target".into(),
                ));
            }
            if *len > MAX_GROUP_SIZE {
                return Err(crate::ConfigError(format!(
                    "the group of `{first}` has {len} targets; a group may have {MAX_GROUP_SIZE}"
                )));
            }
            if let Some(zero) = members.iter().find(|t| t.weight == 0) {
                return Err(crate::ConfigError(format!(
                    "target `{}`: weight 0 would never be picked; leave it out of the group",
                    zero.name
                )));
            }
            let stats = (*len > 1).then(|| {
                Arc::new(GroupStats {
                    epoch,
                    members: members.iter().map(|t| Deployment::new(t.weight)).collect(),
                    latest: AtomicU64::new(0),
                })
            });
            group_of.extend(std::iter::repeat_n(groups.len(), *len));
            groups.push(Group {
                start,
                len: *len,
                strategy: *strategy,
                stats,
            });
            start += len;
        }
        let seed = self.seed.unwrap_or_else(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(epoch)
        });
        let prefill_refused = self
            .targets
            .iter()
            .map(|_| PrefillRefusals::default())
            .collect();
        Ok(Fallback {
            shared: Arc::new(Shared {
                prefill_refused,
                groups,
                group_of,
                random: AtomicU64::new(seed),
                check: self.check,
                name: self.name,
                continuations: self.continuations,
                remake_attempts: self.remake_attempts,
                targets: self.targets,
                routes: self.routes,
                max_body: self.max_body,
                hedge: self.hedge,
                hedge_calls: AtomicU64::new(0),
                hedges: AtomicU64::new(0),
            }),
        })
    }
}

impl<S, B, RB> Service<Request<B>> for Fallback<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<LlmError>,
    B: Body,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<LlmError>,
{
    type Response = Response<FallbackBody<RB>>;
    type Error = LlmError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::new(Arc::clone(&self.shared), request)
    }
}
