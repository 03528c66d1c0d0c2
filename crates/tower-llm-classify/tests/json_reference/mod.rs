//! The walk of a JSON object's top level as it was written before it was
//! made fast (commit 6bcdfc8, `src/json.rs`): one byte at a time inside
//! nested values, `memchr` for every string, keys decoded piece by piece.
//! Kept verbatim as the reference the fast walk must agree with, on any
//! input, valid JSON or not; and `scan` is what `RequestMeta` read from a
//! body then (`src/meta.rs`, `scan_json_body_checked`).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::borrow::Cow;
use std::ops::Range;

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
    pub fn key_matches(&self, body: &[u8], name: &str) -> bool {
        body.get(self.key.clone())
            .is_some_and(|raw| decoded_eq_ignoring_ascii_case(raw, name.as_bytes()))
    }

    /// Whether the key is written exactly as `name`: no escapes, same case,
    /// the one spelling every parser reads as `name`.
    pub fn key_is_plain(&self, body: &[u8], name: &str) -> bool {
        body.get(self.key.clone()) == Some(name.as_bytes())
    }

    /// Whether the key is written without escapes.
    pub fn key_is_literal(&self, body: &[u8]) -> bool {
        body.get(self.key.clone())
            .is_some_and(|raw| memchr::memchr(b'\\', raw).is_none())
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
        if memchr::memchr(b'\\', inner).is_none() {
            return Some(String::from_utf8_lossy(inner));
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

/// JSON's whitespace (RFC 8259 §2): space, tab, line feed, carriage return.
fn skip_whitespace(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && matches!(body[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index of the closing quote of a string whose content starts at
/// `start`: the first quote preceded by an even number of backslashes.
/// Searching for the quote alone (one-byte `memchr`) runs about twice as
/// fast as stopping at every backslash too, and chat text is full of
/// escaped newlines; each run of backslashes is counted once.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut from = start;
    loop {
        let at = from + memchr::memchr(b'"', body.get(from..)?)?;
        let backslashes = body[start..at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
}

/// The end (exclusive) of the value starting at `start`.
fn value_end(body: &[u8], start: usize) -> Option<usize> {
    match *body.get(start)? {
        b'"' => string_end(body, start + 1).map(|end| end + 1),
        b'{' | b'[' => {
            let mut depth = 1_usize;
            let mut i = start + 1;
            while i < body.len() {
                match body[i] {
                    b'"' => i = string_end(body, i + 1)?,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        // A number, `true`, `false`, `null` (or what a lenient parser reads
        // as one, such as Python's `NaN`): up to the next delimiter.
        _ => {
            let mut i = start;
            while i < body.len()
                && !matches!(body[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// Whether the string content `raw` (escapes as written) decodes to
/// `name`, without allocating.
fn decoded_eq(raw: &[u8], name: &[u8]) -> bool {
    decoded_matches(raw, name, <[u8]>::eq)
}

/// [`decoded_eq`], ASCII letters compared in either case.
fn decoded_eq_ignoring_ascii_case(raw: &[u8], name: &[u8]) -> bool {
    decoded_matches(raw, name, <[u8]>::eq_ignore_ascii_case)
}

/// Whether `raw`, decoded piece by piece (a run of plain bytes, or one
/// escape's UTF-8), matches `name` piece by piece under `same`.
fn decoded_matches(raw: &[u8], name: &[u8], same: impl Fn(&[u8], &[u8]) -> bool) -> bool {
    let mut i = 0;
    let mut matched = 0;
    while i < raw.len() {
        let mut buf = [0_u8; 4];
        let (piece, next) = if raw[i] == b'\\' {
            let Some((c, next)) = escape_at(raw, i) else {
                return false;
            };
            (c.encode_utf8(&mut buf).as_bytes(), next)
        } else {
            let next = memchr::memchr(b'\\', &raw[i..]).map_or(raw.len(), |at| i + at);
            (&raw[i..next], next)
        };
        match name.get(matched..matched + piece.len()) {
            Some(want) if same(want, piece) => {}
            _ => return false,
        }
        matched += piece.len();
        i = next;
    }
    matched == name.len()
}

/// Decodes the string content `raw`; `None` if an escape is invalid.
fn decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let (c, next) = escape_at(raw, i)?;
            let mut buf = [0_u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            i = next;
        } else {
            let next = memchr::memchr(b'\\', &raw[i..]).map_or(raw.len(), |at| i + at);
            out.extend_from_slice(&raw[i..next]);
            i = next;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The character of the escape at `raw[at]` (a backslash) and the index
/// after it: RFC 8259 §7, with `\u` surrogate pairs joined. A lone
/// surrogate is invalid (serde_json refuses it).
fn escape_at(raw: &[u8], at: usize) -> Option<(char, usize)> {
    let simple = match *raw.get(at + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let high = hex4(raw, at + 2)?;
            if !(0xD800..0xE000).contains(&high) {
                return Some((char::from_u32(high)?, at + 6));
            }
            if high >= 0xDC00 || raw.get(at + 6..at + 8) != Some(b"\\u") {
                return None;
            }
            let low = hex4(raw, at + 8)?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            return Some((char::from_u32(c)?, at + 12));
        }
        _ => return None,
    };
    Some((simple, at + 2))
}

fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = raw.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0_u32, |n, &d| Some(n * 16 + (d as char).to_digit(16)?))
}

/// What `RequestMeta::from_whole_body` read from a body: the model, the
/// stream flag and whether the body is unambiguous about its model.
pub fn scan(body: &[u8]) -> (Option<String>, Option<bool>, bool) {
    let mut stream = None;
    let mut last: Option<Cow<'_, str>> = None;
    let (mut count, mut escaped) = (0_usize, false);
    let mut members = members(body);
    for member in members.by_ref() {
        if member.key_matches(body, "model") {
            last = member.string_value(body);
            count += 1;
            escaped |= !member.key_is_plain(body, "model");
        } else if member.key_matches(body, "stream") {
            stream = match &body[member.value] {
                b"true" => Some(true),
                b"false" => Some(false),
                _ => None,
            };
        }
    }
    let unambiguous = !members.malformed() && count <= 1 && !escaped;
    (last.map(Cow::into_owned), stream, unambiguous)
}
