//! What one request gets: a healthy answer, a provider error, or a
//! transport-level misbehaviour, before or during the body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::delay::Delay;
use crate::failure::{Failure, RetryHint};
use crate::prefill::PrefillMode;
use crate::spec::format_duration;

/// What the simulator does with one request.
///
/// A fault is a *base* behaviour — answer, fail with a provider error,
/// stall, reset, close — plus optional latency before the response headers,
/// for answers a delay before the first content and between streamed
/// events and a way for the stream to go wrong after `n` content events,
/// and what to do with a prefill.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_testkit::{Delay, Fault, PrefillMode};
///
/// let slow_429 = Fault::rate_limited(Duration::from_secs(2))
///     .with_latency(Delay::fixed(Duration::from_millis(300)));
/// assert_eq!(slow_429.to_string(), "rate_limited@2s+latency=300ms");
///
/// // An Anthropic-style overload as the first event of a 200 stream.
/// let first_event_error = Fault::stream_error_after(0);
/// assert_eq!(first_event_error.to_string(), "error@0");
///
/// // Cut after 40 content events; the request for the rest is refused.
/// let cut = Fault::stream_drop_after(40);
/// let refusing = Fault::ok().with_prefill(PrefillMode::Refuse);
/// assert_eq!(format!("{cut},{refusing}"), "drop@40,ok+prefill=refuse");
///
/// // A reasoning model: the head at once, the first token 20 s later.
/// let thinking = Fault::slow_first_token(Duration::from_secs(20));
/// assert_eq!(thinking.to_string(), "ok+first=20s");
/// ```
///
/// Every fault prints in the syntax [`FaultPlan`](crate::FaultPlan) parses
/// (see the crate README), so recorded requests name their fault readably.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub(crate) latency: Delay,
    pub(crate) action: Action,
    /// What this request does with a prefill; `None`: the simulator's mode.
    pub(crate) prefill: Option<PrefillMode>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    Answer(StreamShape),
    Fail(Failure),
    Raw(Arc<RawReply>),
    Stall,
    Reset,
    Close,
}

/// A reply given verbatim.
#[derive(Debug, PartialEq)]
pub(crate) struct RawReply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// How a healthy answer is delivered.
#[derive(Clone, Debug, PartialEq, Default)]
pub(crate) struct StreamShape {
    pub(crate) token_delay: Delay,
    /// The wait between the events before the first content (the head,
    /// the role chunk, `message_start`) and the first content.
    pub(crate) first_token: Delay,
    pub(crate) cut: Option<Cut>,
}

/// How a stream goes wrong.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cut {
    /// An in-band error event after `n` content events, then a clean end.
    Error(usize, Failure),
    /// The connection closes after `n` content events (no terminal chunk).
    Drop(usize),
    /// Nothing more after `after` content events; keep-alives go on if
    /// `keepalive` (and the API has any).
    Stall { after: usize, keepalive: bool },
    /// Every content event, then a clean end without the terminal event.
    NoTerminal,
}

impl Fault {
    /// A healthy answer.
    pub fn ok() -> Self {
        Fault::new(Action::Answer(StreamShape::default()))
    }

    /// A healthy answer after `latency` (before the response headers).
    pub fn latency(latency: impl Into<Delay>) -> Self {
        Fault::ok().with_latency(latency)
    }

    /// A healthy answer whose streamed content events come `delay` apart
    /// (the first comes at once, with the events before it).
    pub fn slow_tokens(delay: impl Into<Delay>) -> Self {
        Fault::ok().with_token_delay(delay)
    }

    /// A healthy answer whose first content comes `delay` after the head
    /// (a model that thinks before it writes): see
    /// [`with_first_token_delay`](Self::with_first_token_delay).
    pub fn slow_first_token(delay: impl Into<Delay>) -> Self {
        Fault::ok().with_first_token_delay(delay)
    }

    /// A healthy answer, except that a request that carries a prefill is
    /// refused with the provider's 400: short for
    /// `Fault::ok().with_prefill(PrefillMode::Refuse)` (`ok+prefill=refuse`).
    pub fn refuse_prefill() -> Self {
        Fault::ok().with_prefill(PrefillMode::Refuse)
    }

    /// A provider error reply.
    pub fn fail(failure: Failure) -> Self {
        Fault::new(Action::Fail(failure))
    }

    /// The usual error reply for `status`: 429 is a rate limit asking for
    /// one second, 529 an overload, other 5xx server errors, 400 a bad
    /// request, 401 a bad key, 404 an unknown model; anything else a
    /// generic body with that status.
    pub fn status(status: u16) -> Self {
        Fault::fail(match status {
            429 => Failure::rate_limited(Duration::from_secs(1)),
            529 => Failure::Overloaded,
            400 => Failure::InvalidRequest("The request could not be processed.".into()),
            401 => Failure::Unauthorized,
            404 => Failure::ModelNotFound,
            s if s >= 500 => Failure::ServerError(s),
            s => Failure::Status(s),
        })
    }

