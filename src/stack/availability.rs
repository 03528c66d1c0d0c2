//! [`PacedOut`]: what a stack's groups ask of a deployment before picking
//! it — whether its breaker key's rate-limit view says the request would
//! be refused.

use std::cell::RefCell;

use tower_llm_circuit::CircuitHandle;
use tower_llm_classify::RequestMeta;
use tower_llm_fallback::{Availability, Candidate, CheckAvailability};

/// Leaves out of a group's pick a deployment whose key (`target/model`,
/// the stack's breaker key) is paced out: its last answers' rate-limit
/// headers (or its configured limits) say a call sent now, of this
/// request's estimated tokens, would be refused. The group picks another
/// member instead of sending the call to be refused locally (which the
/// retry layer above would wait out, when the wait fits its deadline).
/// Open and cooling-down keys are left out by the group itself, from the
/// breaker's refusals.
pub(super) struct PacedOut(pub(super) CircuitHandle);

thread_local! {
    /// The key being asked about, built in place: no allocation per pick.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Calls `f` with `candidate`'s breaker key (`target/model`, `-` for a
/// request without a model, as the breaker keys it), built in place.
fn with_key<T>(candidate: &Candidate<'_>, f: impl FnOnce(&str) -> T) -> T {
    KEY.with(|key| {
        let mut key = key.borrow_mut();
        key.clear();
        key.push_str(candidate.target);
        key.push('/');
        key.push_str(candidate.model.unwrap_or("-"));
        f(&key)
    })
}

impl CheckAvailability for PacedOut {
    fn check(&self, candidate: &Candidate<'_>) -> Availability {
        if !self.0.paces_any() {
            return Availability::Available;
        }
        let tokens = candidate
            .request
            .extensions
            .get::<RequestMeta>()
            .and_then(RequestMeta::estimated_tokens)
            .unwrap_or(1);
        let paced = with_key(candidate, |key| self.0.paced_for_tokens(key, tokens));
        match paced {
            Some(wait) => Availability::Unavailable {
                retry_after: Some(wait),
            },
            None => Availability::Available,
        }
    }

    /// What its key's rate-limit view says is left of its limits: the
    /// `latency` strategy spreads a group in proportion to its members'
    /// limits with it.
    fn headroom(&self, candidate: &Candidate<'_>) -> Option<f64> {
        if !self.0.paces_any() {
            return None;
        }
        with_key(candidate, |key| self.0.headroom(key))
    }
}
