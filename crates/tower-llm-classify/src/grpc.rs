//! gRPC: `grpc-status` in trailers or in a trailers-only response.

use http::HeaderMap;

use crate::hint;
use crate::{Classification, ErrorKind};

/// Classifies a gRPC status from the headers of a trailers-only response or
/// from the trailers of a streamed one. `None` when there is no
/// `grpc-status` or it is `0` (OK).
///
/// Codes map as gRPC's A6 retry design and tower-http's
/// `GrpcErrorsAsFailures` read them: `UNAVAILABLE` is overload,
/// `RESOURCE_EXHAUSTED` a rate limit (with `grpc-retry-pushback-ms` as the
/// hint), `DEADLINE_EXCEEDED` a timeout; a negative pushback means "do not
/// retry" (gRPC A6).
///
/// ```
/// use tower_llm_classify::{classify_grpc, ErrorKind};
///
/// let mut trailers = http::HeaderMap::new();
/// trailers.insert("grpc-status", "14".parse().unwrap());
/// trailers.insert("grpc-message", "upstream connect error".parse().unwrap());
/// let c = classify_grpc(&trailers).unwrap();
/// assert_eq!(c.kind(), ErrorKind::Overloaded);
/// assert!(c.retryable());
/// ```
pub fn classify_grpc(headers: &HeaderMap) -> Option<Classification> {
    let code: u16 = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let (kind, name) = match code {
        0 => return None,
        1 => (ErrorKind::Cancelled, "CANCELLED"),
        2 => (ErrorKind::Unknown, "UNKNOWN"),
        3 => (ErrorKind::InvalidRequest, "INVALID_ARGUMENT"),
        4 => (ErrorKind::Timeout, "DEADLINE_EXCEEDED"),
        5 => (ErrorKind::NotFound, "NOT_FOUND"),
        6 => (ErrorKind::Conflict, "ALREADY_EXISTS"),
        7 => (ErrorKind::Permission, "PERMISSION_DENIED"),
        8 => (ErrorKind::RateLimited, "RESOURCE_EXHAUSTED"),
        9 => (ErrorKind::InvalidRequest, "FAILED_PRECONDITION"),
        10 => (ErrorKind::Conflict, "ABORTED"),
        11 => (ErrorKind::InvalidRequest, "OUT_OF_RANGE"),
        12 => (ErrorKind::InvalidRequest, "UNIMPLEMENTED"),
        13 => (ErrorKind::ServerError, "INTERNAL"),
        14 => (ErrorKind::Overloaded, "UNAVAILABLE"),
        15 => (ErrorKind::ServerError, "DATA_LOSS"),
        16 => (ErrorKind::Authentication, "UNAUTHENTICATED"),
        _ => (ErrorKind::Unknown, "UNKNOWN"),
    };
    let mut classification = Classification::new(kind)
        .with_code(name)
        .with_hint(hint::direct_hint(headers, std::time::SystemTime::now()));
    // gRPC A6: a pushback that is present but not a valid non-negative
    // integer means the server asks not to be retried.
    if let Some(pushback) = headers.get("grpc-retry-pushback-ms")
        && pushback
            .to_str()
            .ok()
            .and_then(hint::parse_milliseconds)
            .is_none()
    {
        classification = classification.with_retryable(false);
    }
    if let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) {
        // `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
        classification = classification.with_message(&crate::meta::percent_decode(message));
    }
    Some(classification)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn ok_status_is_not_a_failure() {
        assert_eq!(classify_grpc(&trailers(&[("grpc-status", "0")])), None);
        assert_eq!(classify_grpc(&HeaderMap::new()), None);
        assert_eq!(classify_grpc(&trailers(&[("grpc-status", "banana")])), None);
    }

    #[test]
    fn resource_exhausted_reads_the_pushback() {
        let c = classify_grpc(&trailers(&[
            ("grpc-status", "8"),
            ("grpc-retry-pushback-ms", "250"),
        ]))
        .unwrap();
        assert_eq!(c.kind(), ErrorKind::RateLimited);
        assert_eq!(c.retry_after(), Some(std::time::Duration::from_millis(250)));
    }

    #[test]
    fn negative_pushback_forbids_retry() {
        let c = classify_grpc(&trailers(&[
            ("grpc-status", "14"),
            ("grpc-retry-pushback-ms", "-1"),
        ]))
        .unwrap();
        assert!(!c.retryable());
    }

    #[test]
    fn messages_are_percent_decoded() {
        let c = classify_grpc(&trailers(&[
            ("grpc-status", "13"),
            ("grpc-message", "boom%20here"),
        ]))
        .unwrap();
        assert_eq!(c.message(), Some("boom here"));
    }
}
