//! [`RequestMeta`]: provider, model and streaming flag, read once per request.

use std::borrow::Cow;

use http::{HeaderMap, Uri};

use crate::stream::Dialect;
use crate::{Provider, json};

/// What a request is, read once from its URI and a cheap scan of its JSON
/// body, and attached as a request extension so that later layers never
/// parse it again.
///
/// The [`Classify`](crate::Classify) layer inserts it when the request does
/// not already carry one; a layer that collects the body itself (retry) can
/// build it with [`RequestMeta::from_request`] and insert it first.
///
/// ```
/// use tower_llm_classify::{Provider, RequestMeta};
///
/// let uri: http::Uri = "https://api.openai.com/v1/chat/completions".parse().unwrap();
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
/// let meta = RequestMeta::from_request(&uri, &http::HeaderMap::new(), Some(body));
/// assert_eq!(meta.provider, Provider::OpenAi);
/// assert_eq!(meta.model.as_deref(), Some("gpt-4o"));
/// assert!(meta.stream);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestMeta {
    /// Who the request goes to.
    pub provider: Provider,
    /// The model asked for: the body's top-level `model` (keys compared
    /// decoded, the last one if it is repeated, as the upstream's parser
    /// reads it), or the one in the path (Gemini, Vertex, Bedrock, Azure
    /// deployments).
    pub model: Option<Box<str>>,
    /// Whether the response will be a stream.
    pub stream: bool,
    /// The wire protocol of the response stream, which says how it ends.
    pub dialect: Dialect,
}

impl RequestMeta {
    /// Reads the metadata of a request. `body` is the JSON request body when
    /// its bytes are at hand; without it, the model and stream flag come from
    /// the URI and headers alone.
    pub fn from_request(uri: &Uri, headers: &HeaderMap, body: Option<&[u8]>) -> RequestMeta {
        Self::with_provider(Provider::detect(uri), uri, headers, body)
    }

    /// As [`from_request`](RequestMeta::from_request), with the provider
    /// given instead of detected.
    pub fn with_provider(
        provider: Provider,
        uri: &Uri,
        headers: &HeaderMap,
        body: Option<&[u8]>,
    ) -> RequestMeta {
        let path = uri.path();
        let scanned = body.map(scan_json_body).unwrap_or_default();
        let dialect = Dialect::from_path(path);
        let path_stream = path.contains(":streamGenerateContent")
            || path.ends_with("/invoke-with-response-stream")
            || path.ends_with("/converse-stream")
            || uri.query().is_some_and(|q| q.contains("alt=sse"));
        let accept_stream = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        // Ollama's native API streams unless told not to.
        let default_stream = dialect == Dialect::OllamaNdjson;
        let stream = scanned
            .stream
            .unwrap_or(path_stream || accept_stream || default_stream);
        let model = scanned
            .model
            .map(Into::into)
            .or_else(|| model_from_path(path).map(Into::into));
        RequestMeta {
            provider,
            model,
            stream,
            dialect,
        }
    }
}

/// Gemini/Vertex `…/models/{model}:generateContent`, Bedrock
/// `/model/{id}/invoke`, Azure `/openai/deployments/{deployment}/…`.
fn model_from_path(path: &str) -> Option<String> {
    for marker in ["/models/", "/model/", "/deployments/"] {
        if let Some(at) = path.find(marker) {
            let rest = &path[at + marker.len()..];
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            let model = &rest[..end];
            if !model.is_empty() {
                return Some(percent_decode(model));
            }
        }
    }
    None
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Default, Debug, PartialEq, Eq)]
pub(crate) struct ScannedBody {
    pub(crate) model: Option<String>,
    pub(crate) stream: Option<bool>,
}

