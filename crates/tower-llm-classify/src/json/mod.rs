//! The top level of a JSON object body, read without parsing it: where each
//! member's key and value are, and what a key says once its escapes are
//! decoded.
//!
//! ```
//! use tower_llm_classify::json;
//!
//! let body = br#"{"model":"gpt-4o-mini","messages":[{"model":"nested"}],"mod\u0065l":"o1-pro"}"#;
//! let models: Vec<_> = json::members(body)
//!     .filter(|m| m.key_is(body, "model"))
//!     .filter_map(|m| m.string_value(body))
//!     .collect();
//! // Both top-level spellings of `model`; the nested one is not a member.
//! assert_eq!(models, ["gpt-4o-mini", "o1-pro"]);
//! ```
//!
//! # Why decode keys
//!
//! A JSON key may be written with escapes: `"mod\u0065l"` is the key
//! `model` to every parser (serde_json, Python's `json`, JavaScript's
//! `JSON.parse`, Go's `encoding/json`). A reader that compares the raw bytes
//! with `"model"` misses it, and a body can then say one model to the
//! router and another to the provider. Comparing decoded keys costs nothing
//! for the common key without a backslash: the bytes are compared as they
//! are, and escapes are decoded (without allocating) only when there is one.
//!
//! The scan is exact for valid JSON: strings are skipped (a word at a time
//! while they are short, with `memchr` once they are long), nested objects
//! and arrays by counting brackets, and every top-level member is found.
//! What is not valid JSON ends the members early, and
//! [`Members::malformed`] says so.

use std::borrow::Cow;
use std::ops::Range;

mod cursor;
mod decode;
mod skip;
#[cfg(test)]
mod tests;

pub(crate) use cursor::Cursor;
pub(crate) use decode::{append_decoded, has_escape, is_plain};
use decode::{decode, decoded_eq, decoded_eq_ignoring_ascii_case};
pub(crate) use skip::string_end;
use skip::{skip_whitespace, value_end};

/// One member of a JSON object's top level: where its key and its value
/// are in the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The key's bytes between its quotes, escapes as written.
    pub key: Range<usize>,
    /// The value's bytes, from its first byte to just after its last.
    pub value: Range<usize>,
}

impl Member {
    /// Whether the key, once its escapes are decoded, is `name`.
    pub fn key_is(&self, body: &[u8], name: &str) -> bool {
        body.get(self.key.clone())
            .is_some_and(|raw| decoded_eq(raw, name.as_bytes()))
    }

    /// Whether the key, once its escapes are decoded, is `name` in any
    /// ASCII case: how Go's `encoding/json` (Ollama, LocalAI and many
    /// OpenAI-compatible servers) matches a key to a field, so that
    /// `{"model":"a","MODEL":"b"}` is served as `b` there. Readers that must
    /// see every member some upstream takes for `name` use this.
    #[inline]
    pub fn key_matches(&self, body: &[u8], name: &str) -> bool {
        body.get(self.key.clone())
            .is_some_and(|raw| decoded_eq_ignoring_ascii_case(raw, name.as_bytes()))
    }

    /// Whether the key is written exactly as `name`: no escapes, same case,
    /// the one spelling every parser reads as `name`.
    #[inline]
    pub fn key_is_plain(&self, body: &[u8], name: &str) -> bool {
        body.get(self.key.clone()) == Some(name.as_bytes())
    }

    /// Whether the key is written without escapes.
    pub fn key_is_literal(&self, body: &[u8]) -> bool {
        body.get(self.key.clone())
            .is_some_and(|raw| !has_escape(raw))
    }

    /// Where the member starts: the opening quote of its key.
    pub fn start(&self) -> usize {
        self.key.start.saturating_sub(1)
    }

    /// The value, decoded, when it is a string (`None` for any other
    /// value). Borrowed from the body unless it has escapes; bytes that are
    /// not UTF-8 are replaced, and a string with an invalid escape is
    /// returned as written.
    pub fn string_value<'a>(&self, body: &'a [u8]) -> Option<Cow<'a, str>> {
        let raw = body.get(self.value.clone())?;
        let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if !has_escape(inner) {
            return Some(match std::str::from_utf8(inner) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(inner),
            });
        }
        Some(Cow::Owned(decode(inner).unwrap_or_else(|| {
            String::from_utf8_lossy(inner).into_owned()
        })))
    }
}

