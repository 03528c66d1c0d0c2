//! [`CallerHead`]: the caller's request head, kept for the targets after
//! the one being called.

use std::ops::Deref;
use std::sync::Arc;

use http::request::Parts;

/// The caller's request head: owned while only the fallback reads it,
/// shared (`Arc`, one allocation) once a target's retries remake their
/// requests from it ([`Remake`](tower_llm_classify::replay::Remake)) or a
/// stream may be continued with it. A route of one target never shares it.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "owned is the usual state; boxing it would allocate on every call"
)]
pub(crate) enum CallerHead {
    Owned(Parts),
    Shared(Arc<Parts>),
}

impl CallerHead {
    /// The head, to change, while nothing else holds it.
    pub(crate) fn get_mut(&mut self) -> Option<&mut Parts> {
        match self {
            CallerHead::Owned(parts) => Some(parts),
            CallerHead::Shared(parts) => Arc::get_mut(parts),
        }
    }

    /// The head, shared: made so on first use.
    pub(crate) fn share(&mut self) -> Arc<Parts> {
        if let CallerHead::Owned(parts) = self {
            // A head without allocations holds the place for the move.
            let owned = std::mem::replace(parts, http::Request::new(()).into_parts().0);
            *self = CallerHead::Shared(Arc::new(owned));
        }
        match self {
            CallerHead::Shared(parts) => Arc::clone(parts),
            CallerHead::Owned(_) => unreachable_shared(),
        }
    }

    /// The head, shared.
    pub(crate) fn into_shared(self) -> Arc<Parts> {
        match self {
            CallerHead::Owned(parts) => Arc::new(parts),
            CallerHead::Shared(parts) => parts,
        }
    }
}

/// `share` made the head shared just above: not reached. An empty head
/// rather than a panic.
#[cold]
fn unreachable_shared() -> Arc<Parts> {
    Arc::new(http::Request::new(()).into_parts().0)
}

impl Deref for CallerHead {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        match self {
            CallerHead::Owned(parts) => parts,
            CallerHead::Shared(parts) => parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> CallerHead {
        let (parts, ()) = http::Request::post("/v1/chat/completions")
            .header("x-caller", "1")
            .body(())
            .unwrap_or_default()
            .into_parts();
        CallerHead::Owned(parts)
    }

    #[test]
    fn a_head_is_shared_once_and_taken_back_once_nothing_else_holds_it() {
        let mut head = head();
        assert!(head.get_mut().is_some());
        let shared = head.share();
        assert_eq!(shared.headers["x-caller"], "1");
        assert_eq!(head.headers["x-caller"], "1");
        // Held elsewhere: not to be changed.
        assert!(head.get_mut().is_none());
        drop(shared);
        let parts = match head {
            CallerHead::Shared(parts) => {
                Arc::try_unwrap(parts).unwrap_or_else(|_| panic!("shared"))
            }
            CallerHead::Owned(_) => panic!("not shared"),
        };
        assert_eq!(parts.uri.path(), "/v1/chat/completions");
    }
}
