//! The one edit a fallback makes to a request body: the top-level `model`
//! of a JSON object, every other byte left alone.

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// Why the model could not be set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewriteError {
    /// The body is not a JSON object.
    NotAnObject,
    /// The top-level `model` is not a string.
    ModelNotAString,
}

impl std::fmt::Display for RewriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RewriteError::NotAnObject => {
                "the request body is not a JSON object, so its model cannot be set"
            }
            RewriteError::ModelNotAString => "the request body's \"model\" is not a string",
        })
    }
}

impl std::error::Error for RewriteError {}

/// Tracks where a byte offset sits in a JSON text: object/array depth and
/// whether inside a string.
#[derive(Default)]
struct Cursor {
    pos: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl Cursor {
    /// Advances to `to`, keeping track of strings and nesting. String
    /// contents (most of a chat body) are skipped with `memchr`.
    fn advance(&mut self, body: &[u8], to: usize) {
        let mut i = self.pos;
        while i < to {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &body[i..to]) {
                    None => i = to,
                    Some(offset) => {
                        let at = i + offset;
                        if body[at] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        i = at + 1;
                    }
                }
                continue;
            }
            match body[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        self.pos = to;
    }
}

fn skip_whitespace(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && matches!(body[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end (exclusive, after the closing quote) of the string starting at
/// `start` (its opening quote).
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while let Some(offset) = memchr::memchr2(b'"', b'\\', &body[i..]) {
        let at = i + offset;
        if body[at] == b'\\' {
            i = at + 2;
            if i > body.len() {
                return None;
            }
        } else {
            return Some(at + 1);
        }
    }
    None
}

/// `model` as a JSON string literal.
fn json_string(model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(model.len() + 2);
    out.push(b'"');
    for c in model.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
    out
}

/// Sets the top-level `"model"` of a JSON object body to `model`: the
/// value's bytes are replaced and every other byte is kept (no parse and
/// re-serialisation, so key order, spacing and numbers stay as the caller
/// wrote them). A body without a top-level `model` gets one as its first
/// member.
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_fallback::rewrite_model;
///
/// let body = Bytes::from_static(br#"{"model": "gpt-4o", "messages": [{"role":"user","content":"the model is"}]}"#);
/// let rewritten = rewrite_model(&body, "llama3.2").unwrap();
/// assert_eq!(&rewritten[..], br#"{"model": "llama3.2", "messages": [{"role":"user","content":"the model is"}]}"#);
/// ```
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Bytes, RewriteError> {
    let open = skip_whitespace(body, 0);
    if body.get(open) != Some(&b'{') {
        return Err(RewriteError::NotAnObject);
    }
    let mut cursor = Cursor::default();
    // Every top-level "model" value: parsers keep the last of duplicate
    // keys, so all of them are set.
    let mut values: Vec<(usize, usize)> = Vec::new();
    // The searcher is built once (building one costs about as much as
    // scanning a short body).
    static MODEL_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\"model\""));
    for candidate in MODEL_KEY.find_iter(body) {
        if candidate < cursor.pos {
            continue;
        }
        cursor.advance(body, candidate);
        if cursor.in_string || cursor.depth != 1 {
            continue;
        }
        // A key: `"model"` followed by `:`.
        let colon = skip_whitespace(body, candidate + 7);
        if body.get(colon) != Some(&b':') {
            cursor.advance(body, candidate + 7);
            continue;
        }
        let value = skip_whitespace(body, colon + 1);
        if body.get(value) != Some(&b'"') {
            return Err(RewriteError::ModelNotAString);
        }
        let end = string_end(body, value).ok_or(RewriteError::ModelNotAString)?;
        values.push((value, end));
        cursor.advance(body, end);
    }
    if !values.is_empty() {
        let literal = json_string(model);
        let removed: usize = values.iter().map(|(start, end)| end - start).sum();
        let mut out = BytesMut::with_capacity(body.len() - removed + literal.len() * values.len());
        let mut from = 0;
        for (start, end) in values {
            out.extend_from_slice(&body[from..start]);
            out.extend_from_slice(&literal);
            from = end;
        }
        out.extend_from_slice(&body[from..]);
        return Ok(out.freeze());
    }
    // No top-level model: add one as the first member.
    let after = skip_whitespace(body, open + 1);
    let empty = body.get(after) == Some(&b'}');
    let literal = json_string(model);
    let mut out = BytesMut::with_capacity(body.len() + literal.len() + 10);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(b"\"model\":");
    out.extend_from_slice(&literal);
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(&body[open + 1..]);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body: &str, model: &str) -> String {
        String::from_utf8(rewrite_model(body.as_bytes(), model).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn only_the_top_level_model_value_changes() {
        assert_eq!(
            rewrite(r#"{"model":"a","stream":true}"#, "b"),
            r#"{"model":"b","stream":true}"#
        );
        assert_eq!(
            rewrite(
                r#"{ "messages":[{"content":"\"model\":\"x\"","model":"inner"}], "model" : "a" }"#,
                "b"
            ),
            r#"{ "messages":[{"content":"\"model\":\"x\"","model":"inner"}], "model" : "b" }"#
        );
        assert_eq!(
            rewrite(r#"{"model":"a\"b\\","x":1}"#, "c"),
            r#"{"model":"c","x":1}"#
        );
    }

    #[test]
    fn duplicate_top_level_models_are_all_set() {
        assert_eq!(
            rewrite(r#"{"model":"a","x":1,"model":"b"}"#, "c"),
            r#"{"model":"c","x":1,"model":"c"}"#
        );
    }

    #[test]
    fn a_missing_model_is_added_first() {
        assert_eq!(
            rewrite(r#"{"messages":[]}"#, "m"),
            r#"{"model":"m","messages":[]}"#
        );
        assert_eq!(rewrite("{}", "m"), r#"{"model":"m"}"#);
        assert_eq!(
            rewrite(r#"  {"content":"model"}"#, "m"),
            r#"  {"model":"m","content":"model"}"#
        );
    }

    #[test]
    fn the_new_model_is_escaped() {
        let out = rewrite(r#"{"model":"a"}"#, "we\"ird\n");
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["model"], "we\"ird\n");
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        assert_eq!(rewrite_model(b"[1,2]", "m"), Err(RewriteError::NotAnObject));
        assert_eq!(rewrite_model(b"", "m"), Err(RewriteError::NotAnObject));
        assert_eq!(
            rewrite_model(br#"{"model":42}"#, "m"),
            Err(RewriteError::ModelNotAString)
        );
        assert_eq!(
            rewrite_model(br#"{"model":"unterminated"#, "m"),
            Err(RewriteError::ModelNotAString)
        );
    }

    #[test]
    fn every_other_byte_of_a_real_body_is_kept() {
        let body = format!(
            r#"{{"model":"gpt-4o","temperature":0.70,"messages":[{{"role":"system","content":"{}"}},{{"role":"user","content":"Say \"model\" please"}}],"stream":true}}"#,
            "x".repeat(4000)
        );
        let out = rewrite(&body, "claude-sonnet-4-5");
        assert_eq!(out.replacen("claude-sonnet-4-5", "gpt-4o", 1), body);
    }
}
