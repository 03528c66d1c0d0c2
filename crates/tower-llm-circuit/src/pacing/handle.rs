//! What pacing shows: for a picker choosing among deployments, and for a
//! status page.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::view::ViewReport;
use crate::CircuitHandle;

/// One key's pacing at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacingSnapshot {
    /// The key.
    pub key: Arc<str>,
    /// Requests its last answer said were left, and the time until that
    /// bucket is full again; `None` when no answer said, or its reset has
    /// passed.
    pub requests: Option<(u64, Duration)>,
    /// Tokens left and the time until full again, likewise.
    pub tokens: Option<(u64, Duration)>,
    /// Calls sent and not answered yet (not counted in what is left).
    pub in_flight: u64,
    /// How long a call of one token would be refused from now; `None`
    /// when it would be sent.
    pub paced_for: Option<Duration>,
}

impl PacingSnapshot {
    pub(crate) fn new(key: &str, report: ViewReport, paced_for: Option<Duration>) -> Self {
        PacingSnapshot {
            key: Arc::from(key),
            requests: report.requests,
            tokens: report.tokens,
            in_flight: report.in_flight,
            paced_for,
        }
    }
}

impl CircuitHandle {
    /// How long calls to `key` are paced out from now: `Some(wait)` when
    /// its rate-limit headers (or its configured limits) say a call sent
    /// now would be refused, until the reset that ends it; `None` when a
    /// call would be sent. For a picker that skips a deployment whose key
    /// has nothing left, as it skips an open or cooling-down one.
    ///
    /// ```
    /// use tower_llm_circuit::CircuitLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = CircuitLayer::default().handle();
    /// assert_eq!(handle.paced_for("primary/gpt-4o"), None);
    /// # }
    /// ```
    pub fn paced_for(&self, key: &str) -> Option<Duration> {
        self.paced_for_tokens(key, 1)
    }

    /// As [`paced_for`](Self::paced_for), for a call estimated to cost
    /// `tokens` ([`RequestMeta::estimated_tokens`](tower_llm_classify::RequestMeta::estimated_tokens)).
    pub fn paced_for_tokens(&self, key: &str, tokens: u64) -> Option<Duration> {
        let registry = self.registry();
        registry.pacing.paced_for(key, tokens, || registry.now())
    }

    /// Whether any key may be paced at all: limits are configured, or
    /// some answer carried rate-limit headers. While none may, every
    /// [`paced_for`](Self::paced_for) is `None` and every
    /// [`headroom`](Self::headroom) too, and a picker asking about many
    /// candidates can skip building their keys.
    ///
    /// ```
    /// use tower_llm_circuit::{CircuitConfig, CircuitLayer, PaceLimits, PacingConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// assert!(!CircuitLayer::default().handle().paces_any());
    /// let limited = CircuitConfig::standard()
    ///     .to_builder()
    ///     .pacing(PacingConfig::default().default_limit(PaceLimits::rpm(60)))
    ///     .build()
    ///     .unwrap();
    /// assert!(CircuitLayer::new(limited).handle().paces_any());
    /// # }
    /// ```
    #[inline]
    pub fn paces_any(&self) -> bool {
        self.registry().pacing.active()
    }

    /// The share of its rate limits `key` has left for more calls, from
    /// 0 (none) to 1 (all): what its last answer's headers said is left
    /// (refilled toward the limit with
    /// [`continuous_refill`](crate::PacingConfig::continuous_refill)), less
    /// what is in flight since, over the limit the headers give; the
    /// tightest of requests and tokens, and of configured limits for what
    /// the headers do not report. `None` when nothing gives a limit (no
    /// headers with a limit seen, none configured). A deployment group
    /// weighs its members with it, so that each is used in proportion to
    /// its limits instead of until it runs out.
    ///
    /// ```
    /// use tower_llm_circuit::CircuitLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let handle = CircuitLayer::default().handle();
    /// assert_eq!(handle.headroom("primary/gpt-4o"), None);
    /// # }
    /// ```
    pub fn headroom(&self, key: &str) -> Option<f64> {
        let registry = self.registry();
        registry.pacing.headroom(key, || registry.now())
    }

