//! [`ErrorKind`]: what went wrong, in words that do not depend on the provider.

use std::fmt;

/// What went wrong with an LLM call, independent of the provider that said so.
///
/// Every layer of tower-llm decides from this value alone: retry retries the
/// [transient](ErrorKind::is_transient) kinds, the circuit breaker counts the
/// kinds that say [the target is unhealthy](ErrorKind::is_target_failure), and
/// fallback routes by kind (a [`ContextLengthExceeded`](ErrorKind::ContextLengthExceeded)
/// goes to a larger-context model, a [`ContentFiltered`](ErrorKind::ContentFiltered)
/// to another provider).
///
/// The list follows LiteLLM's exception classes
/// (`litellm_core_utils/exception_mapping_utils.py`), with the distinctions
/// LiteLLM lacks: a quota that retrying cannot restore is not a rate limit, and
/// global overload is not a per-account rate limit.
///
/// ```
/// use tower_llm_classify::ErrorKind;
///
/// assert!(ErrorKind::RateLimited.is_transient());
/// assert!(!ErrorKind::QuotaExhausted.is_transient());
/// assert_eq!(ErrorKind::Overloaded.as_str(), "overloaded");
/// assert_eq!("context_length_exceeded".parse(), Ok(ErrorKind::ContextLengthExceeded));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A per-account or per-key rate limit (RPM/TPM): wait (the server usually
    /// says how long) or go to another key.
    RateLimited,
    /// Quota, credit or spend limit exhausted: retrying cannot help until
    /// someone pays or the period resets (OpenAI `insufficient_quota`,
    /// Anthropic `enforced_spend_limit_reached`, Gemini per-day quotas, 402).
    QuotaExhausted,
    /// The provider as a whole is over capacity (Anthropic 529, OpenAI
    /// `server_is_overloaded`, Gemini `UNAVAILABLE`, 503): not a limit on the
    /// account. The best trigger for cross-provider fallback.
    Overloaded,
    /// An internal error of the provider (500, 502, `api_error`).
    ServerError,
    /// The call or the provider timed out (408, 504, a local timeout).
    Timeout,
    /// No connection could be made (refused, DNS, TLS handshake). The request
    /// was never sent.
    Connect,
    /// The connection broke after it was made (reset, closed, incomplete body,
    /// protocol error).
    Transport,
    /// The credentials were rejected (401).
    Authentication,
    /// The credentials are valid but not allowed to do this (403, region).
    Permission,
    /// The model, deployment or resource does not exist (404).
    NotFound,
    /// The request itself is wrong (400, 422, unsupported feature).
    InvalidRequest,
    /// The prompt does not fit the model's context window. Never retried; a
    /// larger-context model may serve it.
    ContextLengthExceeded,
    /// The provider's safety system rejected the prompt or the output.
    ContentFiltered,
    /// The request body is too large for the provider (413), or a single
    /// request exceeds a tokens-per-minute limit and can never fit.
    PayloadTooLarge,
    /// A conflicting concurrent operation (409); the SDKs retry it.
    Conflict,
    /// Refused locally by an open circuit breaker or a cooldown.
    CircuitOpen,
    /// Refused locally because the retry (or hedging) budget is spent.
    BudgetExhausted,
    /// The call was cancelled (by the caller, or Ollama's 499).
    Cancelled,
    /// A stream ended early: dropped, stalled or without its terminal event.
    StreamIncomplete,
    /// Nothing more specific is known.
    Unknown,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 20] = [
        ErrorKind::RateLimited,
        ErrorKind::QuotaExhausted,
        ErrorKind::Overloaded,
        ErrorKind::ServerError,
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Transport,
        ErrorKind::Authentication,
        ErrorKind::Permission,
        ErrorKind::NotFound,
        ErrorKind::InvalidRequest,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::ContentFiltered,
        ErrorKind::PayloadTooLarge,
        ErrorKind::Conflict,
        ErrorKind::CircuitOpen,
        ErrorKind::BudgetExhausted,
        ErrorKind::Cancelled,
        ErrorKind::StreamIncomplete,
        ErrorKind::Unknown,
    ];

    /// Whether trying the same request again on the same target may succeed.
    ///
    /// The transient kinds are those every official SDK retries (408, 409,
    /// 429, ≥ 500, connection errors, timeouts; `_should_retry` in
    /// openai-python's and anthropic-python's `_base_client.py`) minus the
    /// 429s that are quota, plus broken streams. Whether a *particular* failure
    /// is retryable also depends on the phase and on `x-should-retry`:
    /// see [`Classification::retryable`](crate::Classification::retryable).
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Connect
                | ErrorKind::Transport
                | ErrorKind::Conflict
                | ErrorKind::StreamIncomplete
        )
    }

    /// Whether this failure says the *target* is unhealthy (what a circuit
    /// breaker counts), as opposed to the request being wrong or a limit on the
    /// account.
    ///
    /// Rate limits and quotas are not counted: they feed a cooldown instead.
    /// Authentication is not counted here; the circuit layer can opt in.
    pub const fn is_target_failure(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Connect
                | ErrorKind::Transport
                | ErrorKind::StreamIncomplete
        )
    }

    /// Whether the failure was produced by a tower-llm layer rather than by the
    /// upstream (an open circuit, a spent budget).
    pub const fn is_local(self) -> bool {
        matches!(self, ErrorKind::CircuitOpen | ErrorKind::BudgetExhausted)
    }

    /// The stable `snake_case` name of the kind, used in logs, metrics labels
    /// and configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Transport => "transport",
            ErrorKind::Authentication => "authentication",
            ErrorKind::Permission => "permission",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::ContentFiltered => "content_filtered",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Conflict => "conflict",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::BudgetExhausted => "budget_exhausted",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::StreamIncomplete => "stream_incomplete",
            ErrorKind::Unknown => "unknown",
        }
    }

    /// A short human description, used by `Display`.
    pub const fn description(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::QuotaExhausted => "quota exhausted",
            ErrorKind::Overloaded => "provider overloaded",
            ErrorKind::ServerError => "provider server error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Connect => "connection failed",
            ErrorKind::Transport => "connection broken",
            ErrorKind::Authentication => "authentication failed",
            ErrorKind::Permission => "permission denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::ContextLengthExceeded => "context length exceeded",
            ErrorKind::ContentFiltered => "content filtered",
            ErrorKind::PayloadTooLarge => "payload too large",
            ErrorKind::Conflict => "conflict",
            ErrorKind::CircuitOpen => "circuit open",
            ErrorKind::BudgetExhausted => "retry budget exhausted",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::StreamIncomplete => "stream incomplete",
            ErrorKind::Unknown => "unknown error",
        }
    }

    /// The HTTP status a gateway should answer with when it has no upstream
    /// response to forward (OpenAI-compatible clients act on these).
    pub const fn gateway_status(self) -> u16 {
        match self {
            ErrorKind::RateLimited | ErrorKind::QuotaExhausted | ErrorKind::BudgetExhausted => 429,
            ErrorKind::Overloaded | ErrorKind::CircuitOpen => 503,
            ErrorKind::ServerError | ErrorKind::Connect | ErrorKind::Transport => 502,
            ErrorKind::StreamIncomplete | ErrorKind::Unknown => 502,
            ErrorKind::Timeout => 504,
            ErrorKind::Authentication => 401,
            ErrorKind::Permission => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::InvalidRequest
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::ContentFiltered => 400,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Conflict => 409,
            ErrorKind::Cancelled => 499,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

crate::names::named_enum!(ErrorKind, UnknownErrorKind, "error kind");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "ratelimited".parse::<ErrorKind>().unwrap_err();
        assert!(err.to_string().contains("rate_limited"));
    }

    #[test]
    fn quota_is_never_transient_but_rate_limit_is() {
        assert!(ErrorKind::RateLimited.is_transient());
        assert!(!ErrorKind::QuotaExhausted.is_transient());
        assert!(!ErrorKind::ContextLengthExceeded.is_transient());
        assert!(!ErrorKind::CircuitOpen.is_transient());
    }

    #[test]
    fn circuit_counts_overload_but_not_rate_limits_or_bad_requests() {
        assert!(ErrorKind::Overloaded.is_target_failure());
        assert!(!ErrorKind::RateLimited.is_target_failure());
        assert!(!ErrorKind::InvalidRequest.is_target_failure());
    }
}
