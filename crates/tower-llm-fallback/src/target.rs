//! A target: a name, a service, and how a request is adapted for it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::Full;
use tower_llm_classify::redact::CREDENTIAL_HEADERS;

use crate::rewrite::{RewriteError, rewrite_model};

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
    pub(crate) base: Option<Uri>,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) hook: Option<Arc<AdaptFn>>,
    pub(crate) context_window: Option<u64>,
    pub(crate) larger_context: bool,
    pub(crate) content_filter: bool,
}

impl<S> fmt::Debug for Target<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("model", &self.model)
            .field(
                "credential",
                &self.credential.as_ref().map(|(name, _)| name),
            )
            .field("context_window", &self.context_window)
            .field("larger_context", &self.larger_context)
            .field("content_filter", &self.content_filter)
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
            base: None,
            model: None,
            credential: None,
            headers: Vec::new(),
            hook: None,
            context_window: None,
            larger_context: false,
            content_filter: false,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends to this scheme, host and path prefix (`https://host/openai`):
    /// the request's own path and query follow the prefix.
    pub fn base_url(mut self, base: Uri) -> Self {
        self.base = Some(base);
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

    /// The request for this target, from the caller's parts and body.
    pub(crate) fn adapt_request(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, RewriteError> {
        let body = match &self.model {
            Some(model) => rewrite_model(body, model)?,
            None => body.clone(),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method.clone();
        *request.version_mut() = parts.version;
        *request.uri_mut() = self.uri_for(&parts.uri);
        // One pass over the caller's headers, leaving out every credential
        // (the target's own is set below) and what the body or URL decide.
        let headers = request.headers_mut();
        headers.reserve(parts.headers.len() + 1 + self.headers.len());
        for (name, value) in &parts.headers {
            let dropped = name == http::header::CONTENT_LENGTH
                || name == http::header::HOST
                || CREDENTIAL_HEADERS.contains(&name.as_str());
            if !dropped {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some((name, value)) = &self.credential {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        *request.extensions_mut() = parts.extensions.clone();
        // What an earlier layer read of the request (model, provider) is
        // not this target's: let the layers below read it again.
        request
            .extensions_mut()
            .remove::<tower_llm_classify::RequestMeta>();
        if let Some(hook) = &self.hook {
            hook(&mut request);
        }
        Ok(request)
    }

    fn uri_for(&self, uri: &Uri) -> Uri {
        let Some(base) = &self.base else {
            return uri.clone();
        };
        let prefix = base.path().trim_end_matches('/');
        let rest = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut parts = base.clone().into_parts();
        let joined = format!("{prefix}{rest}");
        parts.path_and_query = joined.parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}
