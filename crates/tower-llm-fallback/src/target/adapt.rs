//! How a request is made a target's: its URL, the headers it may carry
//! (never a caller's or another target's credential), its body's model and
//! the target's own credential and headers; and again for a retry
//! ([`adapt_head`](Target::adapt_head)).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use tower_llm_classify::RequestMeta;
use tower_llm_classify::redact::{ACCOUNT_HEADERS, CREDENTIAL_HEADERS, HOP_BY_HOP_HEADERS};
use tower_llm_classify::replay::Remake;

use super::Target;
use crate::rewrite::{RewriteError, rewrite_model};

impl<S> Target<S> {
    /// The request for this target, from the caller's parts and body
    /// (kept for the targets after it).
    pub(crate) fn adapt_request(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, AdaptError> {
        let (body, model) = self.body_for(body)?;
        let head = self.head_for(parts)?;
        Ok(self.finish(Request::from_parts(head, Full::new(body)), model))
    }

    /// Whether [`adapt_head`](Target::adapt_head) makes the head
    /// [`adapt_request`](Target::adapt_request) does: unless a hook may
    /// change the request (it runs once per target, on the whole request).
    pub(crate) fn remakes_heads(&self) -> bool {
        self.hook.is_none()
    }

    /// The head [`adapt_request`](Target::adapt_request) makes for the
    /// caller's `parts` (with a body, or `body_empty`), made again for
    /// another attempt; the body is the one that request carries.
    pub(crate) fn adapt_head(
        &self,
        parts: &http::request::Parts,
        body_empty: bool,
    ) -> Result<http::request::Parts, AdaptError> {
        let model = match &self.model {
            Some(model) if !body_empty => Some(Arc::clone(model)),
            _ => None,
        };
        let mut head = self.head_for(parts)?;
        self.finish_head(&mut head, model);
        Ok(head)
    }

    /// The caller's head made this target's before its credential: method,
    /// URL, the headers that may be forwarded, the extensions.
    fn head_for(&self, parts: &http::request::Parts) -> Result<http::request::Parts, AdaptError> {
        let mut request = Request::new(());
        *request.method_mut() = parts.method.clone();
        // The version is the client's business (an HTTP/2 caller, an
        // HTTP/1 pool): left at the default.
        *request.uri_mut() = self.uri_for(&parts.uri)?;
        // One pass over the caller's headers, leaving out every credential
        // and account header (the target's own is set below), hop-by-hop
        // headers, and what the body or URL decide.
        let connection_listed: Vec<&str> = parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let headers = request.headers_mut();
        // Room for the target's credential and headers, its host, and the
        // length the client adds: no growth after this.
        headers.reserve(parts.headers.len() + 3 + self.headers.len());
        for (name, value) in &parts.headers {
            let name_str = name.as_str();
            let dropped = never_forwarded(name_str).is_some()
                || connection_listed
                    .iter()
                    .any(|listed| listed.eq_ignore_ascii_case(name_str));
            if !dropped {
                headers.append(name.clone(), value.clone());
            }
        }
        *request.extensions_mut() = parts.extensions.clone();
        // An outer layer's way to remake its own request is not this
        // target's: a retry below would remake its attempts with it.
        request.extensions_mut().remove::<Remake>();
        Ok(request.into_parts().0)
    }

    /// The request for this target, made from the caller's own parts and
    /// body when no target can come after it: the same request as
    /// [`adapt_request`](Target::adapt_request) makes, without copying the
    /// headers, the URL or the extensions.
    pub(crate) fn adapt_owned(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, AdaptError> {
        // The names to remove, found in one pass; a `Connection` header
        // (names listed in a value) or many of them take the copying way.
        let mut dropped: [&'static str; 8] = [""; 8];
        let mut count = 0;
        let mut copy = parts.headers.contains_key(http::header::CONNECTION);
        for name in parts.headers.keys() {
            if copy {
                break;
            }
            if let Some(listed) = never_forwarded(name.as_str()) {
                match dropped.get_mut(count) {
                    Some(slot) => *slot = listed,
                    None => copy = true,
                }
                count += 1;
            }
        }
        if copy {
            return self.adapt_request(&parts, &body);
        }
        let (body, model) = self.body_for(&body)?;
        parts.uri = self.uri_for_owned(std::mem::take(&mut parts.uri))?;
        parts.version = http::Version::default();
        for name in &dropped[..count] {
            parts.headers.remove(*name);
        }
        parts.extensions.remove::<Remake>();
        Ok(self.finish(Request::from_parts(parts, Full::new(body)), model))
    }

    /// The body for this target: with its `model` when it sets one (an
    /// empty body, a GET, has no model to set), and the model set.
    fn body_for(&self, body: &Bytes) -> Result<(Bytes, Option<Arc<str>>), AdaptError> {
        match &self.model {
            Some(model) if !body.is_empty() => {
                let body = rewrite_model(body, model).map_err(AdaptError::Rewrite)?;
                Ok((body, Some(Arc::clone(model))))
            }
            _ => Ok((body.clone(), None)),
        }
    }

    /// The target's credential and headers, the request's metadata made
    /// this target's, and the user's hook.
    fn finish(
        &self,
        request: Request<Full<Bytes>>,
        model: Option<Arc<str>>,
    ) -> Request<Full<Bytes>> {
        let (mut parts, body) = request.into_parts();
        self.finish_head(&mut parts, model);
        let mut request = Request::from_parts(parts, body);
        if let Some(hook) = &self.hook {
            hook(&mut request);
        }
        request
    }

    /// [`finish`](Target::finish) but the hook: the target's credential
    /// and headers, the request's metadata made this target's.
    fn finish_head(&self, parts: &mut http::request::Parts, model: Option<Arc<str>>) {
        if let Some((name, value)) = &self.credential {
            parts.headers.insert(name.clone(), value.clone());
        }
        // The base URL's host, made once: an HTTP/1 client writes the same
        // itself, formatting and allocating it for every request. Not with
        // a hook, which may send the request elsewhere.
        if self.hook.is_none()
            && let Some(base) = &self.base
            && let Some(host) = self.uris.host(base)
        {
            parts.headers.insert(http::header::HOST, host);
        }
        for (name, value) in &self.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        if self.hook.is_some() {
            // A hook may change anything (another request format): the
            // layers below read the request it leaves again.
            parts.extensions.remove::<RequestMeta>();
        } else if (self.base.is_some() || model.is_some())
            && let Some(meta) = parts.extensions.get_mut::<RequestMeta>()
        {
            // What an outer layer read of the request, made this target's
            // (provider and dialect from its URL, the model it is sent),
            // so the layers below never read the body again.
            meta.retarget(&parts.uri, &parts.headers, model);
        }
    }

    /// [`uri_for`](Target::uri_for), moving `uri` when it goes as it came.
    fn uri_for_owned(&self, uri: Uri) -> Result<Uri, AdaptError> {
        if self.base.is_none()
            && uri
                .query()
                .is_none_or(|query| !query.split('&').any(is_credential_parameter))
        {
            return Ok(uri);
        }
        self.uri_for(&uri)
    }

    /// The target's URL: its scheme, host and path prefix, then the
    /// request's path, then the base's query and the request's query less
    /// any credential parameter. Without a base URL, the request's own URL
    /// less any credential parameter.
    fn uri_for(&self, uri: &Uri) -> Result<Uri, AdaptError> {
        let caller_query = uri.query().unwrap_or_default();
        let Some(base) = &self.base else {
            if !caller_query.split('&').any(is_credential_parameter) {
                return Ok(uri.clone());
            }
            let mut joined = uri.path().to_owned();
            push_query(&mut joined, '?', caller_query);
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(joined.parse().map_err(|_| AdaptError::Url)?);
            return Uri::from_parts(parts).map_err(|_| AdaptError::Url);
        };
        let cached = caller_query.is_empty();
        if cached && let Some(made) = self.uris.get(uri.path()) {
            return Ok(made);
        }
        let prefix = base.path().trim_end_matches('/');
        let mut joined = format!("{prefix}{}", uri.path());
        let mut separator = '?';
        // The base's query is the operator's (Azure's `api-version`, or a
        // target's own `key=`): kept whole.
        for pair in base.query().unwrap_or_default().split('&') {
            if !pair.is_empty() {
                joined.push(separator);
                joined.push_str(pair);
                separator = '&';
            }
        }
        push_query(&mut joined, separator, caller_query);
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(joined.parse().map_err(|_| AdaptError::Url)?);
        let made = Uri::from_parts(parts).map_err(|_| AdaptError::Url)?;
        if cached {
            self.uris.keep(uri.path(), &made);
        }
        Ok(made)
    }
}

/// Appends the pairs of the caller's `query` that carry no credential.
fn push_query(joined: &mut String, mut separator: char, query: &str) {
    for pair in query.split('&') {
        if !pair.is_empty() && !is_credential_parameter(pair) {
            joined.push(separator);
            joined.push_str(pair);
            separator = '&';
        }
    }
}

/// Whether the query pair `pair` (`name=value`) carries a credential: its
/// name, percent-decoded with `+` as a space (as servers decode a query,
/// WHATWG URL's `application/x-www-form-urlencoded` parser), trimmed,
/// compared case-insensitively with `-` and `_` alike, is one of
/// [`CREDENTIAL_PARAMETERS`]. A pair that some servers would split further
/// at `;` (the HTML 4 separator, still honoured by some) counts if any part
/// does. No allocation: names are decoded into a small buffer, and a name
/// too long for it is no credential name.
fn is_credential_parameter(pair: &str) -> bool {
    pair.split(';').any(|part| {
        let name = part.split('=').next().unwrap_or_default();
        let mut buf = [0_u8; 32];
        let Some(decoded) = decode_parameter_name(name.as_bytes(), &mut buf) else {
            return false;
        };
        CREDENTIAL_PARAMETERS
            .iter()
            .any(|credential| credential.as_bytes() == decoded)
    })
}

/// `name` percent-decoded (`+` as a space), ASCII-lowercased, `-` as `_`,
/// white space left out (wherever it is: padding cannot push a name past
/// the buffer), into `buf`; `None` if it does not fit, which no listed name
/// would.
fn decode_parameter_name<'b>(name: &[u8], buf: &'b mut [u8; 32]) -> Option<&'b [u8]> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut len = 0;
    let mut i = 0;
    while i < name.len() {
        let mut byte = name[i];
        i += 1;
        if byte == b'+' {
            byte = b' ';
        } else if byte == b'%'
            && let (Some(h), Some(l)) = (
                name.get(i).copied().and_then(hex),
                name.get(i + 1).copied().and_then(hex),
            )
        {
            byte = (h * 16 + l) as u8;
            i += 2;
        }
        let byte = match byte.to_ascii_lowercase() {
            b'-' => b'_',
            space if space.is_ascii_whitespace() => continue,
            other => other,
        };
        *buf.get_mut(len)? = byte;
        len += 1;
    }
    Some(&buf[..len])
}

/// The listed name `name` matches, if the caller's header `name` is never
/// sent to a target (a credential, or one of [`NOT_FORWARDED`]).
fn never_forwarded(name: &str) -> Option<&'static str> {
    CREDENTIAL_HEADERS
        .iter()
        .chain(&HOP_BY_HOP_HEADERS)
        .chain(&ACCOUNT_HEADERS)
        .chain(NOT_FORWARDED)
        .find(|listed| **listed == name)
        .copied()
}

