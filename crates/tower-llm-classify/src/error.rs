//! [`LlmError`], the one error type of the stack, and [`Classified`], how an
//! outer layer reads the classification from any error.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::{Classification, ErrorKind};

/// A boxed error, as tower uses.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The error every tower-llm layer returns.
///
/// It carries the [`Classification`], and when the upstream answered, its
/// response head and (bounded) body, so that a gateway can still hand the
/// provider's own error back to its client
/// ([`into_upstream_response`](LlmError::into_upstream_response)), plus the
/// source error when there was one.
///
/// Its `Display` shows the kind, status, provider, code, hint, request id and
/// the provider's message with anything that looks like a credential
/// redacted; its `Debug` never shows credential headers or the body.
///
/// ```
/// use tower_llm_classify::{Classification, ErrorKind, LlmError};
///
/// let err = LlmError::new(Classification::new(ErrorKind::CircuitOpen).with_message("openai/gpt-4o"));
/// assert_eq!(err.kind(), ErrorKind::CircuitOpen);
/// assert_eq!(err.to_string(), "circuit open: openai/gpt-4o");
/// // A gateway answers with an OpenAI-shaped error when nothing upstream answered.
/// let response = err.into_response();
/// assert_eq!(response.status(), 503);
/// ```
pub struct LlmError {
    inner: Box<Inner>,
}

struct Inner {
    classification: Classification,
    head: Option<http::response::Parts>,
    body: Bytes,
    body_truncated: bool,
    source: Option<BoxError>,
    extensions: http::Extensions,
}

impl LlmError {
    /// An error with this classification and nothing else.
    pub fn new(classification: Classification) -> Self {
        LlmError {
            inner: Box::new(Inner {
                classification,
                head: None,
                body: Bytes::new(),
                body_truncated: false,
                source: None,
                extensions: http::Extensions::new(),
            }),
        }
    }

    /// An error raised by a layer itself, before or instead of any call
    /// (a body too large, no route, a future polled after it finished):
    /// `kind`, in the local phase, with `message`.
    ///
    /// ```
    /// use tower_llm_classify::{ErrorKind, LlmError, Phase};
    ///
    /// let error = LlmError::local(ErrorKind::InvalidRequest, "no `model` in the body");
    /// assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    /// assert_eq!(error.classification().phase(), Phase::Local);
    /// ```
    pub fn local(kind: ErrorKind, message: &str) -> Self {
        LlmError::new(
            Classification::new(kind)
                .with_phase(crate::Phase::Local)
                .with_message(message),
        )
    }

    /// An error from a source error, classified by walking its chain
    /// ([`classify_error`](crate::classify_error)).
    pub fn from_source(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        match source.downcast::<LlmError>() {
            Ok(llm) => *llm,
            Err(source) => {
                let classification = crate::classify_error(&*source);
                LlmError::new(classification).with_source(source)
            }
        }
    }

    /// Attaches the source error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// Attaches the upstream response head and the body bytes read (at most
    /// the layer's limit; `truncated` says the body was longer).
    pub fn with_response(
        mut self,
        head: http::response::Parts,
        body: Bytes,
        truncated: bool,
    ) -> Self {
        self.inner.head = Some(head);
        self.inner.body = body;
        self.inner.body_truncated = truncated;
        self
    }

    /// Reports that outer layers attach to the error, as they do to a
    /// response's extensions: the retry layer's attempts and time slept,
    /// the fallback's list of targets tried.
    pub fn extensions(&self) -> &http::Extensions {
        &self.inner.extensions
    }

