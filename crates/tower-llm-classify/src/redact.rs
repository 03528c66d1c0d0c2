//! Keeping credentials out of logs, errors and other targets' requests.

use bytes::Bytes;
use http::HeaderName;

/// Request headers that carry credentials. They are never logged or echoed,
/// and never forwarded from one target to another.
pub const CREDENTIAL_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
    "ocp-apim-subscription-key",
];

/// The request headers that carry a provider API key, in the order a key
/// is looked for (OpenAI's bearer token, Anthropic's, Azure OpenAI's,
/// Gemini's, Azure API Management's subscription key): every one is also
/// a [`CREDENTIAL_HEADERS`] entry. The circuit's per-key breakers
/// fingerprint the first one present.
pub const API_KEY_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
];

/// Hop-by-hop headers: they describe one connection and are never passed
/// on, in either direction (RFC 9110 §7.6.1; RFC 2616 §13.5.1 for
/// `keep-alive`, `proxy-authenticate`; `proxy-connection` as sent by old
/// clients). A proxy also drops every header its `connection` names.
pub const HOP_BY_HOP_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that name the provider account behind a call (OpenAI's
/// `openai-organization` and `openai-project`, Anthropic's
/// `anthropic-organization-id`): a gateway passes them neither from its
/// callers to a target nor from a target back to its callers.
pub const ACCOUNT_HEADERS: [&str; 3] = [
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
];

/// Whether `name` is a header that carries credentials.
///
/// ```
/// use tower_llm_classify::redact::is_credential_header;
///
/// assert!(is_credential_header(&http::header::AUTHORIZATION));
/// assert!(is_credential_header(&http::HeaderName::from_static("x-api-key")));
/// assert!(!is_credential_header(&http::header::CONTENT_TYPE));
/// ```
pub fn is_credential_header(name: &HeaderName) -> bool {
    CREDENTIAL_HEADERS.contains(&name.as_str())
}

/// Prefixes of API keys that providers sometimes echo in error messages
/// (OpenAI's "Incorrect API key provided: sk-proj-…").
const KEY_PREFIXES: [&str; 7] = ["sk-", "sk_", "AIza", "xai-", "gsk_", "pk-", "hf_"];

/// Cuts `message` to at most `max_len` bytes (on a char boundary) and
/// replaces every token that looks like a credential — one starting with an
/// API-key prefix at a word boundary (`sk-…`, `key=sk-…`, `"AIza…"`), or the
/// token after `Bearer` — with `[redacted]`, and every account identifier
/// after its prefix (`org-[redacted]`, see [`redact_account_ids`]). A key
/// cut short by the length limit is still redacted.
pub(crate) fn redact_message(message: &str, max_len: usize) -> String {
    let redacted = redact_keys(message, max_len);
    match redact_account_bytes(redacted.as_bytes()) {
        // Identifiers are ASCII runs replaced by ASCII: still UTF-8.
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            cut(&text, max_len).to_owned()
        }
        None => redacted,
    }
}

/// Whether `text` holds anything [`redact_keys`] would replace: a key
/// prefix or the word `Bearer`.
fn may_hold_a_key(text: &str) -> bool {
    KEY_PREFIXES.iter().any(|p| text.contains(p))
        || memchr::memmem::find(text.as_bytes(), b"earer").is_some()
        || memchr::memmem::find(text.as_bytes(), b"EARER").is_some()
}

