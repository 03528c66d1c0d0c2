//! The walk of a JSON object's top level, against what serde_json reads.

use super::*;

fn keys(body: &[u8]) -> Vec<String> {
    members(body)
        .map(|m| String::from_utf8_lossy(&body[m.key]).into_owned())
        .collect()
}

#[test]
fn only_top_level_members_are_found() {
    let body = br#" { "a" : 1 , "messages":[{"model":"x","content":"\"model\":\"y\""}], "b":{"model":[1,{"c":"]}"}]},"model":"m","n":null,"t":true,"f":-1.5e3 } trailing"#;
    assert_eq!(keys(body), ["a", "messages", "b", "model", "n", "t", "f"]);
    let mut it = members(body);
    let values: Vec<&[u8]> = it.by_ref().map(|m| &body[m.value]).collect();
    assert_eq!(values[0], b"1");
    assert_eq!(values[3], br#""m""#);
    assert_eq!(values[6], b"-1.5e3");
    assert!(!it.malformed());
}

#[test]
fn escaped_keys_decode_to_their_name() {
    let body = br#"{"mod\u0065l":1,"\u006D\u006f\u0064\u0065\u006C":2,"mode\u006c":3,"model\u0000":4,"Model":5,"mod\el":6,"model":7}"#;
    let found: Vec<bool> = members(body).map(|m| m.key_is(body, "model")).collect();
    assert_eq!(found, [true, true, true, false, false, false, true]);
    let literal: Vec<bool> = members(body).map(|m| m.key_is_literal(body)).collect();
    assert_eq!(literal, [false, false, false, false, true, false, true]);
}

#[test]
fn surrogate_pairs_decode_and_lone_surrogates_do_not_match() {
    let body = "{\"\\ud83e\\udd80x\":1,\"\\ud83ex\":2}".as_bytes();
    let found: Vec<bool> = members(body)
        .map(|m| m.key_is(body, "\u{1f980}x"))
        .collect();
    assert_eq!(found, [true, false]);
}

#[test]
fn string_values_are_decoded_and_borrowed_when_plain() {
    let body = br#"{"a":"gpt\u002d4o","b":"plain","c":42,"d":"org\/m\"x\\"}"#;
    let values: Vec<Option<Cow<'_, str>>> = members(body).map(|m| m.string_value(body)).collect();
    assert_eq!(values[0].as_deref(), Some("gpt-4o"));
    assert!(matches!(values[1], Some(Cow::Borrowed("plain"))));
    assert_eq!(values[2], None);
    assert_eq!(values[3].as_deref(), Some("org/m\"x\\"));
}

#[test]
fn model_members_say_when_parsers_could_disagree() {
    for (body, unambiguous) in [
        (&br#"{"model":"a","messages":[{"model":"b"}]}"#[..], true),
        (br#"{"messages":[]}"#, true),
        (br#"{"model":"gpt\u002d4o"}"#, true),
        (br#"{"model":"a","model":"b"}"#, false),
        (br#"{"mod\u0065l":"a"}"#, false),
        (br#"{"model":"a","#, false),
        (b"not json", false),
    ] {
        let found = model_members(body);
        assert_eq!(
            found.is_unambiguous(),
            unambiguous,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let found = model_members(br#"{"model":"a","x":{"model":"y"},"model":7}"#);
    assert_eq!((found.last, found.count), (None, 2));
}

#[test]
fn malformed_bodies_end_early_and_say_so() {
    for body in [
        &b""[..],
        b"[1]",
        b"{",
        b"{\"model",
        b"{\"model\":",
        b"{\"model\":\"abc",
        b"{\"a\":1,}",
        b"{\"a\" 1}",
        b"{\"a\":[1,2}",
        b"{\"a\":1 \"b\":2}",
        b"\"\\",
    ] {
        let mut it = members(body);
        for _ in it.by_ref() {}
        assert!(it.malformed(), "{}", String::from_utf8_lossy(body));
    }
    let mut it = members(b"{}");
    assert_eq!(it.next(), None);
    assert!(!it.malformed());
}

#[test]
fn a_model_key_in_another_case_counts_as_go_reads_it() {
    // Go's encoding/json serves `qwen` here; the body is ambiguous.
    let found = model_members(br#"{"model":"llama3.2","MODEL":"qwen2.5:72b"}"#);
    assert_eq!(found.last.as_deref(), Some("qwen2.5:72b"));
    assert_eq!((found.count, found.escaped), (2, true));
    assert!(!found.is_unambiguous());
    // Alone, a key in another case is still not the plain spelling.
    let found = model_members(br#"{"Mod\u0045l":"qwen"}"#);
    assert_eq!((found.count, found.escaped), (1, true));
    assert!(!found.is_unambiguous());
    assert!(model_members(br#"{"model":"a","modelx":"b","mode":"c"}"#).is_unambiguous());
}

#[test]
fn every_member_of_valid_json_is_found_as_serde_sees_it() {
    let body = br#"{"x":{"y":[1,"}",{"z":"\\\""}]},"s":"a\"b","e":[],"o":{},"u":"\ud83e\udd80","w" :	true}"#;
    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).unwrap();
    let ours: Vec<String> = keys(body);
    let theirs: Vec<&String> = parsed.keys().collect();
    let mut sorted = ours.clone();
    sorted.sort();
    assert_eq!(sorted, theirs.into_iter().cloned().collect::<Vec<_>>());
    for m in members(body) {
        let key = String::from_utf8_lossy(&body[m.key.clone()]).into_owned();
        let value: serde_json::Value = serde_json::from_slice(&body[m.value]).unwrap();
        assert_eq!(parsed[&key], value, "{key}");
    }
}
