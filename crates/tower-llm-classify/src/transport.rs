//! Classifying errors that are not responses: connection, transport and
//! timeout errors from hyper, hyper-util, reqwest, `std::io` and tower.
//!
//! The classifier walks the whole `source()` chain, since clients wrap the
//! error that matters (hyper-util's `Error` holds a `hyper::Error` that holds
//! an `io::Error`), and takes the most telling link. tower-http's
//! `classify_error` only sees `Display` (`E: fmt::Display` in its
//! `src/classify/mod.rs`), so it cannot tell a refused connection (safe to
//! send elsewhere) from a reset mid-body.

use std::error::Error as StdError;
use std::io;

use crate::classification::Phase;
use crate::{Classification, ErrorKind, LlmError};

/// Classifies any error by walking its source chain.
///
/// An [`LlmError`] anywhere in the chain gives its own classification.
/// Otherwise: connection refused, DNS and TLS failures are
/// [`Connect`](ErrorKind::Connect) (the request was not sent); resets, broken
/// pipes, unexpected EOF and incomplete messages are
/// [`Transport`](ErrorKind::Transport); elapsed timers (tower, tokio,
/// hyper, reqwest) are [`Timeout`](ErrorKind::Timeout); a cancelled
/// request is [`Cancelled`](ErrorKind::Cancelled).
///
/// ```
/// use std::io;
/// use tower_llm_classify::{classify_error, ErrorKind};
///
/// let err = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
/// assert_eq!(classify_error(&err).kind(), ErrorKind::Connect);
/// let err = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
/// assert_eq!(classify_error(&err).kind(), ErrorKind::Transport);
/// ```
pub fn classify_error(error: &(dyn StdError + 'static)) -> Classification {
    let mut kind = None;
    let mut phase = None;
    let mut link: Option<&(dyn StdError + 'static)> = Some(error);
    let mut depth = 0;
    while let Some(err) = link {
        if let Some(llm) = err.downcast_ref::<LlmError>() {
            return llm.classification().clone();
        }
        if let Some((k, p)) = classify_link(err) {
            // Outer links say where (connect vs. request); inner links say
            // what (the io::ErrorKind). Keep the most specific of each.
            if kind.is_none() || k != ErrorKind::Unknown {
                kind = Some(k);
            }
            phase = p.or(phase);
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        link = err.source();
    }
    let kind = match kind {
        Some(ErrorKind::Unknown) | None => ErrorKind::Transport,
        Some(kind) => kind,
    };
    let phase = match kind {
        ErrorKind::Connect => Phase::Connect,
        _ => phase.unwrap_or(Phase::BeforeHeaders),
    };
    Classification::new(kind)
        .with_phase(phase)
        .with_message(&root_message(error))
}

/// The innermost error's message, which is what names the cause.
fn root_message(error: &(dyn StdError + 'static)) -> String {
    let mut innermost = error;
    let mut depth = 0;
    while let Some(next) = innermost.source() {
        innermost = next;
        depth += 1;
        if depth > 32 {
            break;
        }
    }
    if depth == 0 {
        error.to_string()
    } else {
        format!("{error}: {innermost}")
    }
}

fn classify_link(err: &(dyn StdError + 'static)) -> Option<(ErrorKind, Option<Phase>)> {
    if let Some(io) = err.downcast_ref::<io::Error>() {
        return Some((classify_io(io), None));
    }
    #[cfg(feature = "tower")]
    if err.is::<tower::timeout::error::Elapsed>() {
        return Some((ErrorKind::Timeout, None));
    }
    if err.is::<tokio::time::error::Elapsed>() {
        return Some((ErrorKind::Timeout, None));
    }
    #[cfg(feature = "hyper")]
    if let Some(e) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
        if e.is_connect() {
            return Some((ErrorKind::Connect, Some(Phase::Connect)));
        }
        return Some((ErrorKind::Unknown, None));
    }
    #[cfg(feature = "hyper")]
    if let Some(e) = err.downcast_ref::<hyper::Error>() {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_canceled() {
            ErrorKind::Cancelled
        } else {
            // Incomplete message, closed channel, parse and body errors:
            // the connection broke after it was made.
            ErrorKind::Transport
        };
        return Some((kind, None));
    }
    #[cfg(feature = "reqwest")]
    if let Some(e) = err.downcast_ref::<reqwest::Error>() {
        let (kind, phase) = if e.is_timeout() {
            (ErrorKind::Timeout, None)
        } else if e.is_connect() {
            (ErrorKind::Connect, Some(Phase::Connect))
        } else if e.is_body() || e.is_decode() {
            (ErrorKind::Transport, Some(Phase::AfterHeaders))
        } else if e.is_builder() || e.is_request() && e.url().is_none() {
            (ErrorKind::InvalidRequest, None)
        } else {
            (ErrorKind::Unknown, None)
        };
        return Some((kind, phase));
    }
    // Last resort: words that clients put in their messages.
    let text = err.to_string().to_ascii_lowercase();
    if text.contains("dns error")
        || text.contains("failed to lookup address")
        || text.contains("certificate")
        || text.contains("tls handshake")
        || text.contains("connection refused")
    {
        return Some((ErrorKind::Connect, Some(Phase::Connect)));
    }
    if text.contains("timed out") || text.contains("deadline has elapsed") {
        return Some((ErrorKind::Timeout, None));
    }
    None
}

fn classify_io(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused
        | K::AddrNotAvailable
        | K::AddrInUse
        | K::NotFound
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => ErrorKind::Connect,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected
        | K::WriteZero
        | K::InvalidData => ErrorKind::Transport,
        K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
        K::Interrupted => ErrorKind::Cancelled,
        _ => ErrorKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (SendRequest)")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn walks_the_chain_to_the_io_error() {
        let err = Wrapper(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        ));
        let c = classify_error(&err);
        assert_eq!(c.kind(), ErrorKind::Transport);
        assert_eq!(c.phase(), Phase::BeforeHeaders);
        assert!(c.retryable());
        assert_eq!(
            c.message(),
            Some("client error (SendRequest): connection reset by peer")
        );
    }

    #[test]
    fn refused_connection_is_connect_phase() {
        let err = Wrapper(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        let c = classify_error(&err);
        assert_eq!((c.kind(), c.phase()), (ErrorKind::Connect, Phase::Connect));
    }

    #[test]
    fn an_llm_error_in_the_chain_keeps_its_classification() {
        let inner = LlmError::new(Classification::new(ErrorKind::QuotaExhausted));
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(inner);
        assert_eq!(classify_error(&*boxed).kind(), ErrorKind::QuotaExhausted);
    }

    #[test]
    fn tower_timeouts_are_timeouts() {
        let err = tower::timeout::error::Elapsed::new();
        assert_eq!(classify_error(&err).kind(), ErrorKind::Timeout);
    }

    #[test]
    fn an_unrecognised_error_is_transport_before_headers() {
        let err = io::Error::other("something odd");
        let c = classify_error(&err);
        assert_eq!(
            (c.kind(), c.phase()),
            (ErrorKind::Transport, Phase::BeforeHeaders)
        );
    }
}
