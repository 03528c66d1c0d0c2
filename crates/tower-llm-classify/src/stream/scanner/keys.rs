//! Finding what an event says without parsing it: a `"key"` as an object
//! key (not inside a string), and the few values the scanner reads.

use crate::json;
use std::sync::LazyLock;

use memchr::memmem;

use crate::stream::Dialect;

/// Anthropic `content_block_delta`, Responses `response.*.delta`
/// (`output_text`, `function_call_arguments`, `reasoning_summary_text`, …).
pub(super) fn is_content_event_name(name: &[u8]) -> bool {
    name == b"content_block_delta" || (name.starts_with(b"response.") && name.ends_with(b".delta"))
}

/// A `"key"` to look for, its searcher built once: building a
/// `memmem::Finder` costs more than searching a short chunk, and a chunk
/// is searched for up to seven keys.
macro_rules! key {
    ($quoted:literal) => {{
        static FINDER: LazyLock<memmem::Finder<'static>> =
            LazyLock::new(|| memmem::Finder::new($quoted));
        &*FINDER
    }};
}

/// Finds `"key"` as an object key (not escaped inside a string) followed by
/// optional whitespace and `:`; returns the index just after the colon.
fn find_key(payload: &[u8], quoted_key: &memmem::Finder<'static>) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = quoted_key.find(&payload[from..]) {
        let start = from + at;
        let end = start + quoted_key.needle().len();
        from = end;
        if start > 0 && payload[start - 1] == b'\\' {
            continue;
        }
        let mut i = end;
        while i < payload.len() && payload[i].is_ascii_whitespace() {
            i += 1;
        }
        if payload.get(i) == Some(&b':') {
            return Some(i + 1);
        }
    }
    None
}

