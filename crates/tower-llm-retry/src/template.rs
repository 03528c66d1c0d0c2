//! [`Template`]: the request every attempt is a copy of.

use bytes::Bytes;
use http::Request;
use tower_llm_classify::RequestMeta;

use crate::body::ReplayBody;

/// The caller's request, its body read once, from which every attempt is
/// made. Each attempt but the last the policy allows gets a copy (headers
/// and extensions cloned, body shared); the last gets the request itself,
/// since no attempt can follow it: with one attempt allowed, nothing is
/// cloned at all.
#[allow(
    clippy::large_enum_variant,
    reason = "the request is the usual state; boxing it would allocate on every call"
)]
pub(crate) enum Template {
    /// Kept for the attempts to come.
    Kept(Request<ReplayBody>),
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
    /// the `last` attempt the policy allows, a copy otherwise.
    pub(crate) fn attempt(&mut self, last: bool) -> Request<ReplayBody> {
        match self {
            Template::Kept(request) if !last => request.clone(),
            Template::Kept(request) => {
                let meta = request.extensions().get::<RequestMeta>().cloned();
                match std::mem::replace(self, Template::Given(meta)) {
                    Template::Kept(request) => request,
                    Template::Given(_) => Request::new(ReplayBody::default()),
                }
            }
            // Not reached: no attempt follows the last. An empty request
            // rather than a panic.
            Template::Given(_) => Request::new(ReplayBody::default()),
        }
    }

    /// The request's metadata, read when its body was.
    pub(crate) fn meta(&self) -> Option<&RequestMeta> {
        match self {
            Template::Kept(request) => request.extensions().get::<RequestMeta>(),
            Template::Given(meta) => meta.as_ref(),
        }
    }
}
