//! The one edit a fallback makes to a request body: the top-level `model`
//! of a JSON object, every other byte left alone.
//!
//! # Why one literal `model`, set to the routed value
//!
//! A JSON key may be spelled with escapes (`"mod\u0065l"` is `model` to
//! every parser) and may appear twice. Parsers disagree on duplicates:
//! serde_json's `Value`, Python's `json`, JavaScript's `JSON.parse` and Go's
//! `encoding/json` keep the last, serde's derived structs refuse the body.
//! A body such as `{"model":"gpt-4o-mini","mod\u0065l":"o1-pro"}` could
//! then be routed as one model and served as another, and routes are
//! allow-lists and cost controls. So whenever the model is set, every
//! top-level member whose decoded key is `model` goes, and one member
//! spelled `"model"` carries the value: whatever rule the upstream parser
//! follows, it reads that value. [`RequestMeta`] reads the last duplicate,
//! as the permissive parsers do, so a body sent unchanged (a target without
//! a model of its own) is counted under the model the upstream serves.
//!
//! [`RequestMeta`]: tower_llm_classify::RequestMeta

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use tower_llm_classify::json::{self, Member};

/// Why the model could not be set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewriteError {
    /// The body is not a JSON object.
    NotAnObject,
    /// A top-level `model` is not a string.
    ModelNotAString,
    /// The body starts as a JSON object but is not valid JSON, so where its
    /// `model` is cannot be told.
    InvalidJson,
}

impl std::fmt::Display for RewriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RewriteError::NotAnObject => {
                "the request body is not a JSON object, so its model cannot be set"
            }
            RewriteError::ModelNotAString => "the request body's \"model\" is not a string",
            RewriteError::InvalidJson => {
                "the request body is not valid JSON, so its model cannot be set"
            }
        })
    }
}

impl std::error::Error for RewriteError {}

/// The top-level `model` members of a body.
struct Models {
    /// The first, kept in place.
    first: Option<Member>,
    /// What to cut for each later one: from the end of the value before
    /// it (so its comma goes too) to the end of its own value. Empty (and
    /// not allocated) unless the key is repeated.
    repeats: Vec<Range<usize>>,
}

impl Models {
    /// Finds them; the body's first non-whitespace byte is `{`.
    fn find(body: &[u8]) -> Result<Models, RewriteError> {
        let mut members = json::members(body);
        let mut models = Models {
            first: None,
            repeats: Vec::new(),
        };
        let mut previous_end = 0;
        for member in members.by_ref() {
            // Any case: Go's encoding/json takes `MODEL` for `model`.
            if member.key_matches(body, "model") {
                if body.get(member.value.start) != Some(&b'"') {
                    return Err(RewriteError::ModelNotAString);
                }
                if models.first.is_none() {
                    models.first = Some(member.clone());
                } else {
                    models.repeats.push(previous_end..member.value.end);
                }
            }
            previous_end = member.value.end;
        }
        if members.malformed() {
            return Err(RewriteError::InvalidJson);
        }
        Ok(models)
    }

    /// Whether the body already has one `model`, spelled without escapes,
    /// whose value decodes to `model`.
    fn is_one_literal(&self, body: &[u8], model: &str) -> bool {
        self.repeats.is_empty()
            && self.first.as_ref().is_some_and(|m| {
                m.key_is_plain(body, "model") && m.string_value(body).is_some_and(|v| v == model)
            })
    }
}