    /// `key`'s pacing, if its answers have carried rate-limit headers or
    /// it has configured limits.
    pub fn pacing(&self, key: &str) -> Option<PacingSnapshot> {
        let registry = self.registry();
        registry.pacing.snapshot(key, registry.now())
    }
}

/// One bucket of a key's rate limits as replicas share it: what is left,
/// and when it is full again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaceBucket {
    /// Requests (or tokens) left.
    pub remaining: u64,
    /// When the bucket is full again (Tokio's clock; what crosses between
    /// processes is the sharer's business, as with
    /// [`KeyDecision`](crate::KeyDecision)).
    pub full_at: Instant,
}

impl PaceBucket {
    /// `remaining` left until `full_at`.
    pub fn new(remaining: u64, full_at: Instant) -> Self {
        PaceBucket { remaining, full_at }
    }
}

/// A key's rate-limit view as replicas share it (a key's provider limits
/// are the provider's, whichever replica calls it): see
/// [`CircuitHandle::shared_pacing`] and [`CircuitHandle::apply_pacing`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedPacing {
    /// The key.
    pub key: Arc<str>,
    /// Requests left, if its answers said.
    pub requests: Option<PaceBucket>,
    /// Tokens left, if its answers said.
    pub tokens: Option<PaceBucket>,
}

impl SharedPacing {
    /// `key`'s view: `requests` and `tokens` left.
    pub fn new(
        key: impl Into<Arc<str>>,
        requests: Option<PaceBucket>,
        tokens: Option<PaceBucket>,
    ) -> Self {
        SharedPacing {
            key: key.into(),
            requests,
            tokens,
        }
    }
}

/// Sharing pacing with other replicas: this process's views out, theirs in.
///
/// Answers update a key's view on every call, too often to publish each;
/// a sharer reads [`shared_pacing`](CircuitHandle::shared_pacing) now and
/// then and hands each view to the other replicas'
/// [`apply_pacing`](CircuitHandle::apply_pacing), which never loosens
/// what a replica holds.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_llm_circuit::{CircuitLayer, PaceBucket, SharedPacing};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let replica_a = CircuitLayer::default().handle();
/// let replica_b = CircuitLayer::default().handle();
/// // A's answers said the key has nothing left for 20 s; B is told.
/// let empty = PaceBucket::new(0, Instant::now() + Duration::from_secs(20));
/// assert!(replica_b.apply_pacing(&SharedPacing::new("openai/gpt-4o", Some(empty), None)));
/// assert!(replica_b.paced_for("openai/gpt-4o").is_some());
/// assert_eq!(replica_b.shared_pacing()[0].requests.map(|b| b.remaining), Some(0));
/// # let _ = replica_a;
/// # }
/// ```
impl CircuitHandle {
    /// Every key whose answers said what it has left, with what they
    /// said (buckets already full again are left out).
    pub fn shared_pacing(&self) -> Vec<SharedPacing> {
        let registry = self.registry();
        let now_instant = Instant::now();
        let now = registry.since_start(now_instant);
        let at = |(remaining, full_at): (u64, Duration)| PaceBucket {
            remaining,
            full_at: now_instant + full_at.saturating_sub(now),
        };
        registry
            .pacing
            .shared(now)
            .into_iter()
            .map(|(key, [requests, tokens])| SharedPacing {
                key,
                requests: requests.map(at),
                tokens: tokens.map(at),
            })
            .collect()
    }

    /// Another replica's view of a key: each bucket held here becomes the
    /// tighter of the two (the least left, until the later reset), one not
    /// held is taken as it is, and one already full again is ignored. It
    /// never loosens a view held here. `true` if something tightened.
    pub fn apply_pacing(&self, shared: &SharedPacing) -> bool {
        let registry = self.registry();
        let buckets = [shared.requests, shared.tokens]
            .map(|b| b.map(|b| (b.remaining, registry.since_start(b.full_at))));
        registry.pacing.apply(&shared.key, buckets, registry.now())
    }
}