fn redact_keys(message: &str, max_len: usize) -> String {
    let message = cut(message, max_len);
    // Fast path: most messages hold nothing that looks like a credential.
    if !may_hold_a_key(message) {
        return message.to_owned();
    }
    let bytes = message.as_bytes();
    let is_token_byte =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'+' | b'=');
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    let mut copied = 0;
    let mut after_bearer = false;
    while i < bytes.len() {
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let key_start = boundary
            && KEY_PREFIXES
                .iter()
                .any(|p| bytes[i..].starts_with(p.as_bytes()));
        if key_start || (after_bearer && is_token_byte(bytes[i])) {
            let mut end = i;
            while end < bytes.len() && is_token_byte(bytes[end]) {
                end += 1;
            }
            // Trailing punctuation belongs to the sentence, not the key.
            while end > i + 1 && matches!(bytes[end - 1], b'.' | b'=') {
                end -= 1;
            }
            out.push_str(&message[copied..i]);
            out.push_str("[redacted]");
            copied = end;
            i = end;
            after_bearer = false;
            continue;
        }
        if boundary && bytes[i..].len() >= 6 && bytes[i..i + 6].eq_ignore_ascii_case(b"bearer") {
            let after = i + 6;
            if bytes.get(after).is_some_and(|b| b.is_ascii_whitespace()) {
                after_bearer = true;
                i = after + 1;
                continue;
            }
        }
        if !bytes[i].is_ascii_whitespace() {
            after_bearer = false;
        }
        i += 1;
    }
    out.push_str(&message[copied..]);
    cut(&out, max_len).to_owned()
}

