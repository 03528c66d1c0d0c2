//! [`Template`]: the request every attempt is a copy of.

use bytes::Bytes;
use http::Request;
use tower_llm_classify::RequestMeta;
use tower_llm_classify::replay::Remake;

use crate::body::ReplayBody;

/// The caller's request, its body read once, from which every attempt is
/// made. Each attempt but the last the policy allows gets a copy (headers
/// and extensions cloned, body shared); the last gets the request itself,
/// since no attempt can follow it: with one attempt allowed, nothing is
/// cloned at all. A request that says how to [`Remake`] it (an outer layer
/// keeps the caller's request) is sent as it is to the first attempt, and
/// each further attempt's head is made again, so that nothing is copied
/// before a failure.
#[allow(
    clippy::large_enum_variant,
    reason = "the request is the usual state; boxing it would allocate on every call"
)]
pub(crate) enum Template {
    /// Kept for the attempts to come.
    Kept(Request<ReplayBody>),
    /// Given to the first attempt; the next ones' heads come from the
    /// outer layer that keeps the caller's request.
    Remade {
        remake: Remake,
        /// The body, shared by every attempt.
        body: ReplayBody,
        meta: Option<RequestMeta>,
    },
    /// Given to the last attempt allowed; what the layer still reads of it
    /// (the model, for its logs; the dialect, for the first-content guard).
    Given(Option<RequestMeta>),
}

impl Template {
    /// The request, its body still to be read.
    pub(crate) fn new(parts: http::request::Parts) -> Self {
        Template::Kept(Request::from_parts(parts, ReplayBody::default()))
    }

    /// Puts the body, read, in the request and reads its metadata, unless
    /// an outer layer did: every attempt carries it, so the layers below
    /// never parse the body again.
    pub(crate) fn set_body(&mut self, bytes: Bytes) {
        if let Template::Kept(request) = self {
            *request.body_mut() = ReplayBody::new(bytes);
            // One look when an outer layer read it (the usual case).
            if request.extensions().get::<RequestMeta>().is_none() {
                RequestMeta::get_or_insert(request);
            }
        }
    }

    /// The request of the next attempt: the request itself when this is
    /// the `last` attempt the policy allows or when the next heads can be
    /// remade, a copy otherwise. `None` when no request can be made (the
    /// outer layer could not remake the head; not reached in practice:
    /// it made the same head once already).
    pub(crate) fn attempt(&mut self, last: bool) -> Option<Request<ReplayBody>> {
        match self {
            Template::Kept(request) if !last => {
                // Taken out: it is this layer's to use, never to pass on (a
                // stack below would remake its own attempts with it).
                let Some(remake) = request.extensions_mut().remove::<Remake>() else {
                    return Some(request.clone());
                };
                let next = Template::Remade {
                    remake,
                    body: request.body().clone(),
                    meta: request.extensions().get::<RequestMeta>().cloned(),
                };
                match std::mem::replace(self, next) {
                    Template::Kept(request) => Some(request),
                    _ => None,
                }
            }
            Template::Kept(request) => {
                request.extensions_mut().remove::<Remake>();
                let meta = request.extensions().get::<RequestMeta>().cloned();
                match std::mem::replace(self, Template::Given(meta)) {
                    Template::Kept(request) => Some(request),
                    _ => None,
                }
            }
            Template::Remade { remake, body, .. } => {
                let head = remake.head()?;
                Some(Request::from_parts(head, body.clone()))
            }
            // Not reached: no attempt follows the last.
            Template::Given(_) => None,
        }
    }

    /// The request's metadata, read when its body was.
    pub(crate) fn meta(&self) -> Option<&RequestMeta> {
        match self {
            Template::Kept(request) => request.extensions().get::<RequestMeta>(),
            Template::Remade { meta, .. } | Template::Given(meta) => meta.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn kept(remake: Option<Remake>) -> Template {
        let mut request = Request::post("http://upstream/v1/chat/completions")
            .header("x-attempt-header", "kept")
            .body(())
            .unwrap_or_default();
        if let Some(remake) = remake {
            request.extensions_mut().insert(remake);
        }
        let mut template = Template::new(request.into_parts().0);
        template.set_body(Bytes::from_static(br#"{"model":"gpt-4o"}"#));
        template
    }

    #[test]
    fn without_a_remake_every_attempt_but_the_last_is_a_copy() {
        let mut template = kept(None);
        let first = template.attempt(false).unwrap_or_default();
        assert_eq!(first.headers()["x-attempt-header"], "kept");
        assert!(matches!(template, Template::Kept(_)));
        let last = template.attempt(true).unwrap_or_default();
        assert_eq!(last.uri().path(), "/v1/chat/completions");
        assert!(matches!(template, Template::Given(Some(_))));
        assert!(template.attempt(true).is_none());
    }

    #[test]
    fn with_a_remake_the_first_attempt_takes_the_request_and_the_next_are_remade() {
        let remade = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&remade);
        let remake = Remake::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            let (mut head, ()) = Request::post("http://upstream/v1/chat/completions")
                .header("x-attempt-header", "remade")
                .body(())
                .ok()?
                .into_parts();
            let meta = RequestMeta::from_request(&head.uri, &head.headers, None);
            head.extensions.insert(meta);
            Some(head)
        });
        let mut template = kept(Some(remake));
        let first = template.attempt(false).unwrap_or_default();
        // The request itself: nothing made or copied for it, and the remake
        // kept here, not passed on.
        assert_eq!(first.headers()["x-attempt-header"], "kept");
        assert!(first.extensions().get::<Remake>().is_none());
        assert_eq!(remade.load(Ordering::Relaxed), 0);
        assert!(template.meta().is_some(), "the model stays known for logs");
        for last in [false, true] {
            let next = template.attempt(last).unwrap_or_default();
            assert_eq!(next.headers()["x-attempt-header"], "remade");
        }
        assert_eq!(remade.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_remake_is_never_passed_on_even_to_the_only_attempt() {
        let mut template = kept(Some(Remake::new(|| None)));
        let only = template.attempt(true).unwrap_or_default();
        assert!(only.extensions().get::<Remake>().is_none());
    }

    #[test]
    fn a_head_that_cannot_be_remade_is_no_attempt_rather_than_an_empty_request() {
        let mut template = kept(Some(Remake::new(|| None)));
        assert!(template.attempt(false).is_some());
        assert!(template.attempt(false).is_none());
    }
}
