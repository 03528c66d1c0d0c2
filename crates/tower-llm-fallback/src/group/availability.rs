//! [`CheckAvailability`]: the one question a group asks of a deployment
//! before picking it — may it take this request now?

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

/// A deployment a group may pick, and the request it would get.
#[derive(Debug)]
#[non_exhaustive]
pub struct Candidate<'a> {
    /// The target's name.
    pub target: &'a str,
    /// The model it would be asked for: its own, else the request's.
    pub model: Option<&'a str>,
    /// The caller's request (its extensions hold the
    /// [`RequestMeta`](tower_llm_classify::RequestMeta)).
    pub request: &'a http::request::Parts,
    /// The caller's body (its size, for a token estimate).
    pub body: &'a Bytes,
}

/// What a [`CheckAvailability`] says of a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Availability {
    /// It may take the request now.
    Available,
    /// It may not: the group picks another, and moves to its next group
    /// only when none of its own is available.
    Unavailable {
        /// When it may again, if known.
        retry_after: Option<Duration>,
    },
}

/// Whether a deployment of a group may take a request now: asked of the
/// member a group of two or more picks, before it is taken; a member it
/// refuses is left out and the group's strategy picks again among the
/// others (a group of one is tried as an ordinary fallback target is).
///
/// The group itself already skips what the layers below it refused: a
/// deployment whose breaker refused a call (open: until its next probe;
/// forced open: re-asked after a second) or that is cooling down after a
/// rate limit (until the wait its refusal or the provider's `retry-after`
/// gave) is not picked again until then. This check adds what a layer
/// knows before any call (pacing from rate-limit headers); closures
/// implement it.
///
/// ```
/// use tower_llm_fallback::{Availability, Candidate, CheckAvailability};
///
/// // Keep the `eu` deployment for requests that ask for it.
/// let check = |candidate: &Candidate<'_>| {
///     if candidate.target == "eu" && !candidate.request.headers.contains_key("x-region-eu") {
///         Availability::Unavailable { retry_after: None }
///     } else {
///         Availability::Available
///     }
/// };
/// # fn takes(_: impl CheckAvailability) {}
/// # takes(check);
/// ```
pub trait CheckAvailability: Send + Sync + 'static {
    /// Whether `candidate` may take its request now.
    fn check(&self, candidate: &Candidate<'_>) -> Availability;

    /// The share of its capacity `candidate` has left, from 0 (none) to 1
    /// (all), when known: for a deployment with rate limits, what its
    /// provider's headers say is left, less its calls in flight, over the
    /// limit. The `latency` strategy costs such a member its latency
    /// estimate divided by this share (in place of times its calls in
    /// flight), so that members with different limits are used in
    /// proportion to them rather than each until it runs out (LiteLLM's
    /// usage-based routing weighs deployments by what they have used of
    /// their limits for the same reason). `None` (the default) leaves the
    /// member's cost as it is.
    fn headroom(&self, candidate: &Candidate<'_>) -> Option<f64> {
        let _ = candidate;
        None
    }
}

impl<F> CheckAvailability for F
where
    F: Fn(&Candidate<'_>) -> Availability + Send + Sync + 'static,
{
    fn check(&self, candidate: &Candidate<'_>) -> Availability {
        self(candidate)
    }
}

/// A shared check, as a fallback holds it.
#[derive(Clone)]
pub(crate) struct SharedCheck(pub(crate) std::sync::Arc<dyn CheckAvailability>);

impl fmt::Debug for SharedCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckAvailability")
    }
}