/// Reads the top-level `"model"` string and `"stream"` boolean of a JSON
/// object without parsing the rest ([`json::members`]: strings are skipped
/// with `memchr`, so a 100 KiB conversation costs about as much as a memory
/// scan). Keys nested in messages or tools are not mistaken for the
/// top-level ones, and keys are compared decoded (`"mod\u0065l"` is
/// `model`).
///
/// When a key appears more than once, the last one counts, as it does for
/// the parser at the other end: serde_json's `Value`, Python's `json`,
/// JavaScript's `JSON.parse` and Go's `encoding/json` all keep the last
/// duplicate. A `model` that is not a string counts as none. Malformed JSON
/// yields whatever was found before the damage.
pub(crate) fn scan_json_body(body: &[u8]) -> ScannedBody {
    let mut out = ScannedBody::default();
    for member in json::members(body) {
        if member.key_is(body, "model") {
            out.model = member.string_value(body).map(Cow::into_owned);
        } else if member.key_is(body, "stream") {
            out.stream = match &body[member.value] {
                b"true" => Some(true),
                b"false" => Some(false),
                _ => None,
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_model_and_stream_only() {
        let body = br#"{"messages":[{"role":"user","content":"say \"model\": \"x\""}],"metadata":{"model":"nested","stream":false},"model":"gpt-4o-mini","stream":true}"#;
        let scanned = scan_json_body(body);
        assert_eq!(scanned.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(scanned.stream, Some(true));
    }

    #[test]
    fn escaped_model_names_are_unescaped() {
        let scanned = scan_json_body(br#"{"model":"org\/model-\u0041"}"#);
        assert_eq!(scanned.model.as_deref(), Some("org/model-A"));
    }

    #[test]
    fn the_last_of_duplicate_models_counts_in_either_spelling_and_order() {
        // As serde_json's `Value` and Python's `json` read them.
        for (body, model) in [
            (
                &br#"{"model":"gpt-4o-mini","mod\u0065l":"o1-pro"}"#[..],
                "o1-pro",
            ),
            (
                br#"{"mod\u0065l":"o1-pro","model":"gpt-4o-mini"}"#,
                "gpt-4o-mini",
            ),
            (br#"{"model":"a","x":[{"model":"b"}],"model":"c"}"#, "c"),
            (br#"{"\u006d\u006F\u0064\u0065\u006c":"o1-pro"}"#, "o1-pro"),
        ] {
            let scanned = scan_json_body(body);
            assert_eq!(scanned.model.as_deref(), Some(model));
            let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(parsed["model"], model);
        }
    }

    #[test]
    fn an_escaped_model_value_is_decoded() {
        let scanned = scan_json_body(br#"{"model":"gpt\u002d4o"}"#);
        assert_eq!(scanned.model.as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn escaped_keys_inside_nested_objects_and_strings_are_not_the_model() {
        let body = br#"{"messages":[{"mod\u0065l":"x","content":"\"mod\u0065l\":\"y\""}],"model":"m","tools":{"mod\u0065l":"z"}}"#;
        assert_eq!(scan_json_body(body).model.as_deref(), Some("m"));
    }

    #[test]
    fn a_last_model_that_is_not_a_string_counts_as_none() {
        assert_eq!(scan_json_body(br#"{"model":"a","model":null}"#).model, None);
    }

    #[test]
    fn an_escaped_stream_key_is_read() {
        let scanned = scan_json_body(br#"{"stream":false,"str\u0065am":true}"#);
        assert_eq!(scanned.stream, Some(true));
    }

    #[test]
    fn truncated_or_garbage_bodies_never_panic() {
        for body in [
            &b""[..],
            b"{",
            b"{\"model",
            b"{\"model\":",
            b"{\"model\":\"abc",
            b"\"\\",
            b"]]]}}}",
            b"{\"stream\":",
        ] {
            let _ = scan_json_body(body);
        }
    }

    #[test]
    fn models_in_paths_are_found() {
        let uri: Uri = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse".parse().unwrap();
        let meta = RequestMeta::from_request(&uri, &HeaderMap::new(), None);
        assert_eq!(meta.model.as_deref(), Some("gemini-2.5-pro"));
        assert!(meta.stream);
        let uri: Uri = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-sonnet-4-v1%3A0/invoke".parse().unwrap();
        let meta = RequestMeta::from_request(&uri, &HeaderMap::new(), None);
        assert_eq!(
            meta.model.as_deref(),
            Some("anthropic.claude-sonnet-4-v1:0")
        );
        assert!(!meta.stream);
    }

    #[test]
    fn ollama_streams_by_default() {
        let uri: Uri = "http://localhost:11434/api/chat".parse().unwrap();
        let meta =
            RequestMeta::from_request(&uri, &HeaderMap::new(), Some(br#"{"model":"llama3"}"#));
        assert!(meta.stream);
        let meta = RequestMeta::from_request(
            &uri,
            &HeaderMap::new(),
            Some(br#"{"model":"llama3","stream":false}"#),
        );
        assert!(!meta.stream);
    }
}
