//! [`CallerHead`]: the caller's request head, kept for the targets after
//! the one being called.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::request::Parts;
use tower_llm_classify::replay::{Remake, RemakeHead};

use crate::service::Shared;

/// The caller's request head: owned while only the fallback reads it,
/// shared ([`SharedHead`], one allocation) once a target's retries remake
/// their requests from it ([`Remake`]) or a stream may be continued with
/// it. A route of one target never shares it.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "owned is the usual state; boxing it would allocate on every call"
)]
pub(crate) enum CallerHead<S> {
    Owned(Parts),
    Shared(SharedHead<S>),
}

/// The caller's head, shared: the fallback reads it for the targets after
/// the one called, and it is itself the [`Remake`] of that target's
/// request (the head remade for the target it was last given to), so
/// sharing the head and saying how to remake it is one allocation.
pub(crate) struct SharedHead<S>(Arc<Kept<S>>);

struct Kept<S> {
    shared: Arc<Shared<S>>,
    parts: Parts,
    /// Whether the caller's body is empty (a target's model is set only in
    /// a body).
    body_empty: bool,
    /// The target whose request the head is remade for. Set before that
    /// target is called; the target before it is done by then (a hedge,
    /// which runs beside the first call, is never remade).
    target: AtomicUsize,
}

impl<S> RemakeHead for Kept<S>
where
    S: Send + Sync,
{
    fn head(&self) -> Option<Parts> {
        let target = self
            .shared
            .targets
            .get(self.target.load(Ordering::Acquire))?;
        target.adapt_head(&self.parts, self.body_empty).ok()
    }
}

impl<S> Clone for SharedHead<S> {
    fn clone(&self) -> Self {
        SharedHead(Arc::clone(&self.0))
    }
}

impl<S> Deref for SharedHead<S> {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0.parts
    }
}

impl<S> std::fmt::Debug for SharedHead<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedHead").field(&self.0.parts).finish()
    }
}

impl<S> SharedHead<S> {
    /// The head by value when nothing else holds it, else itself.
    pub(crate) fn try_unwrap(self) -> Result<Parts, SharedHead<S>> {
        Arc::try_unwrap(self.0)
            .map(|kept| kept.parts)
            .map_err(SharedHead)
    }
}

impl<S> CallerHead<S> {
    /// The head, to change, while nothing else holds it.
    pub(crate) fn get_mut(&mut self) -> Option<&mut Parts> {
        match self {
            CallerHead::Owned(parts) => Some(parts),
            CallerHead::Shared(head) => Arc::get_mut(&mut head.0).map(|kept| &mut kept.parts),
        }
    }

    /// The head, shared: made so on first use.
    fn share(&mut self, shared: &Arc<Shared<S>>, body_empty: bool) -> SharedHead<S> {
        let head = match self {
            CallerHead::Shared(head) => return head.clone(),
            // A head without allocations holds the place for the move.
            CallerHead::Owned(parts) => kept(
                shared,
                std::mem::replace(parts, http::Request::new(()).into_parts().0),
                body_empty,
            ),
        };
        *self = CallerHead::Shared(head.clone());
        head
    }

    /// How target `index`'s request is made again, from this head.
    pub(crate) fn remake_for(
        &mut self,
        shared: &Arc<Shared<S>>,
        body_empty: bool,
        index: usize,
    ) -> Remake
    where
        S: Send + Sync + 'static,
    {
        let head = self.share(shared, body_empty);
        head.0.target.store(index, Ordering::Release);
        Remake::shared(head.0)
    }

    /// The head, shared.
    pub(crate) fn into_shared(self, shared: &Arc<Shared<S>>, body_empty: bool) -> SharedHead<S> {
        match self {
            CallerHead::Shared(head) => head,
            CallerHead::Owned(parts) => kept(shared, parts, body_empty),
        }
    }
}

/// `parts` shared, to be remade for the targets of `shared`.
fn kept<S>(shared: &Arc<Shared<S>>, parts: Parts, body_empty: bool) -> SharedHead<S> {
    SharedHead(Arc::new(Kept {
        shared: Arc::clone(shared),
        parts,
        body_empty,
        target: AtomicUsize::new(0),
    }))
}

impl<S> Deref for CallerHead<S> {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        match self {
            CallerHead::Owned(parts) => parts,
            CallerHead::Shared(head) => head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fallback, Target};

    fn shared() -> Arc<Shared<()>> {
        let target =
            |name: &str, url: &str| Target::new(name, ()).base_url(url.parse().unwrap_or_default());
        match Fallback::builder()
            .target(target("a", "https://a.example.com/v1"))
            .target(target("b", "https://b.example.com/v1"))
            .build()
        {
            Ok(fallback) => fallback.shared,
            Err(error) => panic!("{error}"),
        }
    }

    fn head() -> CallerHead<()> {
        let (parts, ()) = http::Request::post("/chat/completions")
            .header("x-caller", "1")
            .body(())
            .unwrap_or_default()
            .into_parts();
        CallerHead::Owned(parts)
    }

    #[test]
    fn the_shared_head_remakes_the_request_of_the_target_it_was_last_given_to() {
        let shared = shared();
        let mut head = head();
        assert!(head.get_mut().is_some());
        let for_b = head.remake_for(&shared, false, 1);
        let remade = for_b.head().unwrap_or_else(|| panic!("no head"));
        assert_eq!(remade.uri, "https://b.example.com/v1/chat/completions");
        assert_eq!(remade.headers["x-caller"], "1");
        // Held by the remake: not to be changed.
        assert!(head.get_mut().is_none());
        drop(for_b);
        let for_a = head.remake_for(&shared, false, 0);
        let remade = for_a.head().unwrap_or_else(|| panic!("no head"));
        assert_eq!(remade.uri, "https://a.example.com/v1/chat/completions");
        drop(for_a);
        // Nothing else holds it: taken back by value.
        let CallerHead::Shared(kept) = head else {
            panic!("not shared")
        };
        let parts = kept.try_unwrap().unwrap_or_else(|_| panic!("still shared"));
        assert_eq!(parts.uri.path(), "/chat/completions");
    }
}
