#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins, for arbitrary input, that the fast walk of a JSON object's top
//! level (`json::members`, the key comparisons, `model_members` and
//! `RequestMeta::from_whole_body`) reads exactly what the straightforward
//! walk it replaced read (`json_reference`), valid JSON or not; and, for
//! objects serde_json accepts, that the `model` and `stream` it finds are
//! the ones serde_json's `Value` holds, however the keys are escaped and
//! whatever whitespace separates the tokens.

mod json_reference;

use http::{HeaderMap, Uri};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use tower_llm_classify::RequestMeta;
use tower_llm_classify::json::{self, model_members};

/// Names the key comparisons are asked about: the two the request parse
/// uses, other cases, a name with an escape-like backslash, an empty one,
/// one longer than every token, and non-ASCII.
const NAMES: &[&str] = &[
    "model", "stream", "MODEL", "Stream", "mod\\el", "", "messages", "modèl", "🦀x",
];

/// Pieces of JSON-ish bytes, so that random concatenations hit every path
/// of the walk: strings cut at word boundaries, escapes split anywhere,
/// brackets unbalanced, keys escaped in every way.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    "\\\"",
    "\\\\",
    ":",
    ",",
    " ",
    "\n\t",
    "\"model\"",
    "\"MODEL\"",
    "\"stream\"",
    "\"str\\u0065am\"",
    "\"mod\\u0065l\"",
    "\"\\u006d\\u006F\\u0064\\u0065\\u006c\"",
    "\"mod\\el\"",
    "\"model\\u0000\"",
    "\"messages\"",
    "\"\\ud83e\\udd80x\"",
    "\"\\ud83e\"",
    "\"gpt-4o\"",
    "\"gpt\\u002d4o\"",
    "\"org\\/m\\\"x\\\\\"",
    "true",
    "false",
    "null",
    "-1.5e3",
    "NaN",
    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
    "aaaaaaa",
    "\"Line one with \\\"quotes\\\" and\\nmore text past a word or four.\"",
    "\u{e9}",
    "\u{ff}",
];

/// Keys as written, for objects made of members: every spelling of the
/// names the walk is asked about, escapes valid and not.
const WRITTEN_KEYS: &[&str] = &[
    "\"model\"",
    "\"MODEL\"",
    "\"mOdEl\"",
    "\"stream\"",
    "\"str\\u0065am\"",
    "\"mod\\u0065l\"",
    "\"mod\\u0045L\"",
    "\"\\u006d\\u006F\\u0064\\u0065\\u006c\"",
    "\"mod\\el\"",
    "\"mod\\\\el\"",
    "\"model\\u0000\"",
    "\"modèl\"",
    "\"mod\\u00e8l\"",
    "\"\\ud83e\\udd80x\"",
    "\"\\ud83ex\"",
    "\"messages\"",
    "\"\"",
    "\"mode\\u006c\\u\"",
];

/// One member's tokens: a key, a value, what follows (mostly a comma).
fn member_tokens() -> impl Strategy<Value = String> {
    (
        select(WRITTEN_KEYS),
        select(&["", " ", "\n"][..]),
        select(TOKENS),
        proptest::option::of(select(TOKENS)),
        prop_oneof![3 => Just(","), 1 => select(TOKENS)],
    )
        .prop_map(|(key, space, value, more, after)| {
            format!("{key}{space}:{space}{value}{}{after}", more.unwrap_or(""))
        })
}

/// Bytes that look like JSON objects, mostly, and sometimes are.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let tokens = proptest::collection::vec(select(TOKENS), 0..40)
        .prop_map(|tokens| tokens.concat().into_bytes());
    prop_oneof![
        proptest::collection::vec(member_tokens(), 0..6).prop_map(|members| format!(
            "{{{}}}",
            members.concat()
        )
        .into_bytes()),
        tokens
            .clone()
            .prop_map(|rest| [b"{".as_slice(), &rest].concat()),
        tokens,
        proptest::collection::vec(any::<u8>(), 0..120),
        (
            proptest::collection::vec(select(TOKENS), 0..20),
            any::<u8>()
        )
            .prop_map(|(tokens, byte)| {
                let mut body = format!("{{{}", tokens.concat()).into_bytes();
                body.push(byte);
                body
            }),
    ]
}

fn uri() -> Uri {
    "https://api.openai.com/v1/chat/completions"
        .parse()
        .unwrap()
}

/// Keys as a request might carry them; some spell `model` or `stream` in
/// another case, so that each object holds each at most once in any case.
const KEYS: &[&str] = &[
    "model",
    "MODEL",
    "Model",
    "stream",
    "STREAM",
    "messages",
    "temperature",
    "tools",
    "modelx",
    "mode",
    "a\"b",
    "back\\slash",
    "é",
    "k with spaces",
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,50}".prop_map(Value::String),
        "[a-z\"\\\\/\n-]{0,70}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((select(KEYS), inner), 0..4).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(key, value)| (key.to_owned(), value))
                        .collect(),
                )
            }),
        ]
    })
}

/// How one character of a key is written.
#[derive(Clone, Copy, Debug)]
enum Spelling {
    AsIs,
    LowerHex,
    UpperHex,
}

