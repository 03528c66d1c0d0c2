//! [`RequestMeta`]: provider, model and streaming flag, read once per request.

use std::sync::Arc;

use http::{HeaderMap, Uri};

use crate::stream::Dialect;
use crate::{Provider, RequestToken, json};

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
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RequestMeta {
    /// Who the request goes to.
    pub provider: Provider,
    /// The model asked for: the body's top-level `model` (keys compared
    /// decoded, the last one if it is repeated, as the upstream's parser
    /// reads it), or the one in the path (Gemini, Vertex, Bedrock, Azure
    /// deployments).
    ///
    /// Shared (`Arc`): the metadata is cloned with the request's extensions
    /// for every target and attempt, and the name is not copied each time.
    pub model: Option<Arc<str>>,
    /// Whether the response will be a stream.
    pub stream: bool,
    /// The wire protocol of the response stream, which says how it ends.
    pub dialect: Dialect,
    /// What the body itself said (`model` present, `stream` value), so
    /// that [`retarget`](RequestMeta::retarget) can redo what depends on
    /// the URL without reading the body again.
    body: BodyFacts,
    /// The request's identity, the same in every attempt and target.
    token: RequestToken,
}

/// Two metadata are equal when they say the same of their requests (their
/// [`token`](RequestMeta::token)s, which tell requests apart, are not
/// compared).
impl PartialEq for RequestMeta {
    fn eq(&self, other: &Self) -> bool {
        self.provider == other.provider
            && self.model == other.model
            && self.stream == other.stream
            && self.dialect == other.dialect
            && self.body == other.body
    }
}

impl Eq for RequestMeta {}

/// What a request's body said, kept for [`RequestMeta::retarget`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct BodyFacts {
    model: bool,
    stream: Option<bool>,
    /// The body's length in bytes, when it was read.
    len: Option<u64>,
    /// The largest of its top-level `max_tokens`, `max_completion_tokens`
    /// and `max_output_tokens`, each read at its last occurrence.
    max_tokens: Option<u64>,
}