    /// 429 asking the client to wait `retry_after` (`retry-after` in
    /// seconds plus the API's reset headers).
    pub fn rate_limited(retry_after: Duration) -> Self {
        Fault::fail(Failure::rate_limited(retry_after))
    }

    /// 429 with the wait carried by the headers `hint` names.
    pub fn rate_limited_with(retry_after: Duration, hint: RetryHint) -> Self {
        Fault::fail(Failure::rate_limited_with(retry_after, hint))
    }

    /// 429 without any hint of how long to wait.
    pub fn rate_limited_without_hint() -> Self {
        Fault::fail(Failure::rate_limited_without_hint())
    }

    /// Out of quota (429 `insufficient_quota` / spend limit): no retry helps.
    pub fn quota_exhausted() -> Self {
        Fault::fail(Failure::QuotaExhausted)
    }

    /// The provider is overloaded (529 on Anthropic, 503 elsewhere).
    pub fn overloaded() -> Self {
        Fault::fail(Failure::Overloaded)
    }

    /// A server error with `status` (500, 502, 503, 504, …).
    pub fn server_error(status: u16) -> Self {
        Fault::fail(Failure::ServerError(status))
    }

    /// 400: the prompt exceeds the context window.
    pub fn context_length_exceeded() -> Self {
        Fault::fail(Failure::ContextLengthExceeded)
    }

    /// 400: refused by a content policy.
    pub fn content_filtered() -> Self {
        Fault::fail(Failure::ContentFiltered)
    }

    /// 401: bad API key.
    pub fn unauthorized() -> Self {
        Fault::fail(Failure::Unauthorized)
    }

    /// 404: unknown model.
    pub fn model_not_found() -> Self {
        Fault::fail(Failure::ModelNotFound)
    }

    /// Exactly this reply.
    pub fn raw(status: StatusCode, headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        let reply = RawReply {
            status,
            headers,
            body: body.into(),
        };
        Fault::new(Action::Raw(Arc::new(reply)))
    }

    /// The request is read and never answered: no status line, no header,
    /// no byte at all, and the connection stays open (a silent upstream).
    pub fn stall() -> Self {
        Fault::new(Action::Stall)
    }

    /// The connection is reset (TCP RST) before any response byte.
    pub fn reset() -> Self {
        Fault::new(Action::Reset)
    }

    /// The connection is closed (FIN) before any response byte.
    pub fn close() -> Self {
        Fault::new(Action::Close)
    }

    /// A 200 stream that sends `n` content events, then an in-band
    /// overload error (`data: {"error":…}`, `event: error`, `{"error":…}`),
    /// then ends. With `n = 0` the error is the stream's very first event
    /// (no role chunk, no `message_start`), as providers send an overload.
    pub fn stream_error_after(n: usize) -> Self {
        Fault::stream_error_after_with(n, Failure::Overloaded)
    }

    /// As [`stream_error_after`](Self::stream_error_after) with the given error.
    pub fn stream_error_after_with(n: usize, failure: Failure) -> Self {
        Fault::cut(Cut::Error(n, failure))
    }

    /// A 200 stream whose connection closes after `n` content events,
    /// without the terminal chunk (clients see an incomplete chunked read).
    pub fn stream_drop_after(n: usize) -> Self {
        Fault::cut(Cut::Drop(n))
    }

    /// A 200 stream that stops after `n` content events while keep-alives
    /// (SSE comment, Anthropic `ping`) keep flowing: the connection stays
    /// open, and only bytes that carry no content arrive. Ollama has no
    /// keep-alive, so there the stream is silent.
    pub fn stream_stall_after(n: usize) -> Self {
        Fault::cut(Cut::Stall {
            after: n,
            keepalive: true,
        })
    }

    /// A 200 stream that stops after `n` content events and then sends
    /// nothing at all, with the connection open.
    pub fn stream_stall_silent_after(n: usize) -> Self {
        Fault::cut(Cut::Stall {
            after: n,
            keepalive: false,
        })
    }

    /// A 200 stream with every content event that ends cleanly without its
    /// terminal event (`[DONE]`, `message_stop`, `"done":true`).
    pub fn stream_without_terminal() -> Self {
        Fault::cut(Cut::NoTerminal)
    }

    fn cut(cut: Cut) -> Self {
        Fault::new(Action::Answer(StreamShape {
            cut: Some(cut),
            ..StreamShape::default()
        }))
    }

