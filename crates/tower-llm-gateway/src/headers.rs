//! What the gateway tells a caller about what happened to its request (the
//! `x-tower-llm-*` headers and trailer), and the upstream's headers it
//! keeps to itself.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use tower_llm::classify::redact::{ACCOUNT_HEADERS, CREDENTIAL_HEADERS, HOP_BY_HOP_HEADERS};
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

/// [`TARGET_HEADER`] as a name, made at compile time: a name given as
/// text is parsed on every use (`HeaderMap::get("…")`,
/// `HeaderName::from_static` outside a constant).
pub(crate) const TARGET: HeaderName = HeaderName::from_static(TARGET_HEADER);
/// [`ATTEMPTS_HEADER`] as a name.
pub(crate) const ATTEMPTS: HeaderName = HeaderName::from_static(ATTEMPTS_HEADER);
/// [`FALLBACKS_HEADER`] as a name.
pub(crate) const FALLBACKS: HeaderName = HeaderName::from_static(FALLBACKS_HEADER);

/// The listed names [`keep_to_gateway`] keeps from callers. Credentials
/// (`set-cookie` among them) are never echoed: an upstream, or a proxy in
/// front of it, that reflects the request's headers would hand the
/// target's own key to the caller.
const KEPT: [&[&str]; 3] = [&HOP_BY_HOP_HEADERS, &ACCOUNT_HEADERS, &CREDENTIAL_HEADERS];

/// The lengths of the [`KEPT`] names, as bits.
const KEPT_LENGTHS: u64 = {
    let mut bits = 0u64;
    let mut list = 0;
    while list < KEPT.len() {
        let mut i = 0;
        while i < KEPT[list].len() {
            // Every listed name is shorter than 64 bytes (checked here, at
            // compile time).
            assert!(KEPT[list][i].len() < 64);
            bits |= 1 << KEPT[list][i].len();
            i += 1;
        }
        list += 1;
    }
    bits
};

/// Response headers that stay at the gateway: hop-by-hop ones (RFC 9110
/// §7.6.1) and those the `connection` header names, credentials and
/// cookies, the identity of the gateway's own upstream account, and any
/// `x-tower-llm-*`
/// (an upstream that is itself a gateway says what happened *there*; what
/// this gateway says is set after this, and read by its own metrics).
pub(crate) fn keep_to_gateway(headers: &mut HeaderMap) {
    // One look at the names present (an answer has a handful), then a
    // removal only for those that must stay here: removing each listed
    // name in turn would hash some twenty names per answer. The usual few
    // (a stream's `transfer-encoding`) are noted in place, with no
    // allocation; a list only past eight.
    let mut few: [Option<HeaderName>; 8] = [const { None }; 8];
    let mut kept: Vec<HeaderName> = Vec::new();
    let mut count = 0;
    for name in headers.keys() {
        let name_str = name.as_str();
        // Most names (`content-type`, the `x-ratelimit-*`) are ruled out
        // by their length alone.
        let listed = (KEPT_LENGTHS.checked_shr(name_str.len() as u32).unwrap_or(0) & 1 == 1
            && KEPT
                .iter()
                .flat_map(|list| list.iter())
                .any(|listed| *listed == name_str))
            || name_str.starts_with("x-tower-llm-");
        if listed {
            match few.get_mut(count) {
                Some(slot) => *slot = Some(name.clone()),
                None => kept.push(name.clone()),
            }
            count += 1;
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
    for name in few.into_iter().flatten().chain(kept) {
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
pub(crate) fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(names: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for name in names {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap_or(header::WARNING),
                HeaderValue::from_static("v"),
            );
        }
        headers
    }

    #[test]
    fn an_answers_hop_by_hop_account_and_own_headers_stay_at_the_gateway() {
        let mut headers = answer(&[
            "content-type",
            "transfer-encoding",
            "openai-organization",
            "set-cookie",
            "x-tower-llm-target",
            "x-request-id",
            "x-listed",
        ]);
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-listed"),
        );
        keep_to_gateway(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }

    #[test]
    fn credentials_an_upstream_reflects_never_reach_the_caller() {
        let mut headers = answer(&[
            "content-type",
            "authorization",
            "x-api-key",
            "api-key",
            "proxy-authorization",
            "x-goog-api-key",
            "ocp-apim-subscription-key",
        ]);
        keep_to_gateway(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn every_listed_name_stays_at_the_gateway_and_names_of_their_lengths_pass() {
        for name in KEPT.iter().flat_map(|list| list.iter()) {
            // A name of the same length that is not listed goes on.
            let alike = format!("{}x", &name[..name.len() - 1]);
            let mut headers = answer(&[name, &alike, "content-type"]);
            keep_to_gateway(&mut headers);
            let mut left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
            left.sort_unstable();
            let mut expected = [alike.as_str(), "content-type"];
            expected.sort_unstable();
            assert_eq!(left, expected, "{name}");
        }
    }

    #[test]
    fn more_listed_headers_than_noted_in_place_all_stay_at_the_gateway() {
        let names: Vec<String> = (0..12).map(|i| format!("x-tower-llm-{i}")).collect();
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.push("content-type");
        let mut headers = answer(&all);
        keep_to_gateway(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }
}