fn write_key(out: &mut String, key: &str, spellings: &[Spelling]) {
    out.push('"');
    for (i, c) in key.chars().enumerate() {
        let spelling = spellings.get(i % spellings.len().max(1)).copied();
        match (c, spelling) {
            ('"', _) => out.push_str("\\\""),
            ('\\', _) => out.push_str("\\\\"),
            (c, Some(Spelling::AsIs) | None) => out.push(c),
            (c, Some(hex)) => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    match hex {
                        Spelling::UpperHex => out.push_str(&format!("\\u{unit:04X}")),
                        _ => out.push_str(&format!("\\u{unit:04x}")),
                    }
                }
            }
        }
    }
    out.push('"');
}

/// One member of a [`written_object`]: its key, the key as written (with
/// its quotes), its value.
type Written = (String, String, Value);

/// A JSON object written by hand: keys distinct in any case, each escaped
/// its own way, whitespace of any kind between tokens.
fn written_object() -> impl Strategy<Value = (String, Vec<Written>)> {
    let member = (
        select(KEYS),
        value(),
        proptest::collection::vec(
            select(
                &[
                    Spelling::AsIs,
                    Spelling::AsIs,
                    Spelling::LowerHex,
                    Spelling::UpperHex,
                ][..],
            ),
            1..4,
        ),
        select(&["", " ", "\n  ", "\t", "\r\n"][..]),
    );
    proptest::collection::vec(member, 0..7).prop_map(|members| {
        let mut seen: Vec<String> = Vec::new();
        let mut out = String::from("{");
        let mut pairs = Vec::new();
        for (key, value, spellings, space) in members {
            if seen.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                continue;
            }
            seen.push(key.to_owned());
            if !pairs.is_empty() {
                out.push(',');
            }
            out.push_str(space);
            let mut written = String::new();
            write_key(&mut written, key, &spellings);
            out.push_str(&written);
            out.push_str(space);
            out.push(':');
            out.push_str(space);
            out.push_str(&serde_json::to_string(&value).unwrap());
            out.push_str(space);
            pairs.push((key.to_owned(), written, value));
        }
        out.push('}');
        (out, pairs)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_walk_finds_the_members_the_reference_finds(body in jsonish()) {
        let mut ours = json::members(&body);
        let mut theirs = json_reference::members(&body);
        loop {
            let (a, b) = (ours.next(), theirs.next());
            match (&a, &b) {
                (Some(a), Some(b)) => {
                    prop_assert_eq!((&a.key, &a.value), (&b.key, &b.value));
                    for name in NAMES {
                        prop_assert_eq!(a.key_is(&body, name), b.key_is(&body, name), "{}", name);
                        prop_assert_eq!(
                            a.key_matches(&body, name),
                            b.key_matches(&body, name),
                            "{}",
                            name
                        );
                        prop_assert_eq!(a.key_is_plain(&body, name), b.key_is_plain(&body, name));
                    }
                    prop_assert_eq!(a.key_is_literal(&body), b.key_is_literal(&body));
                    prop_assert_eq!(a.string_value(&body), b.string_value(&body));
                    prop_assert_eq!(a.start(), b.start());
                }
                (None, None) => break,
                _ => prop_assert!(false, "{:?} against {:?}", a, b),
            }
        }
        prop_assert_eq!(ours.malformed(), theirs.malformed());
    }

    #[test]
    fn the_request_parse_reads_what_the_reference_read(body in jsonish()) {
        let (model, stream, unambiguous) = json_reference::scan(&body);
        let (meta, plain) = RequestMeta::from_whole_body(&uri(), &HeaderMap::new(), &body);
        prop_assert_eq!(meta.model.as_deref(), model.as_deref());
        prop_assert_eq!(meta.stream, stream.unwrap_or(false));
        prop_assert_eq!(plain, unambiguous);
        let ours = model_members(&body);
        let theirs = json_reference::model_members(&body);
        prop_assert_eq!(
            (ours.last, ours.count, ours.escaped, ours.malformed),
            (theirs.last, theirs.count, theirs.escaped, theirs.malformed)
        );
    }

    #[test]
    fn the_model_and_stream_are_the_ones_serde_json_reads((body, pairs) in written_object()) {
        let parsed: serde_json::Map<String, Value> = serde_json::from_str(&body).unwrap();
        prop_assert_eq!(parsed.len(), pairs.len());
        let any_case = |name: &str| {
            parsed.iter().find(|(key, _)| key.eq_ignore_ascii_case(name))
        };
        let (meta, plain) = RequestMeta::from_whole_body(&uri(), &HeaderMap::new(), body.as_bytes());
        let model = any_case("model").and_then(|(_, value)| value.as_str());
        prop_assert_eq!(meta.model.as_deref(), model);
        let stream = any_case("stream").and_then(|(_, value)| value.as_bool());
        prop_assert_eq!(meta.stream, stream.unwrap_or(false));
        // Plain when no key is `model` in any case, or the one that is is
        // written `"model"`.
        let expected_plain = pairs
            .iter()
            .find(|(key, _, _)| key.eq_ignore_ascii_case("model"))
            .is_none_or(|(_, written, _)| written == "\"model\"");
        prop_assert_eq!(plain, expected_plain);
        // Every member, its key decoded and its value parsed, is serde's.
        let mut members = json::members(body.as_bytes());
        let mut count = 0;
        for member in members.by_ref() {
            let key = pairs
                .iter()
                .map(|(key, _, _)| key)
                .find(|key| member.key_is(body.as_bytes(), key))
                .expect("every member's key decodes to one of the object's keys");
            let value: Value = serde_json::from_slice(&body.as_bytes()[member.value]).unwrap();
            prop_assert_eq!(&parsed[key.as_str()], &value);
            count += 1;
        }
        prop_assert!(!members.malformed());
        prop_assert_eq!(count, pairs.len());
    }
}