/// Headers never copied from the caller to a target, beside credentials,
/// hop-by-hop and account headers (classify's lists): what the new body
/// and URL decide, an encoding the layers below might not read, and the
/// caller's keys at other gateways (a target gets its own or none).
const NOT_FORWARDED: &[&str] = &[
    "content-length",
    "host",
    "expect",
    "accept-encoding",
    "x-amz-security-token",
    "x-litellm-api-key",
    "x-portkey-api-key",
    "helicone-auth",
];

/// Query parameters that carry a credential, written lowercase with `_`
/// for `-` (see [`is_credential_parameter`]): never copied from the
/// caller's URL, with or without a base URL.
const CREDENTIAL_PARAMETERS: &[&str] = &[
    // Gemini's `?key=` (ai.google.dev API keys), and its common spellings.
    "key",
    "api_key",
    "apikey",
    "x_api_key",
    "x_goog_api_key",
    // OAuth 2.0 bearer tokens in a query (RFC 6750 §2.3) and their kin.
    "access_token",
    "token",
    "auth_token",
    "id_token",
    "refresh_token",
    "client_secret",
    "password",
    // Azure API Management's `subscription-key`, Azure Functions' `code`,
    // an Azure Storage shared access signature's `sig`.
    "subscription_key",
    "code",
    "sig",
];

/// Why a request could not be made for a target (nothing was sent).
#[derive(Debug)]
pub(crate) enum AdaptError {
    Rewrite(RewriteError),
    Url,
}

impl fmt::Display for AdaptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdaptError::Rewrite(e) => write!(f, "{e}"),
            AdaptError::Url => f.write_str(
                "the target's URL could not be built from its base URL and the request's path",
            ),
        }
    }
}