fn skip_whitespace(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && matches!(body[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Whether the body's first non-whitespace byte opens an object.
fn opens_object(body: &[u8]) -> Option<usize> {
    let open = skip_whitespace(body, 0);
    (body.get(open) == Some(&b'{')).then_some(open)
}

/// Appends `model` as a JSON string literal.
fn push_json_string(out: &mut BytesMut, model: &str) {
    out.extend_from_slice(b"\"");
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
    out.extend_from_slice(b"\"");
}

/// Sets the top-level `"model"` of a JSON object body to `model`: the
/// value's bytes are replaced and every other byte is kept (no parse and
/// re-serialisation, so key order, spacing and numbers stay as the caller
/// wrote them). A body without a top-level `model` gets one as its first
/// member.
///
/// A body whose top-level `model` is repeated, or spelled with escapes
/// (`"mod\u0065l"`), leaves with exactly one member spelled `"model"`, where
/// the first was: the others are removed, so no parser can read another
/// model. (Parsers disagree on duplicates: serde_json's `Value`, Python,
/// `JSON.parse` and Go keep the last, serde's derived structs refuse the
/// body; one literal member reads the same to all of them.)
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_fallback::rewrite_model;
///
/// let body = Bytes::from_static(br#"{"model": "gpt-4o", "messages": [{"role":"user","content":"the model is"}]}"#);
/// let rewritten = rewrite_model(&body, "llama3.2").unwrap();
/// assert_eq!(&rewritten[..], br#"{"model": "llama3.2", "messages": [{"role":"user","content":"the model is"}]}"#);
///
/// let smuggled = br#"{"model":"gpt-4o-mini","mod\u0065l":"o1-pro","messages":[]}"#;
/// let rewritten = rewrite_model(smuggled, "gpt-4o-mini").unwrap();
/// assert_eq!(&rewritten[..], br#"{"model":"gpt-4o-mini","messages":[]}"#);
/// ```
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Bytes, RewriteError> {
    let open = opens_object(body).ok_or(RewriteError::NotAnObject)?;
    let models = Models::find(body)?;
    Ok(write(body, open, &models, model))
}

/// Makes the body's top-level `model` one member spelled `"model"` whose
/// value is `model` — what a router does after choosing a route by the
/// model it read ([`RequestMeta`](tower_llm_classify::RequestMeta) reads the
/// last duplicate): whatever rule the upstream's parser has for repeated
/// keys, it then serves the routed model.
///
/// The body itself comes back, without a copy, when there is nothing to do:
/// it has one `model` spelled without escapes whose value already decodes
/// to `model`, it has no top-level `model`, or it is not a JSON object (a
/// multipart upload, an empty GET). A body that starts as an object but is
/// not valid JSON is refused, as is a `model` that is not a string.
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_fallback::normalise_model;
///
/// let body = Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[],"mod\u0065l":"o1-pro"}"#);
/// let sent = normalise_model(&body, "o1-pro").unwrap();
/// assert_eq!(&sent[..], br#"{"model":"o1-pro","messages":[]}"#);
///
/// let plain = Bytes::from_static(br#"{"model":"gpt-4o","messages":[]}"#);
/// assert_eq!(normalise_model(&plain, "gpt-4o").unwrap().as_ptr(), plain.as_ptr());
/// ```
pub fn normalise_model(body: &Bytes, model: &str) -> Result<Bytes, RewriteError> {
    let Some(open) = opens_object(body) else {
        return Ok(body.clone());
    };
    let models = Models::find(body)?;
    if models.first.is_none() || models.is_one_literal(body, model) {
        return Ok(body.clone());
    }
    Ok(write(body, open, &models, model))
}

/// The body with its `model` members replaced by one literal `model`.
fn write(body: &[u8], open: usize, models: &Models, model: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + model.len() + 12);
    let Some(first) = &models.first else {
        // No top-level model: add one as the first member.
        let after = skip_whitespace(body, open + 1);
        let empty = body.get(after) == Some(&b'}');
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(b"\"model\":");
        push_json_string(&mut out, model);
        if !empty {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(&body[open + 1..]);
        return out.freeze();
    };
    if first.key_is_plain(body, "model") {
        // Only the value changes: the caller's spacing stays.
        out.extend_from_slice(&body[..first.value.start]);
    } else {
        out.extend_from_slice(&body[..first.start()]);
        out.extend_from_slice(b"\"model\":");
    }
    push_json_string(&mut out, model);
    let mut from = first.value.end;
    for cut in &models.repeats {
        out.extend_from_slice(&body[from..cut.start]);
        from = cut.end;
    }
    out.extend_from_slice(&body[from..]);
    out.freeze()
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
    fn duplicate_top_level_models_become_one() {
        assert_eq!(
            rewrite(r#"{"model":"a","x":1,"model":"b"}"#, "c"),
            r#"{"model":"c","x":1}"#
        );
        assert_eq!(
            rewrite(
                r#"{ "model" : "a" ,"model":"b" , "x":1 ,"model":"d" }"#,
                "c"
            ),
            r#"{ "model" : "c" , "x":1 }"#
        );
    }

    #[test]
    fn an_escaped_model_key_is_replaced_in_either_order() {
        // The smuggling body of issue 12: routed as the first, served as
        // the last by serde_json and Python.
        assert_eq!(
            rewrite(
                r#"{"model":"gpt-4o-mini","mod\u0065l":"o1-pro"}"#,
                "gpt-4o-mini"
            ),
            r#"{"model":"gpt-4o-mini"}"#
        );
        assert_eq!(
            rewrite(
                r#"{"mod\u0065l":"o1-pro","model":"gpt-4o-mini"}"#,
                "gpt-4o-mini"
            ),
            r#"{"model":"gpt-4o-mini"}"#
        );
        assert_eq!(
            rewrite(
                r#"{"messages":[], "mod\u0065l" : "o1-pro","stream":true}"#,
                "m"
            ),
            r#"{"messages":[], "model":"m","stream":true}"#
        );
    }

    #[test]
    fn an_escaped_model_value_is_replaced() {
        assert_eq!(
            rewrite(r#"{"model":"gpt\u002d4o","x":1}"#, "m"),
            r#"{"model":"m","x":1}"#
        );
    }

    #[test]
    fn escaped_model_keys_in_nested_objects_and_strings_are_untouched() {
        let body = r#"{"messages":[{"mod\u0065l":"x","content":"\"mod\u0065l\":\"y\""}],"tools":{"model":"t","mod\u0065l":"z"},"model":"a"}"#;
        assert_eq!(
            rewrite(body, "b"),
            body.replace(r#""model":"a""#, r#""model":"b""#)
        );
    }

    /// Every spelling of `model` (each letter as itself, `\u00XX` or
    /// `\u00xx`), first, last or repeated, next to a plain `model`: the
    /// rewritten body has one literal `model` key and serde_json reads the
    /// routed model from it.
    #[test]
    fn every_spelling_and_order_of_model_keys_yields_the_routed_model() {
        // Escapes in either hex case, and letters in either case (Go's
        // encoding/json matches keys ignoring case).
        let spellings: Vec<String> = (0..4_u32.pow(5))
            .map(|mut code| {
                "model"
                    .chars()
                    .map(|c| {
                        let way = code % 4;
                        code /= 4;
                        match way {
                            0 => c.to_string(),
                            1 => format!("\\u{:04X}", c as u32),
                            2 => c.to_ascii_uppercase().to_string(),
                            _ => format!("\\u{:04x}", c.to_ascii_uppercase() as u32),
                        }
                    })
                    .collect()
            })
            .collect();
        for (n, key) in spellings.iter().enumerate() {
            let other = &spellings[(n * 7 + 3) % spellings.len()];
            for body in [
                format!(r#"{{"{key}":"o1-pro","messages":[{{"model":"n"}}]}}"#),
                format!(r#"{{"model":"gpt-4o","{key}":"o1-pro"}}"#),
                format!(r#"{{"{key}":"o1-pro", "model" : "gpt-4o"}}"#),
                format!(r#"{{"{key}":"a","x":"{key}","{other}":"b","model":"c"}}"#),
            ] {
                let out = rewrite_model(body.as_bytes(), "routed").unwrap();
                let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(parsed["model"], "routed", "{body}");
                let keys: Vec<bool> = json::members(&out)
                    .filter(|m| m.key_matches(&out, "model"))
                    .map(|m| m.key_is_plain(&out, "model"))
                    .collect();
                assert_eq!(keys, [true], "{body}");
                assert_eq!(
                    normalise_model(&Bytes::from(body.clone()), "routed").unwrap(),
                    out,
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn normalise_leaves_a_body_with_one_literal_model_or_none_as_it_is() {
        for body in [
            &br#"{"model":"gpt-4o","messages":[{"model":"x"}]}"#[..],
            br#"{"messages":[]}"#,
            b"not json",
            b"",
            br#"[{"model":"a"},{"model":"b"}]"#,
        ] {
            let body = Bytes::from_static(body);
            let out = normalise_model(&body, "gpt-4o").unwrap();
            assert_eq!(out.as_ptr(), body.as_ptr());
            assert_eq!(out, body);
        }
        // An escaped value already equal to the routed one: no copy either.
        let body = Bytes::from_static(br#"{"model":"gpt\u002d4o"}"#);
        assert_eq!(
            normalise_model(&body, "gpt-4o").unwrap().as_ptr(),
            body.as_ptr()
        );
        // A different value is set.
        let body = Bytes::from_static(br#"{"model":"a"}"#);
        assert_eq!(
            &normalise_model(&body, "b").unwrap()[..],
            br#"{"model":"b"}"#
        );
    }

    #[test]
    fn normalise_refuses_what_it_cannot_read() {
        assert_eq!(
            normalise_model(&Bytes::from_static(br#"{"model":"a","model":"b""#), "a"),
            Err(RewriteError::InvalidJson)
        );
        assert_eq!(
            normalise_model(&Bytes::from_static(br#"{"model":"a","mod\u0065l":7}"#), "a"),
            Err(RewriteError::ModelNotAString)
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
            Err(RewriteError::InvalidJson)
        );
        assert_eq!(
            rewrite_model(br#"{"model":"a",}"#, "m"),
            Err(RewriteError::InvalidJson)
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