fn cut(message: &str, max_len: usize) -> &str {
    let mut end = message.len().min(max_len);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Prefixes of account identifiers that providers write into error
/// messages, as the headers `openai-organization` and `openai-project`
/// carry them: OpenAI organizations (`org-…`, "Rate limit reached for gpt-4o
/// in organization org-… on tokens per min"), projects (`proj_…`, also in
/// settings URLs) and users (`user-…`).
const ACCOUNT_PREFIXES: [&[u8]; 3] = [b"org-", b"proj_", b"user-"];

/// The words that introduce an identifier in a message ("in organization
/// org-x"): after them, an identifier is redacted whatever it looks like.
const ACCOUNT_LABELS: [&[u8]; 3] = [b"organization", b"project", b"user"];

/// What replaces an identifier after its prefix.
const REDACTED: &[u8] = b"[redacted]";

/// The spans (after the prefix) of the account identifiers in `text`, in
/// order. An identifier is a prefix at a word boundary followed by ASCII
/// letters and digits, redacted when a label introduces it or when it
/// looks generated: it has a digit or a capital (OpenAI's are 24 random
/// alphanumerics), and for `user-` at least 8 of them, so that words such
/// as "org-level" or "user-provided" stay.
fn account_ids(text: &[u8]) -> Vec<(usize, usize)> {
    static FINDERS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> =
        std::sync::LazyLock::new(|| ACCOUNT_PREFIXES.map(memchr::memmem::Finder::new));
    // A body without `org-`, `proj_` or `user-` is passed over by three
    // SIMD searches, and nothing is allocated.
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (finder, prefix) in FINDERS.iter().zip(ACCOUNT_PREFIXES) {
        for at in finder.find_iter(text) {
            let start = at + prefix.len();
            let end = start
                + text[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric())
                    .count();
            if end > start && at_word_start(text, at) && is_account_id(text, at, prefix, start..end)
            {
                found.push((start, end));
            }
        }
    }
    found.sort_unstable();
    found
}

/// Whether `at` starts a word: the text's start, a byte that is not a
/// letter or digit before it, or a JSON escape such as `\n` before it.
fn at_word_start(text: &[u8], at: usize) -> bool {
    at == 0 || !text[at - 1].is_ascii_alphanumeric() || (at >= 2 && text[at - 2] == b'\\')
}

fn is_account_id(text: &[u8], at: usize, prefix: &[u8], id: std::ops::Range<usize>) -> bool {
    let before = text[..at].trim_ascii_end();
    let labelled = ACCOUNT_LABELS.iter().any(|label| {
        before.len() >= label.len()
            && before[before.len() - label.len()..].eq_ignore_ascii_case(label)
    });
    let id = &text[id];
    let generated = id
        .iter()
        .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        && (prefix != b"user-" || id.len() >= 8);
    labelled || generated
}

/// `text` with every account identifier's characters after its prefix
/// replaced by `[redacted]` (`org-[redacted]`); `None` when there is none.
fn redact_account_bytes(text: &[u8]) -> Option<Vec<u8>> {
    let ids = account_ids(text);
    if ids.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in ids {
        if start < copied {
            continue;
        }
        out.extend_from_slice(&text[copied..start]);
        out.extend_from_slice(REDACTED);
        copied = end;
    }
    out.extend_from_slice(&text[copied..]);
    Some(out)
}

/// An upstream body with the account identifiers it names — OpenAI's
/// organizations (`org-…`), projects (`proj_…`) and users (`user-…`) —
/// replaced by `org-[redacted]` and the like, every other byte kept: the
/// provider's message still says what happened, and the caller of a
/// gateway does not learn whose account served it (the headers that name
/// it, `openai-organization` and `openai-project`, are not forwarded
/// either).
///
/// Any bytes are read (JSON of any provider's shape, text, invalid UTF-8);
/// a body with nothing to redact comes back as it is, without a copy.
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_classify::redact::redact_account_ids;
///
/// let body = Bytes::from_static(br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-AbC123 on tokens per min (TPM): Limit 30000, Used 30000, Requested 1."}}"#);
/// let redacted = redact_account_ids(body);
/// assert_eq!(&redacted[..], &br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-[redacted] on tokens per min (TPM): Limit 30000, Used 30000, Requested 1."}}"#[..]);
/// ```
pub fn redact_account_ids(body: Bytes) -> Bytes {
    match redact_account_bytes(&body) {
        Some(redacted) => Bytes::from(redacted),
        None => body,
    }
}

/// An upstream body as it may be handed to a caller: the account
/// identifiers of [`redact_account_ids`] redacted, and every token that
/// looks like a credential (`sk-…`, `AIza…`, the token after `Bearer`)
/// replaced by `[redacted]`, as in classification messages. A provider may
/// echo the key it was sent in any error (an upstream proxy's 400, a 404
/// that repeats the request); the caller of a gateway must not see the
/// gateway's key.
///
/// A body with nothing to redact comes back as it is, without a copy;
/// keys are looked for in UTF-8 bodies only.
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_classify::redact::redact_upstream_body;
///
/// let body = Bytes::from_static(br#"{"error":{"message":"upstream refused key sk-proj-AbC123dEf456 for org-XyZ789"}}"#);
/// assert_eq!(
///     &redact_upstream_body(body)[..],
///     &br#"{"error":{"message":"upstream refused key [redacted] for org-[redacted]"}}"#[..]
/// );
/// ```
pub fn redact_upstream_body(body: Bytes) -> Bytes {
    let body = redact_account_ids(body);
    match std::str::from_utf8(&body) {
        Ok(text) if may_hold_a_key(text) => Bytes::from(redact_keys(text, text.len())),
        _ => body,
    }
}

/// Shows a header map with credential values replaced by `[redacted]`.
pub(crate) struct RedactedHeaders<'a>(pub(crate) &'a http::HeaderMap);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_credential_header(name) {
                map.entry(&name.as_str(), &"[redacted]");
            } else {
                map.entry(&name.as_str(), &value);
            }
        }
        map.finish()
    }
}

