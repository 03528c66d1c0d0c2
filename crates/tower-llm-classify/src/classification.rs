//! [`Classification`] and [`Phase`]: everything an outer layer needs to decide.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::hint::Hint;
use crate::{ErrorKind, Provider};

/// Where in the life of a call a failure happened.
///
/// It decides what may safely be done about it: a request that failed to
/// connect was never sent and can go anywhere; once content has reached the
/// caller, nothing may be replayed (the rule of thumb "after the first
/// token, the client owns the failure"; anomalyco/opencode #38747).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Phase {
    /// Refused by a tower-llm layer before any I/O (open circuit, spent budget).
    Local,
    /// While connecting: the request was not sent.
    Connect,
    /// The request was (maybe partly) sent and no response head arrived.
    BeforeHeaders,
    /// The response head arrived, but no content had reached the caller: an
    /// error status, or a stream that failed before its first content event.
    AfterHeaders,
    /// Content had already been delivered to the caller.
    MidStream,
}

impl Phase {
    /// A stable name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Local => "local",
            Phase::Connect => "connect",
            Phase::BeforeHeaders => "before_headers",
            Phase::AfterHeaders => "after_headers",
            Phase::MidStream => "mid_stream",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with one call, read once from the response (status,
/// provider error body, headers), the error chain, or the stream.
///
/// Outer layers decide from this value alone: retry from
/// [`retryable`](Classification::retryable) and [`hint`](Classification::hint),
/// the circuit breaker from [`kind`](Classification::kind), fallback from the
/// kind and the [`phase`](Classification::phase).
///
/// ```
/// use std::time::Duration;
/// use tower_llm_classify::{Classification, ErrorKind, Phase, Provider};
///
/// let c = Classification::new(ErrorKind::Overloaded)
///     .with_provider(Provider::Anthropic)
///     .with_status(http::StatusCode::from_u16(529).unwrap());
/// assert!(c.retryable());
/// // The same failure after content reached the caller must not be replayed.
/// assert!(!c.clone().with_phase(Phase::MidStream).retryable());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Classification {
    kind: ErrorKind,
    phase: Phase,
    retry_override: Option<bool>,
    hint: Option<Hint>,
    status: Option<StatusCode>,
    provider: Provider,
    code: Option<Box<str>>,
    request_id: Option<Box<str>>,
    message: Option<Box<str>>,
    basis: Basis,
}

/// What decided a classification's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basis {
    /// A status, an error code or type, a header, the transport, a layer.
    Signals,
    /// A whole provider message template, under a status that is not a
    /// client error (or in a stream without one).
    Message,
    /// A whole provider message template under a 4xx status.
    MessageOnClientError,
}

/// Longest provider message kept in a classification.
pub(crate) const MAX_MESSAGE_LEN: usize = 1024;