    /// Mutable access to the [`extensions`](Self::extensions).
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.inner.extensions
    }

    /// The classification.
    pub fn classification(&self) -> &Classification {
        &self.inner.classification
    }

    /// The classification, to change it.
    pub fn classification_mut(&mut self) -> &mut Classification {
        &mut self.inner.classification
    }

    /// Shorthand for `classification().kind()`.
    pub fn kind(&self) -> ErrorKind {
        self.inner.classification.kind()
    }

    /// Shorthand for `classification().retryable()`.
    pub fn retryable(&self) -> bool {
        self.inner.classification.retryable()
    }

    /// The upstream response head, if the upstream answered.
    pub fn response_head(&self) -> Option<&http::response::Parts> {
        self.inner.head.as_ref()
    }

    /// The upstream body bytes that were read (bounded by the layer's limit).
    pub fn body(&self) -> &Bytes {
        &self.inner.body
    }

    /// Whether the upstream body was longer than what was kept.
    pub fn body_truncated(&self) -> bool {
        self.inner.body_truncated
    }

    /// The upstream response, rebuilt from its head and the body bytes kept,
    /// for a gateway to forward the provider's own error. `None` when the
    /// upstream never answered (connect failure, open circuit, stream error).
    ///
    /// `content-length` is set to the bytes kept and hop-by-hop headers are
    /// removed, so the response is valid even when the body was truncated.
    /// The account identifiers the body names (OpenAI's "in organization
    /// org-…", `proj_…`, `user-…`) are replaced by `org-[redacted]` and the
    /// like, and anything that looks like a key (`sk-…`, `AIza…`, a bearer
    /// token) by `[redacted]`, the rest of the provider's message kept
    /// ([`redact_upstream_body`](crate::redact::redact_upstream_body)).
    pub fn into_upstream_response(self) -> Option<Response<Bytes>> {
        self.try_into_upstream_response().ok()
    }

    fn try_into_upstream_response(self) -> Result<Response<Bytes>, Self> {
        let mut inner = self.inner;
        let Some(mut head) = inner.head.take() else {
            return Err(LlmError { inner });
        };
        let body = crate::redact::redact_upstream_body(std::mem::take(&mut inner.body));
        for name in crate::redact::HOP_BY_HOP_HEADERS {
            head.headers.remove(name);
        }
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(Response::from_parts(head, body))
    }

    /// A response for a gateway to send: the upstream's own when there was
    /// one ([`into_upstream_response`](LlmError::into_upstream_response)),
    /// otherwise an OpenAI-shaped JSON error with the
    /// [status that fits the kind](ErrorKind::gateway_status) and a
    /// `retry-after` header when a delay is known.
    pub fn into_response(self) -> Response<Bytes> {
        self.try_into_upstream_response()
            .unwrap_or_else(|err| err.synthesized_response())
    }

    fn synthesized_response(&self) -> Response<Bytes> {
        let c = &self.inner.classification;
        let status =
            StatusCode::from_u16(c.kind().gateway_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let message = self.to_string();
        let body = serde_json::json!({
            "error": {
                "message": message,
                "type": c.kind().as_str(),
                "param": null,
                "code": c.code().unwrap_or(c.kind().as_str()),
            }
        });
        let body = Bytes::from(body.to_string());
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(delay) = c.retry_after() {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.classification, f)
    }
}

impl fmt::Debug for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LlmError");
        d.field("classification", &self.inner.classification);
        if let Some(head) = &self.inner.head {
            d.field("status", &head.status.as_u16())
                .field("headers", &crate::redact::RedactedHeaders(&head.headers));
        }
        d.field("body_len", &self.inner.body.len())
            .field("body_truncated", &self.inner.body_truncated);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for LlmError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

impl From<Classification> for LlmError {
    fn from(classification: Classification) -> Self {
        LlmError::new(classification)
    }
}

/// A boxed error: the `LlmError` inside when there is one (unboxed, not
/// wrapped again), else classified from its chain
/// ([`from_source`](LlmError::from_source)).
impl From<BoxError> for LlmError {
    fn from(error: BoxError) -> Self {
        LlmError::from_source(error)
    }
}