/// A URL as it may be shown (in an error, a log, a `Debug`): its scheme,
/// host and path, without a user or password, a query (a key as a query
/// parameter, Gemini's `?key=`) or a fragment.
///
/// ```
/// use tower_llm_classify::redact::url_to_show;
///
/// assert_eq!(
///     url_to_show("https://u:p@example.com/v1beta?key=AIza#x"),
///     "https://example.com/v1beta"
/// );
/// assert_eq!(url_to_show("example.com/v1?key=AIza"), "example.com/v1");
/// ```
pub fn url_to_show(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or_default();
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_key_header_is_a_credential_header() {
        for name in API_KEY_HEADERS {
            assert!(CREDENTIAL_HEADERS.contains(&name), "{name}");
        }
    }

    #[test]
    fn echoed_api_keys_are_redacted() {
        let msg = "Incorrect API key provided: sk-proj-abc123456789. You can find your API key at https://platform.openai.com.";
        let out = redact_message(msg, 1024);
        assert!(!out.contains("sk-proj"), "{out}");
        assert!(out.contains("Incorrect API key provided: [redacted]."));
    }

    #[test]
    fn bearer_tokens_are_redacted() {
        let out = redact_message("header was Bearer abc.def.ghi and more", 1024);
        assert_eq!(out, "header was Bearer [redacted] and more");
    }

    #[test]
    fn keys_after_punctuation_and_cut_keys_are_redacted() {
        let out = redact_message(
            "bad key=sk-live-abcdef123456, api_key:\"AIzaSyA1234567\"",
            1024,
        );
        assert!(!out.contains("sk-live") && !out.contains("AIza"), "{out}");
        let out = redact_message("key sk-abcdefghijklmnop", 10);
        assert!(!out.contains("sk-a"), "{out}");
        assert!(out.len() <= 10);
    }

    #[test]
    fn ordinary_words_are_left_alone() {
        let msg = "task-based risk-free desk_lamp: Please retry after 20 seconds.";
        assert_eq!(redact_message(msg, 1024), msg);
    }

    const OPENAI_TPM_429: &[u8] = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-AbC123 on tokens per min (TPM): Limit 30000, Used 29871, Requested 3950. Please try again in 7.66s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;

    #[test]
    fn an_openai_rate_limit_body_keeps_its_message_and_loses_the_organization() {
        let out = redact_account_ids(Bytes::from_static(OPENAI_TPM_429));
        let expected =
            String::from_utf8_lossy(OPENAI_TPM_429).replace("org-AbC123", "org-[redacted]");
        assert_eq!(String::from_utf8_lossy(&out), expected);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn project_and_user_ids_are_redacted_wherever_they_are() {
        let body = br#"{"error":{"message":"This project has reached its monthly spend limit: https://platform.openai.com/settings/proj_Xy7Tq2Lm9Rk4/limits.\nuser-GQ8bZ8YiQH3F3oL2Sbw9eXxQ, org-3kQz8bXhN2vTt1Lw; in organization org-simulated","code":"project_spend_limit_exceeded"}}"#;
        let out = redact_account_ids(Bytes::from_static(body));
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"error":{"message":"This project has reached its monthly spend limit: https://platform.openai.com/settings/proj_[redacted]/limits.\nuser-[redacted], org-[redacted]; in organization org-[redacted]","code":"project_spend_limit_exceeded"}}"#
        );
    }

    #[test]
    fn a_body_without_ids_is_returned_as_it_is_without_a_copy() {
        for body in [
            &br#"{"error":{"message":"Overloaded","type":"overloaded_error"}}"#[..],
            br#"{"error":{"message":"org-level limits apply to user-provided keys; proj_ and user- alone are not ids"}}"#,
            b"",
            b"\xff\xfe org- \xc3",
            br#"{"error":{"message":"task-based workorg-AbC123 superuser-ABCDEFGH12"}}"#,
        ] {
            let body = Bytes::from_static(body);
            let out = redact_account_ids(body.clone());
            assert_eq!(out, body);
            assert_eq!(out.as_ptr(), body.as_ptr());
        }
    }

    #[test]
    fn invalid_utf8_around_an_id_is_kept_byte_for_byte() {
        let out = redact_account_ids(Bytes::from_static(b"\xff org-AbC123\xfe"));
        assert_eq!(&out[..], b"\xff org-[redacted]\xfe");
    }

    #[test]
    fn messages_lose_account_ids_too() {
        let out = redact_message(
            "Rate limit reached for gpt-4o in organization org-AbC123 on tokens per min",
            1024,
        );
        assert_eq!(
            out,
            "Rate limit reached for gpt-4o in organization org-[redacted] on tokens per min"
        );
        assert!(redact_message("in organization org-AbC123", 30).len() <= 30);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let out = redact_message("ééééé", 3);
        assert_eq!(out, "é");
    }
}
