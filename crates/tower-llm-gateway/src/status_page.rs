//! `GET /`: the status page, one static HTML file (no build step, no
//! external assets) whose script reads `/health` every two seconds: every
//! target's requests per second and p50/p99 over the last minute, every
//! breaker key with its state, failure rate and the time left open or
//! cooling down, every deployment of a group with its picks, load and
//! latency, whether decisions are shared through Redis, and the last
//! fallbacks with their reasons.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::header;

/// The page, compiled in.
const PAGE: &str = include_str!("status.html");

/// Its policy: nothing but its own inline script and style, named by
/// their SHA-256 (so no other inline script would run, were one ever
/// injected), requests to this origin only (`/health`), no sink that
/// parses HTML (Trusted Types: the script sets text only); never framed.
fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             require-trusted-types-for 'script'; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
            source_hash(inline(PAGE, "script")),
            source_hash(inline(PAGE, "style")),
        )
    })
}

/// The text between `<tag>` and `</tag>` in `page` (empty when absent).
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    page.split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map_or("", |(inside, _)| inside)
}

/// A CSP hash source for `text`: `sha256-` and its digest in base64.
fn source_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("sha256-{}", base64(digest.as_ref()))
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, policy()),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (text, encoded) in vectors {
            assert_eq!(base64(text.as_bytes()), encoded, "{text}");
        }
    }

    #[test]
    fn the_policy_names_the_pages_own_script_and_style_and_allows_no_other_inline_code() {
        let policy = policy();
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(!inline(PAGE, "script").is_empty());
        assert!(!inline(PAGE, "style").is_empty());
        assert!(
            policy.contains(&format!(
                "script-src '{}'",
                source_hash(inline(PAGE, "script"))
            )),
            "{policy}"
        );
        // SHA-256 of "abc" (FIPS 180-2), as CSP writes it.
        assert_eq!(
            source_hash("abc"),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn the_page_sets_text_only_and_loads_nothing_from_elsewhere() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE.contains(sink), "the page uses {sink}");
        }
        for external in ["http://", "https://", "src="] {
            assert!(!PAGE.contains(external), "the page loads {external}");
        }
    }
}