/// The members of the JSON object `body`, in order (see [`Members`]).
pub fn members(body: &[u8]) -> Members<'_> {
    Members {
        body,
        pos: 0,
        started: false,
        done: false,
        malformed: false,
    }
}

/// What a JSON body says about its top-level `model`, from one walk
/// ([`model_members`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelMembers<'a> {
    /// The last `model`'s value, decoded, when it is a string: the model
    /// serde_json's `Value`, Python's `json`, JavaScript's `JSON.parse` and
    /// Go's `encoding/json` read when the key is repeated.
    pub last: Option<Cow<'a, str>>,
    /// How many top-level members have a key that decodes to `model` in
    /// any case ([`Member::key_matches`]).
    pub count: usize,
    /// Whether any of them spells the key other than plainly `model`: with
    /// escapes (`"mod\u0065l"`) or in another case (`"MODEL"`).
    pub escaped: bool,
    /// Whether the body is not a well-formed JSON object (or no object at
    /// all): what is above was read before the damage.
    pub malformed: bool,
}

impl ModelMembers<'_> {
    /// Whether every parser reads the same `model` from the body as it is:
    /// a well-formed object with no `model`, or with one spelled without
    /// escapes.
    pub fn is_unambiguous(&self) -> bool {
        !self.malformed && self.count <= 1 && !self.escaped
    }
}

/// The top-level `model` members of `body`, in one walk.
///
/// ```
/// use tower_llm_classify::json::model_members;
///
/// let found = model_members(br#"{"model":"gpt-4o-mini","mod\u0065l":"o1-pro"}"#);
/// assert_eq!(found.last.as_deref(), Some("o1-pro"));
/// assert_eq!((found.count, found.escaped), (2, true));
/// assert!(!found.is_unambiguous());
/// assert!(model_members(br#"{"model":"gpt-4o"}"#).is_unambiguous());
/// ```
pub fn model_members(body: &[u8]) -> ModelMembers<'_> {
    let mut found = ModelMembers::default();
    let mut members = members(body);
    for member in members.by_ref() {
        if member.key_matches(body, "model") {
            found.last = member.string_value(body);
            found.count += 1;
            found.escaped |= !member.key_is_plain(body, "model");
        }
    }
    found.malformed = members.malformed();
    found
}

/// The top-level members of a JSON object, from [`members`].
///
/// Iteration ends at the object's closing brace, or at the first byte that
/// cannot be valid JSON ([`malformed`](Members::malformed) then says so; a
/// body that is not an object at all is malformed). Nothing after the
/// closing brace is read.
#[derive(Clone, Debug)]
pub struct Members<'a> {
    body: &'a [u8],
    pos: usize,
    started: bool,
    done: bool,
    malformed: bool,
}

impl Members<'_> {
    /// Whether the members ended because the body is not a well-formed
    /// JSON object (rather than at its closing brace). Meaningful once the
    /// iterator has returned `None`.
    pub fn malformed(&self) -> bool {
        self.malformed
    }

    fn fail(&mut self) -> Option<Member> {
        self.done = true;
        self.malformed = true;
        None
    }
}

impl Iterator for Members<'_> {
    type Item = Member;

    #[inline]
    fn next(&mut self) -> Option<Member> {
        if self.done {
            return None;
        }
        let body = self.body;
        let mut i = skip_whitespace(body, self.pos);
        if !self.started {
            self.started = true;
            if body.get(i) != Some(&b'{') {
                return self.fail();
            }
            i = skip_whitespace(body, i + 1);
            if body.get(i) == Some(&b'}') {
                self.done = true;
                return None;
            }
        }
        if body.get(i) != Some(&b'"') {
            return self.fail();
        }
        let Some(key_end) = string_end(body, i + 1) else {
            return self.fail();
        };
        let key = i + 1..key_end;
        i = skip_whitespace(body, key_end + 1);
        if body.get(i) != Some(&b':') {
            return self.fail();
        }
        i = skip_whitespace(body, i + 1);
        let Some(value_end) = value_end(body, i) else {
            return self.fail();
        };
        let value = i..value_end;
        i = skip_whitespace(body, value_end);
        match body.get(i) {
            Some(b',') => self.pos = i + 1,
            Some(b'}') => self.done = true,
            // The member is whole; what follows it is not JSON.
            _ => {
                self.done = true;
                self.malformed = true;
            }
        }
        Some(Member { key, value })
    }
}
