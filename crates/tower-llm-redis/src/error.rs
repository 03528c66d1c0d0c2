//! What can go wrong when shared state is set up.

use std::fmt;

/// Why [`SharedState`](crate::SharedState) could not be set up. Redis
/// being down is not one of them: the state starts degraded and connects
/// when it can.
#[derive(Debug)]
#[non_exhaustive]
pub enum SharedStateError {
    /// The URL is not a Redis URL (`redis://host:port/db`).
    InvalidUrl(redis::RedisError),
    /// The key prefix is empty or holds a space or a control character.
    InvalidPrefix,
    /// The queue to Redis must hold at least one decision.
    ZeroQueue,
    /// Not inside a Tokio runtime: the background tasks need one.
    NoRuntime,
    /// These breakers already share their decisions elsewhere.
    AlreadySharing,
}

impl fmt::Display for SharedStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The URL itself is not shown: it may hold a password.
            SharedStateError::InvalidUrl(_) => f.write_str("the shared state URL is not a Redis URL"),
            SharedStateError::InvalidPrefix => f.write_str(
                "the shared state key prefix must be non-empty, without spaces or control characters",
            ),
            SharedStateError::ZeroQueue => f.write_str("the shared state queue must hold at least one decision"),
            SharedStateError::NoRuntime => {
                f.write_str("shared state must be connected inside a Tokio runtime")
            }
            SharedStateError::AlreadySharing => {
                f.write_str("these breakers already share their decisions elsewhere")
            }
        }
    }
}

impl std::error::Error for SharedStateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SharedStateError::InvalidUrl(e) => Some(e),
            _ => None,
        }
    }
}
