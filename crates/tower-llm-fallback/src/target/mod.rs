//! A target: a name, a service, and how a request is adapted for it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::Full;
use tower_llm_classify::Provider;

use crate::continuation::Continuation;
use crate::protocol::Protocol;

mod adapt;
mod uri_cache;

pub(crate) use uri_cache::UriCache;

/// A user hook for anything else a target needs (another request format).
pub type AdaptFn = dyn Fn(&mut Request<Full<Bytes>>) + Send + Sync;

/// One place a request can go.
///
/// ```
/// use tower_llm_fallback::Target;
///
/// let local = Target::new("local-ollama", ())
///     .base_url("http://127.0.0.1:11434".parse().unwrap())
///     .model("llama3.2")
///     .context_window(128_000)
///     .larger_context();
/// assert_eq!(local.name(), "local-ollama");
/// ```
#[derive(Clone)]
pub struct Target<S> {
    pub(crate) name: Arc<str>,
    pub(crate) service: S,
    /// Called instead of `service` when no other member of its group is
    /// left to try (see [`last_chance`](Target::last_chance)).
    pub(crate) last_chance: Option<S>,
    pub(crate) base: Option<Uri>,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) hook: Option<Arc<AdaptFn>>,
    pub(crate) context_window: Option<u64>,
    pub(crate) larger_context: bool,
    pub(crate) content_filter: bool,
    pub(crate) reserved: bool,
    /// Its share in a weighted group (1 unless set).
    pub(crate) weight: u32,
    /// Set by [`continuation`](Target::continuation); else the provider's.
    pub(crate) continuation: Option<Continuation>,
    /// The API family it speaks (see [`Protocol`]).
    pub(crate) protocol: Protocol,
    /// The URLs made for the request paths seen (without a query).
    pub(crate) uris: Arc<UriCache>,
}