impl Classification {
    /// A classification of `kind`, with no status, hint or provider detail,
    /// in phase [`AfterHeaders`](Phase::AfterHeaders) (or
    /// [`Local`](Phase::Local) for kinds that tower-llm layers produce).
    pub fn new(kind: ErrorKind) -> Self {
        Classification {
            kind,
            phase: if kind.is_local() {
                Phase::Local
            } else {
                Phase::AfterHeaders
            },
            retry_override: None,
            hint: None,
            status: None,
            provider: Provider::Unknown,
            code: None,
            request_id: None,
            message: None,
            basis: Basis::Signals,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Where in the call it went wrong.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether sending the same request to the same target again may succeed
    /// and is safe.
    ///
    /// Never after content reached the caller ([`Phase::MidStream`]) and never
    /// for refusals by tower-llm itself. Otherwise the server's
    /// `x-should-retry` (or an override set with
    /// [`with_retryable`](Classification::with_retryable)) decides, and failing
    /// that whether the kind [is transient](ErrorKind::is_transient).
    pub fn retryable(&self) -> bool {
        if self.phase == Phase::MidStream || self.kind.is_local() {
            return false;
        }
        self.retry_override
            .unwrap_or_else(|| self.kind.is_transient())
    }

    /// The server's `x-should-retry` answer or a user override, if any.
    pub fn retry_override(&self) -> Option<bool> {
        self.retry_override
    }

    /// The delay the server asked for, if it said one.
    pub fn hint(&self) -> Option<Hint> {
        self.hint
    }

    /// The hinted delay alone.
    pub fn retry_after(&self) -> Option<Duration> {
        self.hint.map(|hint| hint.delay)
    }

    /// The HTTP status of the upstream response, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Who answered.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The provider's own error code or type (`insufficient_quota`,
    /// `overloaded_error`, `RESOURCE_EXHAUSTED`, `ThrottlingException`), the
    /// most specific one the body or headers gave.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The provider's request id (`x-request-id`, `request-id`, …), for
    /// support tickets.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The provider's error message (or a description of a transport error),
    /// at most 1 KiB, with anything that looks like a credential redacted.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Whether the kind was read from the provider's message text alone
    /// (a whole provider template, see [`classify_response`](crate::classify_response)),
    /// no status, error code or header saying as much.
    pub fn decided_by_message(&self) -> bool {
        self.basis != Basis::Signals
    }

    /// Whether this failure may count against the target in state that
    /// every caller shares: open a circuit breaker, start a cooldown.
    ///
    /// `false` for a verdict read from message text alone under a 4xx
    /// status. Providers repeat the caller's request in their 4xx messages
    /// ("Unrecognized request argument supplied: X"), so however careful the
    /// matching, one caller must never be able to shut a target for
    /// everyone with the text of a request. The failure is still reported
    /// and routed as its kind says (fallback may move on).
    pub fn may_penalise_target(&self) -> bool {
        self.basis != Basis::MessageOnClientError
    }

    /// Marks the kind as read from the message text, under `status` (the
    /// HTTP status, or the one an in-band error carried).
    pub(crate) fn decided_by_message_text(mut self, status: Option<u16>) -> Self {
        self.basis = if status.is_some_and(|s| (400..500).contains(&s)) {
            Basis::MessageOnClientError
        } else {
            Basis::Message
        };
        self
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self.basis = Basis::Signals;
        self
    }

    /// Sets the phase.
    pub fn with_phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    /// Overrides the kind-based retry decision (as `x-should-retry` does).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retry_override = Some(retryable);
        self
    }

    pub(crate) fn with_retry_override(mut self, retry: Option<bool>) -> Self {
        self.retry_override = retry;
        self
    }

    /// Sets the server hint.
    pub fn with_hint(mut self, hint: Option<Hint>) -> Self {
        self.hint = hint;
        self
    }

    /// Sets the upstream status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the provider.
    pub fn with_provider(mut self, provider: Provider) -> Self {
        self.provider = provider;
        self
    }

    /// Sets the provider error code.
    pub fn with_code(mut self, code: impl Into<Box<str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, request_id: impl Into<Box<str>>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the message; it is cut to 1 KiB and credentials in it are redacted.
    pub fn with_message(mut self, message: &str) -> Self {
        self.message = Some(crate::redact::redact_message(message, MAX_MESSAGE_LEN).into());
        self
    }

    pub(crate) fn set_code(&mut self, code: Option<Box<str>>) {
        self.code = code;
    }

    pub(crate) fn set_request_id(&mut self, request_id: Option<Box<str>>) {
        self.request_id = request_id;
    }
}

impl fmt::Debug for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Classification");
        d.field("kind", &self.kind)
            .field("retryable", &self.retryable())
            .field("phase", &self.phase);
        if let Some(hint) = &self.hint {
            d.field("hint", hint);
        }
        if let Some(status) = &self.status {
            d.field("status", &status.as_u16());
        }
        d.field("provider", &self.provider);
        if let Some(code) = &self.code {
            d.field("code", code);
        }
        if let Some(id) = &self.request_id {
            d.field("request_id", id);
        }
        if let Some(message) = &self.message {
            d.field("message", message);
        }
        if self.basis != Basis::Signals {
            d.field("basis", &self.basis);
        }
        d.finish()
    }
}

/// `rate limited (HTTP 429 from openai, rate_limit_exceeded, retry after 2s, request id req_1): Rate limit reached…`
impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.description())?;
        let mut open = false;
        let mut part = |f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>| -> fmt::Result {
            f.write_str(if open { ", " } else { " (" })?;
            open = true;
            f.write_fmt(args)
        };
        match (self.status, self.provider) {
            (Some(status), Provider::Unknown) => part(f, format_args!("HTTP {}", status.as_u16()))?,
            (Some(status), provider) => {
                part(f, format_args!("HTTP {} from {provider}", status.as_u16()))?
            }
            (None, Provider::Unknown) => {}
            (None, provider) => part(f, format_args!("{provider}"))?,
        }
        if let Some(code) = &self.code {
            part(f, format_args!("{code}"))?;
        }
        if self.phase == Phase::MidStream {
            part(f, format_args!("after content"))?;
        }
        if let Some(hint) = &self.hint {
            part(f, format_args!("retry after {:?}", hint.delay))?;
        }
        if let Some(id) = &self.request_id {
            part(f, format_args!("request id {id}"))?;
        }
        if open {
            f.write_str(")")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}
