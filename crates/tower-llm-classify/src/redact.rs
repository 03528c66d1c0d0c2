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
/// replaces every word that looks like a credential (an API key prefix, or
/// what follows `Bearer`) with `[redacted]`.
pub(crate) fn redact_message(message: &str, max_len: usize) -> String {
    let mut end = message.len().min(max_len);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message[..end];
    let mut out = String::with_capacity(message.len());
    let mut after_bearer = false;
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        let looks_like_key = KEY_PREFIXES.iter().any(|p| bare.starts_with(p)) && bare.len() > 8;
        if (after_bearer && !word.is_empty()) || looks_like_key {
            out.push_str("[redacted]");
            let trailing: String = word
                .chars()
                .rev()
                .take_while(|c| matches!(c, '.' | ',' | ';' | ')' | '"' | '\''))
                .collect();
            out.extend(trailing.chars().rev());
        } else {
            out.push_str(word);
        }
        after_bearer = word.eq_ignore_ascii_case("bearer");
    }
    out
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
    fn long_messages_are_cut_on_a_char_boundary() {
        let out = redact_message("ééééé", 3);
        assert_eq!(out, "é");
    }
}