impl From<std::convert::Infallible> for LlmError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// `From` for the error types of the clients a stack runs over, so that a
/// layer bounding its inner service's error by `Into<LlmError>` works over
/// [`Classify`](crate::Classify) (whose error is already an `LlmError`: no
/// conversion at all), over a `BoxError` service, and over a raw client.
macro_rules! llm_error_from_source {
    ($($(#[$meta:meta])* $ty:ty),* $(,)?) => {$(
        $(#[$meta])*
        impl From<$ty> for LlmError {
            fn from(error: $ty) -> Self {
                LlmError::from_source(error)
            }
        }
    )*};
}

/// Calls `$apply!` with the error types of the clients a stack runs over:
/// the one list both `From<_> for LlmError` and `Classified` are written
/// for.
macro_rules! for_client_errors {
    ($apply:ident) => {
        $apply!(
            std::io::Error,
            tokio::time::error::Elapsed,
            #[cfg(feature = "hyper")]
            hyper::Error,
            #[cfg(feature = "hyper")]
            hyper_util::client::legacy::Error,
            #[cfg(feature = "reqwest")]
            reqwest::Error,
            #[cfg(feature = "tower")]
            tower::timeout::error::Elapsed,
        );
    };
}

for_client_errors!(llm_error_from_source);

/// Reads the [`Classification`] out of an error, whatever its type.
///
/// Outer layers bound their inner service's error by this trait, so they work
/// over the [`Classify`](crate::Classify) layer (whose error is [`LlmError`]),
/// over a `BoxError` stack that carries an `LlmError` somewhere in its chain,
/// and directly over a raw client (its transport errors are classified by
/// walking the chain).
///
/// ```
/// use tower_llm_classify::{BoxError, Classified, ErrorKind};
///
/// fn should_retry<E: Classified>(err: &E) -> bool {
///     err.classification().retryable()
/// }
///
/// let err: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// assert!(should_retry(&err));
/// assert_eq!(err.classification().kind(), ErrorKind::Transport);
/// ```
pub trait Classified {
    /// The classification: borrowed when the error carries one, computed
    /// from the error chain otherwise.
    fn classification(&self) -> Cow<'_, Classification>;
}

impl Classified for LlmError {
    fn classification(&self) -> Cow<'_, Classification> {
        Cow::Borrowed(&self.inner.classification)
    }
}

impl Classified for BoxError {
    fn classification(&self) -> Cow<'_, Classification> {
        classified_from_chain(&**self)
    }
}

impl Classified for Box<dyn StdError + Send> {
    fn classification(&self) -> Cow<'_, Classification> {
        classified_from_chain(&**self)
    }
}

impl Classified for Box<dyn StdError> {
    fn classification(&self) -> Cow<'_, Classification> {
        classified_from_chain(&**self)
    }
}

