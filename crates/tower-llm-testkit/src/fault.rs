//! What one request gets: a healthy answer, a provider error, or a
//! transport-level misbehaviour, before or during the body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::delay::Delay;
use crate::failure::{Failure, RetryHint};
use crate::spec::format_duration;

/// What the simulator does with one request.
///
/// A fault is a *base* behaviour — answer, fail with a provider error,
/// stall, reset, close — plus optional latency before the response headers
/// and, for answers, a delay between streamed events and a way for the
/// stream to go wrong after `n` content events.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_testkit::{Delay, Fault};
///
/// let slow_429 = Fault::rate_limited(Duration::from_secs(2))
///     .with_latency(Delay::fixed(Duration::from_millis(300)));
/// assert_eq!(slow_429.to_string(), "rate_limited@2s+latency=300ms");
///
/// // An Anthropic-style overload as the first event of a 200 stream.
/// let first_event_error = Fault::stream_error_after(0);
/// assert_eq!(first_event_error.to_string(), "error@0");
/// ```
///
/// Every fault prints in the syntax [`FaultPlan`](crate::FaultPlan) parses
/// (see the crate README), so recorded requests name their fault readably.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub(crate) latency: Delay,
    pub(crate) action: Action,
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
    pub(crate) cut: Option<Cut>,
}

/// How a stream goes wrong.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cut {
    /// An in-band error event after `n` content events, then a clean end.
    Error(usize, Failure),
    /// The connection closes after `n` content events (no terminal chunk).
    Drop(usize),
    /// Nothing more after `n` content events but keep-alives.
    Stall(usize),
    /// Every content event, then a clean end without the terminal event.
    NoTerminal,
}

impl Fault {
    /// A healthy answer.
    pub fn ok() -> Self {
        Fault {
            latency: Delay::ZERO,
            action: Action::Answer(StreamShape::default()),
        }
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

    /// A provider error reply.
    pub fn fail(failure: Failure) -> Self {
        Fault {
            latency: Delay::ZERO,
            action: Action::Fail(failure),
        }
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
        Fault {
            latency: Delay::ZERO,
            action: Action::Raw(Arc::new(reply)),
        }
    }

    /// The request is read and never answered; the connection stays open.
    pub fn stall() -> Self {
        Fault {
            latency: Delay::ZERO,
            action: Action::Stall,
        }
    }

    /// The connection is reset (TCP RST) before any response byte.
    pub fn reset() -> Self {
        Fault {
            latency: Delay::ZERO,
            action: Action::Reset,
        }
    }

    /// The connection is closed (FIN) before any response byte.
    pub fn close() -> Self {
        Fault {
            latency: Delay::ZERO,
            action: Action::Close,
        }
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
    /// (SSE comment, Anthropic `ping`) keep flowing.
    pub fn stream_stall_after(n: usize) -> Self {
        Fault::cut(Cut::Stall(n))
    }

    /// A 200 stream with every content event that ends cleanly without its
    /// terminal event (`[DONE]`, `message_stop`, `"done":true`).
    pub fn stream_without_terminal() -> Self {
        Fault::cut(Cut::NoTerminal)
    }

    fn cut(cut: Cut) -> Self {
        Fault {
            latency: Delay::ZERO,
            action: Action::Answer(StreamShape {
                token_delay: Delay::ZERO,
                cut: Some(cut),
            }),
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

    /// The latency before the response headers.
    pub fn latency_before_headers(&self) -> Delay {
        self.latency
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
        match &self.action {
            Action::Answer(shape) => {
                token_delay = shape.token_delay;
                match &shape.cut {
                    None => f.write_str("ok")?,
                    Some(Cut::Error(n, Failure::Overloaded)) => write!(f, "error@{n}")?,
                    Some(Cut::Error(n, failure)) => write!(f, "error@{n}:{failure}")?,
                    Some(Cut::Drop(n)) => write!(f, "drop@{n}")?,
                    Some(Cut::Stall(n)) => write!(f, "stall@{n}")?,
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