impl RequestMeta {
    /// The longest model name, in bytes, that a stack takes and a breaker
    /// keys by. Real names are well under it (Bedrock's inference-profile
    /// ARNs, among the longest, run to about 120); a longer one is refused
    /// by a stack's router rather than becoming a breaker's, a pacing
    /// view's and `/health`'s key, which a caller could otherwise make as
    /// large as its body, once per request.
    pub const MAX_MODEL_LEN: usize = 256;

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
        let scanned = body.map(scan_json_body).unwrap_or_default();
        Self::from_scanned(provider, uri, headers, scanned)
    }

    /// Reads the metadata of a request whose whole body is at hand, and
    /// whether every JSON parser reads the same `model` from the body as
    /// it is (a well-formed object with no `model`, or one spelled without
    /// escapes): one walk of the body for both, for the outermost layer
    /// that routes by the model and must make an ambiguous body plain.
    ///
    /// ```
    /// use tower_llm_classify::RequestMeta;
    ///
    /// let uri: http::Uri = "https://api.openai.com/v1/chat/completions".parse().unwrap();
    /// let headers = http::HeaderMap::new();
    /// let (meta, plain) = RequestMeta::from_whole_body(&uri, &headers, br#"{"model":"a","mod\u0065l":"b"}"#);
    /// assert_eq!((meta.model.as_deref(), plain), (Some("b"), false));
    /// let (meta, plain) = RequestMeta::from_whole_body(&uri, &headers, br#"{"model":"gpt-4o"}"#);
    /// assert_eq!((meta.model.as_deref(), plain), (Some("gpt-4o"), true));
    /// ```
    pub fn from_whole_body(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> (RequestMeta, bool) {
        let (scanned, unambiguous) = scan_json_body_checked(body);
        let meta = Self::from_scanned(Provider::detect(uri), uri, headers, scanned);
        (meta, unambiguous)
    }

    /// The metadata of the same request sent to `uri` instead, with its
    /// body's `model` set to `model` when that is `Some`: the provider, the
    /// stream's dialect and what the path says (a path model, `alt=sse`)
    /// are read again from the new URI; what the body said is kept. A
    /// fallback calls it for each target instead of leaving the layers
    /// below to parse the body again.
    ///
    /// ```
    /// use tower_llm_classify::{Provider, RequestMeta};
    ///
    /// let uri: http::Uri = "https://api.openai.com/v1/chat/completions".parse().unwrap();
    /// let headers = http::HeaderMap::new();
    /// let mut meta = RequestMeta::from_request(&uri, &headers, Some(br#"{"model":"gpt-4o"}"#));
    /// let local: http::Uri = "http://127.0.0.1:11434/v1/chat/completions".parse().unwrap();
    /// meta.retarget(&local, &headers, Some("llama3.2".into()));
    /// assert_eq!(meta.provider, Provider::Ollama);
    /// assert_eq!(meta.model.as_deref(), Some("llama3.2"));
    /// ```
    ///
    /// The request's [`token`](Self::token) stays the same.
    pub fn retarget(&mut self, uri: &Uri, headers: &HeaderMap, model: Option<Arc<str>>) {
        let scanned = ScannedBody {
            model: None,
            stream: self.body.stream,
            len: self.body.len,
            max_tokens: self.body.max_tokens,
        };
        let mut meta = Self::from_scanned(Provider::detect(uri), uri, headers, scanned);
        meta.body.model = self.body.model;
        meta.model = match model {
            Some(model) => {
                meta.body.model = true;
                Some(model)
            }
            None if self.body.model => self.model.take(),
            None => meta.model,
        };
        // The same request, sent elsewhere: its identity stays.
        meta.token = self.token;
        *self = meta;
    }

    fn from_scanned(
        provider: Provider,
        uri: &Uri,
        headers: &HeaderMap,
        scanned: ScannedBody,
    ) -> RequestMeta {
        let path = uri.path();
        let dialect = Dialect::from_path(path);
        // What the body says wins; the path, the `accept` header and the
        // API's default are read only when it says nothing.
        let stream = scanned.stream.unwrap_or_else(|| {
            // Ollama's native API streams unless told not to.
            dialect == Dialect::OllamaNdjson
                || path.contains(":streamGenerateContent")
                || path.ends_with("/invoke-with-response-stream")
                || path.ends_with("/converse-stream")
                || uri.query().is_some_and(|q| q.contains("alt=sse"))
                || headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("text/event-stream"))
        });
        let body = BodyFacts {
            model: scanned.model.is_some(),
            stream: scanned.stream,
            len: scanned.len,
            max_tokens: scanned.max_tokens,
        };
        let model = scanned
            .model
            .or_else(|| model_from_path(path).map(Into::into));
        RequestMeta {
            provider,
            model,
            stream,
            dialect,
            body,
            token: RequestToken::new(),
        }
    }

    /// The output limit the body asked for: the largest of its top-level
    /// `max_tokens` (Chat Completions, Anthropic Messages),
    /// `max_completion_tokens` (Chat Completions since o1) and
    /// `max_output_tokens` (Responses), each the last of its key, read as
    /// the upstream reads a number (`1e5`, `100000.0`; past `u64`, the
    /// most there is; `None` for anything not a finite count).
    pub fn max_tokens(&self) -> Option<u64> {
        self.body.max_tokens
    }

    /// A cheap estimate of the tokens the request costs against a
    /// tokens-per-minute limit: a token per 4 bytes of body, rounded up
    /// (OpenAI's rule of thumb, help.openai.com "What are tokens and how
    /// to count them?"), plus its [`max_tokens`](Self::max_tokens), which
    /// OpenAI counts against the limit when the request is made
    /// (platform.openai.com/docs/guides/rate-limits). `None` when the
    /// metadata was read without the body.
    ///
    /// ```
    /// use tower_llm_classify::RequestMeta;
    ///
    /// let uri: http::Uri = "https://api.openai.com/v1/chat/completions".parse().unwrap();
    /// let body = br#"{"model":"gpt-4o","max_tokens":100}"#; // 36 bytes
    /// let meta = RequestMeta::from_request(&uri, &http::HeaderMap::new(), Some(body));
    /// assert_eq!(meta.estimated_tokens(), Some(9 + 100));
    /// ```
    pub fn estimated_tokens(&self) -> Option<u64> {
        let len = self.body.len?;
        Some(
            len.div_ceil(4)
                .saturating_add(self.body.max_tokens.unwrap_or(0)),
        )
    }

    /// The request's identity ([`RequestToken`]): made with the metadata,
    /// and the same in every copy of it (each attempt, each target).
    pub fn token(&self) -> RequestToken {
        self.token
    }
}