impl<S> fmt::Debug for Target<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            // Never a key the base URL may carry (`?key=`, a password).
            .field(
                "base",
                &self
                    .base
                    .as_ref()
                    .map(|base| tower_llm_classify::redact::url_to_show(&base.to_string())),
            )
            .field("model", &self.model)
            .field(
                "credential",
                &self.credential.as_ref().map(|(name, _)| name),
            )
            .field("context_window", &self.context_window)
            .field("larger_context", &self.larger_context)
            .field("content_filter", &self.content_filter)
            .field("reserved", &self.reserved)
            .field("weight", &self.weight)
            .field("continuation", &self.continuation_capability())
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl<S> Target<S> {
    /// A target named `name` served by `service` (typically its own
    /// Retry → Circuit → Classify stack over a client), sending requests
    /// unchanged until told otherwise.
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        Target {
            name: name.into(),
            service,
            last_chance: None,
            base: None,
            model: None,
            credential: None,
            headers: Vec::new(),
            hook: None,
            context_window: None,
            larger_context: false,
            content_filter: false,
            reserved: false,
            weight: 1,
            continuation: None,
            protocol: Protocol::OpenAi,
            uris: Arc::default(),
        }
    }

    /// This target (name, URL, model, key, routes) over another service.
    /// A [`last_chance`](Target::last_chance) service, of the old type, is
    /// not carried over.
    ///
    /// ```
    /// use tower_llm_fallback::Target;
    ///
    /// let prepared = Target::new("local", ()).model("llama3.2");
    /// let target = prepared.map_service(|()| "a service");
    /// assert_eq!(target.into_service(), "a service");
    /// ```
    pub fn map_service<T>(self, f: impl FnOnce(S) -> T) -> Target<T> {
        Target {
            name: self.name,
            service: f(self.service),
            last_chance: None,
            base: self.base,
            model: self.model,
            credential: self.credential,
            headers: self.headers,
            hook: self.hook,
            context_window: self.context_window,
            larger_context: self.larger_context,
            content_filter: self.content_filter,
            reserved: self.reserved,
            weight: self.weight,
            continuation: self.continuation,
            protocol: self.protocol,
            uris: self.uris,
        }
    }

    /// The service.
    pub fn into_service(self) -> S {
        self.service
    }

    /// Calls `service` instead of the target's own when the request has
    /// nowhere else to go in the target's group: every other member was
    /// tried, or (while any member is available) is unavailable; a group
    /// of one: always. The same for a hedge, and for the last target that
    /// may continue a broken stream. A stack gives a
    /// deployment of a group two retries over the same breaker: one that
    /// leaves a long `retry-after` or a silent attempt to a sibling, and
    /// this one, which waits the hint out or retries, for when no sibling
    /// is left. Which member that is depends on the order a request picks
    /// them in, not on where the target was added.
    ///
    /// ```
    /// use tower_llm_fallback::Target;
    ///
    /// let target = Target::new("eu", "moves on").last_chance("waits");
    /// assert_eq!(target.name(), "eu");
    /// ```
    pub fn last_chance(mut self, service: S) -> Self {
        self.last_chance = Some(service);
        self
    }

    /// The service an attempt calls: [`last_chance`](Target::last_chance)'s
    /// when `alone` (no other member of the group is left), else the
    /// target's own.
    pub(crate) fn service_for(&self, alone: bool) -> &S {
        match &self.last_chance {
            Some(last) if alone => last,
            _ => &self.service,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends to this scheme, host and path prefix (`https://host/openai`):
    /// the request's own path and query follow the prefix, and the base's
    /// query is kept (Azure's `api-version`). A gateway that forwards
    /// `/chat/completions` takes the base URL an OpenAI SDK takes
    /// (`https://api.openai.com/v1`, `…/v1beta/openai` for Gemini); a
    /// caller that sends `/v1/chat/completions` takes the bare host.
    pub fn base_url(mut self, base: Uri) -> Self {
        self.base = Some(base);
        self.uris = Arc::default();
        self
    }

    /// Sets the body's `model` to this.
    pub fn model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The target's own credential, e.g. `authorization: Bearer …` or
    /// `x-api-key: …`. Every credential header the request came with is
    /// removed first: a target never sees another target's or the caller's
    /// key.
    pub fn credential(mut self, name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        self.credential = Some((name, value));
        self
    }

    /// Sets a header on every request to this target (`anthropic-version`, …).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Runs `hook` on each request after the other changes.
    pub fn adapt(
        mut self,
        hook: impl Fn(&mut Request<Full<Bytes>>) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Keeps this target for the failures it is marked for
    /// ([`larger_context`](Target::larger_context),
    /// [`for_content_filter`](Target::for_content_filter)): it is never
    /// tried in the default order, so an ordinary outage of the targets
    /// before it does not send every request to, say, the expensive
    /// long-context model.
    pub fn reserved(mut self) -> Self {
        self.reserved = true;
        self
    }

    /// Its share of the requests of a [weighted](crate::Strategy::Weighted)
    /// group, against the other members' (1 unless set; 0 is refused at
    /// build: leave the target out instead).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The target's context window, in tokens: a context-length failure
    /// only moves to targets with a larger one.
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// Eligible when a request is too long for an earlier target
    /// (LiteLLM's `context_window_fallbacks`).
    pub fn larger_context(mut self) -> Self {
        self.larger_context = true;
        self
    }

    /// Eligible when an earlier target refused the content
    /// (LiteLLM's `content_policy_fallbacks`).
    pub fn for_content_filter(mut self) -> Self {
        self.content_filter = true;
        self
    }

    /// How this target continues an answer that broke after content (see
    /// [`continuation`](crate::continuation)): set here when the provider's
    /// default is wrong for it — an OpenAI-compatible server that accepts
    /// a trailing assistant message, a model that refuses prefill.
    pub fn continuation(mut self, how: Continuation) -> Self {
        self.continuation = Some(how);
        self
    }

    /// Speaks this API family ([`Protocol::OpenAi`] unless set): a request
    /// that names a [`Protocol`] in its extensions goes only to the
    /// targets that speak it.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The API family this target speaks.
    pub fn speaks(&self) -> Protocol {
        self.protocol
    }

    /// Whether this target may be sent the request whose head is `parts`:
    /// any target when the request names no [`Protocol`], else the
    /// targets that speak it.
    pub(crate) fn takes(&self, parts: Option<&http::request::Parts>) -> bool {
        parts
            .and_then(|p| p.extensions.get::<Protocol>())
            .is_none_or(|wanted| *wanted == self.protocol)
    }

    /// How this target continues an answer: as set, else what its base
    /// URL's provider is known to support ([`Continuation::for_provider`]);
    /// a target without a base URL is the caller's own endpoint, and is
    /// not assumed to.
    pub fn continuation_capability(&self) -> Continuation {
        self.continuation.unwrap_or_else(|| match &self.base {
            Some(base) => Continuation::for_provider(Provider::detect(base)),
            None => Continuation::Unsupported,
        })
    }
}

#[cfg(test)]
mod tests;