fn skip_ws(payload: &[u8], mut i: usize) -> usize {
    while i < payload.len() && payload[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// A JSON payload whose own members say it failed: a non-null top-level
/// `"error"`, or a top-level `"type": "error"` / `"type":
/// "response.failed"` (the latter in the dialects that carry a type in
/// their payloads: not OpenAI chat chunks nor Ollama lines).
///
/// Only top-level members count: a nested `"error"` or `"type"` is the
/// content's (an Ollama or Gemini tool call's arguments are an object the
/// caller's schema shapes, `{"error": "disk full"}` among them), and text a
/// caller controls must not fail a healthy stream.
///
/// Nearly every event holds neither `"error"` nor `"response.failed"`:
/// one search for the bytes `"error"` (which `"type": "error"` holds too)
/// and, in the typed dialects, one for `response.failed` settle those; only
/// an event holding one is walked.
pub(super) fn is_error_payload(payload: &[u8], dialect: Dialect) -> bool {
    let typed = !matches!(dialect, Dialect::OpenAiChat | Dialect::OllamaNdjson);
    if key!(b"\"error\"").find(payload).is_none()
        && !(typed && key!(b"\"response.failed\"").find(payload).is_some())
    {
        return false;
    }
    json::members(payload).any(|member| {
        let value = &payload[member.value.clone()];
        if member.key_matches(payload, "error") {
            !matches!(value, b"null" | b"false" | b"\"\"")
        } else if member.key_matches(payload, "type") {
            matches!(value, b"\"error\"" | b"\"response.failed\"")
        } else {
            false
        }
    })
}

/// The string value of the first `"type"` key.
pub(super) fn json_type(payload: &[u8]) -> Option<&[u8]> {
    let value_at = skip_ws(payload, find_key(payload, key!(b"\"type\""))?);
    let rest = payload.get(value_at..)?.strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// Whether `"key": "<non-empty>"` is present.
fn has_nonempty_string(payload: &[u8], quoted_key: &memmem::Finder<'static>) -> bool {
    let Some(value_at) = find_key(payload, quoted_key) else {
        return false;
    };
    let value = &payload[skip_ws(payload, value_at)..];
    value.len() >= 2 && value[0] == b'"' && value[1] != b'"'
}

/// An OpenAI chat chunk that carries something the caller sees: text,
/// reasoning, a refusal or a tool call (a role-only or usage-only chunk does
/// not).
pub(super) fn has_chat_content(data: &[u8]) -> bool {
    has_nonempty_string(data, key!(b"\"content\""))
        || has_nonempty_string(data, key!(b"\"reasoning_content\""))
        || has_nonempty_string(data, key!(b"\"reasoning\""))
        || has_nonempty_string(data, key!(b"\"refusal\""))
        || has_nonempty_string(data, key!(b"\"text\""))
        || find_key(data, key!(b"\"tool_calls\"")).is_some()
        || find_key(data, key!(b"\"function_call\"")).is_some()
}

pub(super) fn has_ollama_content(line: &[u8]) -> bool {
    has_nonempty_string(line, key!(b"\"content\""))
        || has_nonempty_string(line, key!(b"\"response\""))
        || has_nonempty_string(line, key!(b"\"thinking\""))
        || find_key(line, key!(b"\"tool_calls\"")).is_some()
}

pub(super) fn has_done_true(line: &[u8]) -> bool {
    find_key(line, key!(b"\"done\""))
        .is_some_and(|at| line[skip_ws(line, at)..].starts_with(b"true"))
}

/// How much of a chunk's end is searched first for its `finish_reason`.
const FINISH_TAIL: usize = 96;

/// How OpenAI ends a chunk that is not its choice's last: `finish_reason`
/// is the choice's last member, and `usage` (when asked for) the chunk's.
const NOT_FINISHED_ENDINGS: [&[u8]; 2] = [
    b"\"finish_reason\":null}]}",
    b"\"finish_reason\":null}],\"usage\":null}",
];

/// Whether an OpenAI chat chunk carries a `finish_reason` that is not
/// `null`. OpenAI writes it last in a choice (only `usage` may follow):
/// the chunk's end settles nearly every chunk with a comparison, and
/// otherwise its last bytes are searched first; a chunk is read whole only
/// when they do not hold the key (a server that writes it elsewhere, or
/// not at all).
pub(super) fn has_finish_reason(data: &[u8]) -> bool {
    if NOT_FINISHED_ENDINGS.iter().any(|end| data.ends_with(end)) {
        return false;
    }
    let finder = key!(b"\"finish_reason\"");
    let tail = data.len().saturating_sub(FINISH_TAIL);
    let found = find_key(&data[tail..], finder)
        .map(|at| tail + at)
        .or_else(|| {
            if tail > 0 {
                find_key(data, finder)
            } else {
                None
            }
        });
    found.is_some_and(|at| data[skip_ws(data, at)..].starts_with(b"\""))
}

/// What a chunk says of its `usage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UsageKey {
    /// No `usage` key.
    Absent,
    /// `"usage": null`: OpenAI writes it in every chunk when
    /// `stream_options.include_usage` asked for a usage chunk after the
    /// finish (API reference, *Create chat completion*, `stream_options`).
    Null,
    /// The usage itself.
    Present,
}

pub(super) fn usage_key(data: &[u8]) -> UsageKey {
    match find_key(data, key!(b"\"usage\"")) {
        None => UsageKey::Absent,
        Some(at) if data[skip_ws(data, at)..].starts_with(b"null") => UsageKey::Null,
        Some(_) => UsageKey::Present,
    }
}

/// Whether an Anthropic `message_delta` carries a `stop_reason` that is
/// not `null`.
pub(super) fn has_stop_reason(data: &[u8]) -> bool {
    find_key(data, key!(b"\"stop_reason\""))
        .is_some_and(|at| data[skip_ws(data, at)..].starts_with(b"\""))
}

/// Whether trimmed event data has the shape of a JSON object or array:
/// opened and closed by its brackets. What a cut, interleaved or garbled
/// event looks like fails it; a full validation would cost more than the
/// rest of the scan.
pub(super) fn is_json_shaped(data: &[u8]) -> bool {
    matches!(
        (data.first(), data.last()),
        (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
    )
}