/// Gemini/Vertex `…/models/{model}:generateContent`, Bedrock
/// `/model/{id}/invoke`, Azure `/openai/deployments/{deployment}/…`.
fn model_from_path(path: &str) -> Option<String> {
    for marker in ["/models/", "/model/", "/deployments/"] {
        if let Some(at) = find_segment(path, marker) {
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

/// Where `marker` (which starts with `/`) first occurs in `path`, tried
/// at each `/` only: `str::find` sets up a two-way searcher for every
/// call, which cost more than the rest of the request's metadata.
fn find_segment(path: &str, marker: &str) -> Option<usize> {
    // A plain loop: a path is a few dozen bytes, too short for memchr's
    // vector set-up to pay.
    let bytes = path.as_bytes();
    (0..bytes.len()).find(|&at| bytes[at] == b'/' && bytes[at..].starts_with(marker.as_bytes()))
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
    pub(crate) model: Option<Arc<str>>,
    pub(crate) stream: Option<bool>,
    pub(crate) len: Option<u64>,
    pub(crate) max_tokens: Option<u64>,
}

/// Reads the top-level `"model"` string and `"stream"` boolean of a JSON
/// object without parsing the rest ([`json::members`]: long strings are
/// skipped with `memchr`, so a 100 KiB conversation costs about as much as
/// a memory scan). Keys nested in messages or tools are not mistaken for the
/// top-level ones, and keys are compared decoded (`"mod\u0065l"` is
/// `model`).
///
/// When a key appears more than once, the last one counts, as it does for
/// the parser at the other end: serde_json's `Value`, Python's `json`,
/// JavaScript's `JSON.parse` and Go's `encoding/json` all keep the last
/// duplicate. A `model` that is not a string counts as none. Malformed JSON
/// yields whatever was found before the damage.
pub(crate) fn scan_json_body(body: &[u8]) -> ScannedBody {
    scan_json_body_checked(body).0
}

/// [`scan_json_body`], and whether the body is unambiguous about its
/// `model` ([`json::ModelMembers::is_unambiguous`]), in the same walk.
fn scan_json_body_checked(body: &[u8]) -> (ScannedBody, bool) {
    let mut out = ScannedBody {
        len: Some(body.len() as u64),
        ..ScannedBody::default()
    };
    // Only the last `model` counts: it is decoded once, after the walk.
    let mut last: Option<json::Member> = None;
    let (mut count, mut escaped) = (0_usize, false);
    // Each limit's last value (as the upstream's parser reads a repeated
    // key); the largest of the three counts.
    let mut limits: [Option<u64>; 3] = [None; 3];
    let mut members = json::members(body);
    for member in members.by_ref() {
        if member.key_matches(body, "model") {
            count += 1;
            escaped |= !member.key_is_plain(body, "model");
            last = Some(member);
        } else if member.key_matches(body, "stream") {
            out.stream = match &body[member.value] {
                b"true" => Some(true),
                b"false" => Some(false),
                _ => None,
            };
        } else if let Some(slot) = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .position(|key| member.key_matches(body, key))
        {
            limits[slot] = token_count(&body[member.value]);
        }
    }
    out.max_tokens = limits.into_iter().flatten().max();
    out.model = last
        .and_then(|member| member.string_value(body))
        .map(|model| interned_model(&model));
    let unambiguous = !members.malformed() && count <= 1 && !escaped;
    (out, unambiguous)
}

/// A token limit as the upstream reads the JSON value: digits (past
/// `u64`, the most there is), or a number with a fraction or an exponent
/// (`100000.0`, `1e5`), which lenient parsers (Pydantic's lax mode) take
/// as an integer, rounded up here. `None` for anything else (`null`, a
/// string, a negative number): the caller says no limit. Read otherwise
/// (a float skipped, an earlier duplicate kept), a caller could state one
/// limit to the gateway's token limits and another to the upstream.
fn token_count(value: &[u8]) -> Option<u64> {
    if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
        return Some(value.iter().fold(0_u64, |n, digit| {
            n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
        }));
    }
    let number: f64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    // `as` saturates: a limit past `u64` is the most there is.
    (number.is_finite() && number >= 0.0).then(|| number.ceil() as u64)
}

/// How many model names a thread keeps to share (a gateway serves a
/// handful; more only miss).
const KEPT_MODELS: usize = 8;

thread_local! {
    /// The model names this thread read last, newest last.
    static MODELS: std::cell::RefCell<Vec<Arc<str>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `model` as an `Arc<str>` shared with the last requests this thread read
/// that named it: a request for a model seen lately costs its name no
/// allocation. Bounded (the [`KEPT_MODELS`] most recent names), so a caller
/// sending a new name with every request only misses: it allocates as
/// before and keeps nothing more.
fn interned_model(model: &str) -> Arc<str> {
    MODELS.with_borrow_mut(|kept| {
        if let Some(at) = kept.iter().rposition(|m| **m == *model) {
            return Arc::clone(&kept[at]);
        }
        let made: Arc<str> = Arc::from(model);
        if kept.len() == KEPT_MODELS {
            kept.remove(0);
        }
        kept.push(Arc::clone(&made));
        made
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn a_marker_is_found_where_str_find_finds_it(
            path in "[/a-z%:.-]{0,40}(/models/|/model/|/deployments/)?[/a-z%:.-]{0,20}"
        ) {
            for marker in ["/models/", "/model/", "/deployments/"] {
                proptest::prop_assert_eq!(find_segment(&path, marker), path.find(marker));
            }
        }
    }

    #[test]
    fn a_model_seen_lately_is_shared_and_the_names_kept_stay_few() {
        let first = interned_model("gpt-4o");
        assert!(Arc::ptr_eq(&first, &interned_model("gpt-4o")));
        for i in 0..100 {
            interned_model(&format!("caller-made-{i}"));
        }
        MODELS.with_borrow(|kept| assert_eq!(kept.len(), KEPT_MODELS));
        // Pushed out by newer names: made again, and equal.
        let again = interned_model("gpt-4o");
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(first, again);
    }

    #[test]
    fn a_token_limit_is_read_as_the_upstream_reads_it() {
        let max = |body: &str| scan_json_body(body.as_bytes()).max_tokens;
        assert_eq!(max(r#"{"max_tokens":100}"#), Some(100));
        // The last of a repeated key, whatever its form.
        assert_eq!(
            max(r#"{"max_tokens":1,"max_tokens":100000.0}"#),
            Some(100_000)
        );
        assert_eq!(max(r#"{"max_tokens":100000,"max_tokens":null}"#), None);
        assert_eq!(max(r#"{"max_tokens":1e5}"#), Some(100_000));
        assert_eq!(max(r#"{"max_tokens":0.5}"#), Some(1));
        assert_eq!(
            max(r#"{"max_tokens":99999999999999999999999}"#),
            Some(u64::MAX)
        );
        assert_eq!(max(r#"{"max_tokens":1e400}"#), None);
        assert_eq!(max(r#"{"max_tokens":-5}"#), None);
        assert_eq!(max(r#"{"max_tokens":"100"}"#), None);
        // Of the three names, the largest.
        assert_eq!(
            max(r#"{"max_completion_tokens":5000,"max_tokens":10}"#),
            Some(5000)
        );
    }

    #[test]
    fn finds_top_level_model_and_stream_only() {
        let body = br#"{"messages":[{"role":"user","content":"say \"model\": \"x\""}],"metadata":{"model":"nested","stream":false},"model":"gpt-4o-mini","stream":true}"#;
        let scanned = scan_json_body(body);
        assert_eq!(scanned.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(scanned.stream, Some(true));
    }

    #[test]
    fn the_top_level_output_limit_and_the_body_length_are_read() {
        let body = br#"{"messages":[{"max_tokens":5}],"model":"m","max_completion_tokens":300}"#;
        let scanned = scan_json_body(body);
        assert_eq!(scanned.max_tokens, Some(300));
        assert_eq!(scanned.len, Some(body.len() as u64));
        // Not a count (a float or a huge one is: see the next test).
        for body in [&br#"{"max_tokens":-1}"#[..], br#"{"max_tokens":"100"}"#] {
            assert_eq!(scan_json_body(body).max_tokens, None);
        }
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
