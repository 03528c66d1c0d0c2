//! Keeping credentials out of logs, errors and other targets' requests.

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
/// token after `Bearer` — with `[redacted]`. A key cut short by the length
/// limit is still redacted.
pub(crate) fn redact_message(message: &str, max_len: usize) -> String {
    let message = cut(message, max_len);
    // Fast path: most messages hold nothing that looks like a credential.
    let suspicious = KEY_PREFIXES.iter().any(|p| message.contains(p))
        || memchr::memmem::find(message.as_bytes(), b"earer").is_some()
        || memchr::memmem::find(message.as_bytes(), b"EARER").is_some();
    if !suspicious {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let out = redact_message("ééééé", 3);
        assert_eq!(out, "é");
    }
}