    fn new(action: Action) -> Self {
        Fault {
            latency: Delay::ZERO,
            action,
            prefill: None,
        }
    }

    /// Adds `latency` before the response headers.
    pub fn with_latency(mut self, latency: impl Into<Delay>) -> Self {
        self.latency = latency.into();
        self
    }

    /// Spaces streamed content events `delay` apart. No effect on faults
    /// that do not answer.
    pub fn with_token_delay(mut self, delay: impl Into<Delay>) -> Self {
        if let Action::Answer(shape) = &mut self.action {
            shape.token_delay = delay.into();
        }
        self
    }

    /// Holds the first content of a streamed answer back for `delay`: the
    /// head and what comes before content (OpenAI's role chunk,
    /// Anthropic's `message_start`, `content_block_start` and `ping`) go out
    /// at once, the first content event after `delay`, the rest as the
    /// token delay says. A whole (non-streamed) answer's head only comes
    /// when it is all written, so there `delay` is spent before the head.
    /// No effect on faults that do not answer.
    pub fn with_first_token_delay(mut self, delay: impl Into<Delay>) -> Self {
        if let Action::Answer(shape) = &mut self.action {
            shape.first_token = delay.into();
        }
        self
    }

    /// Handles a prefill as `mode` says for the requests that get this
    /// fault, whatever the simulator's own mode
    /// ([`SimulatorBuilder::prefill`](crate::SimulatorBuilder::prefill)).
    /// A refusal or Anthropic's and vLLM's 400s are sent after the fault's
    /// latency, instead of what the fault would do.
    pub fn with_prefill(mut self, mode: PrefillMode) -> Self {
        self.prefill = Some(mode);
        self
    }

    /// The latency before the response headers.
    pub fn latency_before_headers(&self) -> Delay {
        self.latency
    }

    /// The prefill mode this fault sets, if it sets one.
    pub fn prefill_mode(&self) -> Option<PrefillMode> {
        self.prefill
    }

    /// Whether this fault gives a complete, healthy answer (possibly slow).
    pub fn is_healthy(&self) -> bool {
        matches!(&self.action, Action::Answer(StreamShape { cut: None, .. }))
    }

    /// The provider error this fault replies with, if it is one.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.action {
            Action::Fail(failure) => Some(failure),
            _ => None,
        }
    }
}

impl Default for Fault {
    fn default() -> Self {
        Fault::ok()
    }
}

impl From<Failure> for Fault {
    fn from(failure: Failure) -> Self {
        Fault::fail(failure)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut token_delay = Delay::ZERO;
        let mut first_token = Delay::ZERO;
        match &self.action {
            Action::Answer(shape) => {
                token_delay = shape.token_delay;
                first_token = shape.first_token;
                match &shape.cut {
                    None => f.write_str("ok")?,
                    Some(Cut::Error(n, Failure::Overloaded)) => write!(f, "error@{n}")?,
                    Some(Cut::Error(n, failure)) => write!(f, "error@{n}:{failure}")?,
                    Some(Cut::Drop(n)) => write!(f, "drop@{n}")?,
                    Some(Cut::Stall {
                        after,
                        keepalive: true,
                    }) => write!(f, "stall@{after}")?,
                    Some(Cut::Stall {
                        after,
                        keepalive: false,
                    }) => write!(f, "stall@{after}:silent")?,
                    Some(Cut::NoTerminal) => f.write_str("truncate")?,
                }
            }
            Action::Fail(failure) => write!(f, "{failure}")?,
            Action::Raw(reply) => write!(f, "raw:{}", reply.status.as_u16())?,
            Action::Stall => f.write_str("stall")?,
            Action::Reset => f.write_str("reset")?,
            Action::Close => f.write_str("close")?,
        }
        if !self.latency.is_zero() {
            write!(f, "+latency={}", DelaySpec(self.latency))?;
        }
        if !token_delay.is_zero() {
            write!(f, "+tokens={}", DelaySpec(token_delay))?;
        }
        if !first_token.is_zero() {
            write!(f, "+first={}", DelaySpec(first_token))?;
        }
        if let Some(mode) = self.prefill {
            write!(f, "+prefill={mode}")?;
        }
        Ok(())
    }
}

/// A delay in the fault syntax: `50ms`, `10ms..30ms`, `50ms~500ms`.
pub(crate) struct DelaySpec(pub(crate) Delay);

impl fmt::Display for DelaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.parts() {
            crate::delay::Parts::Fixed(d) => f.write_str(&format_duration(d)),
            crate::delay::Parts::Uniform(min, max) => {
                write!(f, "{}..{}", format_duration(min), format_duration(max))
            }
            crate::delay::Parts::LongTail(median, p99) => {
                write!(f, "{}~{}", format_duration(median), format_duration(p99))
            }
        }
    }
}