fn classified_from_chain<'a>(error: &'a (dyn StdError + 'static)) -> Cow<'a, Classification> {
    let mut link = Some(error);
    let mut depth = 0;
    while let Some(err) = link {
        if let Some(llm) = err.downcast_ref::<LlmError>() {
            return Cow::Borrowed(llm.classification());
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        link = err.source();
    }
    Cow::Owned(crate::classify_error(error))
}

macro_rules! classified_by_chain {
    ($($(#[$meta:meta])* $ty:ty),* $(,)?) => {$(
        $(#[$meta])*
        impl Classified for $ty {
            fn classification(&self) -> Cow<'_, Classification> {
                Cow::Owned(crate::classify_error(self))
            }
        }
    )*};
}

for_client_errors!(classified_by_chain);

impl Classified for std::convert::Infallible {
    fn classification(&self) -> Cow<'_, Classification> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Provider;

    fn upstream_error() -> LlmError {
        let response = Response::builder()
            .status(429)
            .header("content-length", "9999")
            .header("retry-after", "2")
            .header("x-request-id", "req_1")
            .body(())
            .unwrap();
        let (head, ()) = response.into_parts();
        LlmError::new(
            Classification::new(ErrorKind::RateLimited)
                .with_status(StatusCode::TOO_MANY_REQUESTS)
                .with_provider(Provider::OpenAi)
                .with_message("Rate limit reached for sk-proj-1234567890abcdef"),
        )
        .with_response(head, Bytes::from_static(b"{\"error\":{}}"), true)
    }

    #[test]
    fn upstream_response_is_rebuilt_with_a_consistent_length() {
        let response = upstream_error().into_upstream_response().unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["content-length"], "12");
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.body().as_ref(), b"{\"error\":{}}");
    }

    fn openai_429(body: &'static [u8]) -> LlmError {
        let (head, ()) = Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(())
            .unwrap()
            .into_parts();
        LlmError::new(Classification::new(ErrorKind::RateLimited)).with_response(
            head,
            Bytes::from_static(body),
            false,
        )
    }

    #[test]
    fn an_upstream_rate_limit_keeps_its_message_but_not_the_organization() {
        let body: &[u8] = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-AbC123 on tokens per min (TPM): Limit 30000, Used 29871, Requested 3950. Please try again in 7.66s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
        let response = openai_429(body).into_upstream_response().unwrap();
        let sent = String::from_utf8(response.body().to_vec()).unwrap();
        assert!(!sent.contains("AbC123"), "{sent}");
        assert!(
            sent.contains("Rate limit reached for gpt-4o in organization org-[redacted] on tokens per min (TPM): Limit 30000"),
            "{sent}"
        );
        assert_eq!(
            response.headers()["content-length"],
            response.body().len().to_string().as_str()
        );
    }

    #[test]
    fn an_upstream_project_id_is_redacted_from_the_forwarded_body() {
        let body: &[u8] = br#"{"error":{"message":"Raise the limit at https://platform.openai.com/settings/proj_Xy7Tq2Lm9Rk4/limits.","code":"project_spend_limit_exceeded"}}"#;
        let response = openai_429(body).into_response();
        let sent = String::from_utf8(response.body().to_vec()).unwrap();
        assert!(sent.contains("/settings/proj_[redacted]/limits."), "{sent}");
    }

    #[test]
    fn an_upstream_body_without_ids_is_forwarded_byte_for_byte() {
        let body: &[u8] = br#"{"error":{"message":"Rate limit reached for gpt-4o on requests per min (RPM): Limit 500.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let response = openai_429(body).into_upstream_response().unwrap();
        assert_eq!(response.body().as_ref(), body);
        assert_eq!(response.body().as_ptr(), body.as_ptr());
    }

    #[test]
    fn an_upstream_body_that_echoes_a_key_is_forwarded_without_it() {
        let body: &[u8] = br#"{"error":{"message":"Invalid value for 'api_key': sk-proj-AbC123dEf456gHi789 (sent as Bearer sk-live-999)","type":"invalid_request_error"}}"#;
        let response = openai_429(body).into_upstream_response().unwrap();
        let text = std::str::from_utf8(response.body()).unwrap();
        assert!(!text.contains("AbC123"), "{text}");
        assert!(!text.contains("sk-live"), "{text}");
        assert!(
            text.contains("Invalid value for 'api_key': [redacted]"),
            "{text}"
        );
        assert_eq!(
            response.headers()[http::header::CONTENT_LENGTH],
            text.len().to_string().as_str()
        );
    }

    #[test]
    fn display_redacts_keys_echoed_by_the_provider() {
        let text = upstream_error().to_string();
        assert!(!text.contains("sk-proj"), "{text}");
        assert!(
            text.starts_with("rate limited (HTTP 429 from openai)"),
            "{text}"
        );
    }

    #[test]
    fn synthesized_response_is_openai_shaped_with_retry_after() {
        let err = LlmError::new(Classification::new(ErrorKind::RateLimited).with_hint(Some(
            crate::hint::Hint {
                delay: std::time::Duration::from_millis(1500),
                source: crate::hint::HintSource::RetryAfter,
            },
        )));
        let response = err.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["type"], "rate_limited");
    }

    #[test]
    fn a_boxed_llm_error_converts_back_without_a_new_classification() {
        let boxed: BoxError = Box::new(LlmError::local(ErrorKind::NotFound, "no route"));
        let error: LlmError = boxed.into();
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert!(error.source().is_none(), "unwrapped, not wrapped again");
    }

    #[test]
    fn a_client_error_converts_by_its_classification() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let error: LlmError = io.into();
        assert_eq!(error.kind(), ErrorKind::Transport);
        assert!(error.source().is_some(), "the client's error is kept");
    }

    #[test]
    fn from_source_unwraps_a_boxed_llm_error() {
        let boxed: BoxError = Box::new(LlmError::new(Classification::new(ErrorKind::NotFound)));
        assert_eq!(LlmError::from_source(boxed).kind(), ErrorKind::NotFound);
    }

    #[test]
    fn a_boxed_llm_error_is_read_without_copying() {
        let boxed: BoxError = Box::new(upstream_error());
        assert!(matches!(boxed.classification(), Cow::Borrowed(_)));
    }
}
