//! What the gateway tells a caller about what happened to its request (the
//! `x-tower-llm-*` headers and trailer), and the upstream's headers it
//! keeps to itself.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use tower_llm::classify::redact::{ACCOUNT_HEADERS, HOP_BY_HOP_HEADERS};
use tower_llm::fallback::FallbackReport;

/// The header naming the target that served a response.
pub const TARGET_HEADER: &str = "x-tower-llm-target";
/// The header giving the attempts the serving target took (1: no retry).
pub const ATTEMPTS_HEADER: &str = "x-tower-llm-attempts";
/// The header listing the targets passed on the way, with why
/// (`primary:overloaded, azure:rate_limited`).
pub const FALLBACKS_HEADER: &str = "x-tower-llm-fallbacks";
/// The trailer saying how many times a streamed answer was continued after
/// it broke, and by which targets (`2; backup, backup`). A stream's head is
/// sent before anything can break, so this is a trailer, sent when the
/// caller asked for trailers (`TE: trailers`) and announced in the head's
/// `Trailer`; every caller has it in the metrics and the log.
pub const CONTINUED_TRAILER: &str = "x-tower-llm-continued";

/// Response headers that stay at the gateway: hop-by-hop ones (RFC 9110
/// §7.6.1) and those the `connection` header names, cookies, the
/// identity of the gateway's own upstream account, and any `x-tower-llm-*`
/// (an upstream that is itself a gateway says what happened *there*; what
/// this gateway says is set after this, and read by its own metrics).
pub(crate) fn keep_to_gateway(headers: &mut HeaderMap) {
    // One look at the names present (an answer has a handful), then a
    // removal only for those that must stay here: removing each listed
    // name in turn would hash some twenty names per answer.
    let mut kept: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let listed = HOP_BY_HOP_HEADERS
            .iter()
            .chain(&ACCOUNT_HEADERS)
            .chain(&["set-cookie"])
            .any(|listed| *listed == name.as_str())
            || name.as_str().starts_with("x-tower-llm-");
        if listed {
            kept.push(name.clone());
        }
    }
    if headers.contains_key(header::CONNECTION) {
        kept.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
        );
    }
    for name in kept {
        headers.remove(name);
    }
}

/// The attempts header's value (a copy only past nine attempts).
pub(crate) fn attempts_value(attempts: u32) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(attempts as usize) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(attempts),
    }
}

/// The fallbacks header's value: each target passed, with why.
pub(crate) fn passed_targets(report: &FallbackReport) -> String {
    report
        .failed_kinds()
        .into_iter()
        .map(|(target, kind)| format!("{target}:{}", kind.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sets `name` to `value` when `value` is a valid header value.
pub(crate) fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}
