//! What a JSON string says once its escapes are decoded (RFC 8259 §7),
//! compared with a name without allocating, or decoded into a `String`.

use std::cmp::Ordering;

use crate::bytes::bytes_equal_to;

/// Below this length a slice is searched for a backslash a word at a time:
/// a `memchr` call costs more to start than that many bytes cost to read.
const SHORT: usize = 32;

/// Whether the string content `raw` is written with an escape.
#[inline]
pub(crate) fn has_escape(raw: &[u8]) -> bool {
    if raw.len() < SHORT {
        crate::bytes::contains_any(raw, b"\\")
    } else {
        memchr::memchr(b'\\', raw).is_some()
    }
}

/// Whether the string content `raw` (escapes as written) decodes to
/// `name`, without allocating.
#[inline]
pub(super) fn decoded_eq(raw: &[u8], name: &[u8]) -> bool {
    decoded_matches(raw, name, <[u8]>::eq)
}

/// [`decoded_eq`], ASCII letters compared in either case (a plain
/// comparison first: keys are nearly always written as they are meant).
#[inline]
pub(super) fn decoded_eq_ignoring_ascii_case(raw: &[u8], name: &[u8]) -> bool {
    decoded_matches(raw, name, |a, b| a == b || a.eq_ignore_ascii_case(b))
}

/// Whether `raw`, decoded, matches `name` under `same`.
///
/// Every escape is longer written than decoded (`\n` is two bytes for one,
/// `\u00e9` six for two, a surrogate pair twelve for four), so the lengths
/// settle most keys before any decoding: one shorter than `name` never
/// matches, one as long matches only as written without escapes, and a
/// longer one only if an escape starts within `name`'s length.
#[inline]
fn decoded_matches(raw: &[u8], name: &[u8], same: impl Fn(&[u8], &[u8]) -> bool) -> bool {
    match raw.len().cmp(&name.len()) {
        Ordering::Less => false,
        Ordering::Equal => same(raw, name) && !has_escape(raw),
        Ordering::Greater => {
            raw[..name.len()].contains(&b'\\') && decoded_pieces_match(raw, name, same)
        }
    }
}

/// [`decoded_matches`] the long way: `raw` decoded piece by piece (a run of
/// plain bytes, or one escape's UTF-8), each piece matched under `same`.
#[inline(never)]
fn decoded_pieces_match(raw: &[u8], name: &[u8], same: impl Fn(&[u8], &[u8]) -> bool) -> bool {
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
pub(super) fn decode(raw: &[u8]) -> Option<String> {
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

/// Appends the string content `raw`, decoded, to `out` as UTF-8 (what it
/// appends is always valid UTF-8: bytes that are not are replaced),
/// growing it, never allocating a buffer of its own; `false`, with `out`
/// as it was, if an escape is invalid.
pub(crate) fn append_decoded(raw: &[u8], out: &mut Vec<u8>) -> bool {
    // (A quote is never in a string's content unescaped: checking for one
    // costs nothing here and lets a template's string be checked once.)
    if raw.len() < SHORT && is_plain(raw) {
        out.extend_from_slice(raw);
        return true;
    }
    if !has_escape(raw) {
        append_utf8(raw, out);
        return true;
    }
    let start = out.len();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let Some((c, next)) = escape_at(raw, i) else {
                out.truncate(start);
                return false;
            };
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            i = next;
        } else {
            let next = memchr::memchr(b'\\', &raw[i..]).map_or(raw.len(), |at| i + at);
            append_utf8(&raw[i..next], out);
            i = next;
        }
    }
    true
}

/// Whether the string content `raw` is plain: ASCII without a backslash
/// or a quote, as a stream's tokens nearly all are. Such content decodes
/// to itself and ends where it is cut (no quote inside, no escape at its
/// end). Checked in one pass, a word at a time (content shorter than a
/// word as two overlapping halves).
#[inline]
pub(crate) fn is_plain(raw: &[u8]) -> bool {
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let plain = |word: u64| {
        word & HIGHS == 0 && bytes_equal_to(word, b'\\') | bytes_equal_to(word, b'"') == 0
    };
    if let Some(last) = raw.last_chunk::<8>() {
        let (words, rest) = raw.as_chunks::<8>();
        return words.iter().all(|w| plain(u64::from_le_bytes(*w)))
            // The last bytes: a word that overlaps the ones before.
            && (rest.is_empty() || plain(u64::from_le_bytes(*last)));
    }
    match (raw.first_chunk::<4>(), raw.last_chunk::<4>()) {
        (Some(first), Some(last)) => plain(
            u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32,
        ),
        _ => raw.iter().all(|&b| b.is_ascii() && b != b'\\' && b != b'"'),
    }
}

/// Appends `bytes`, the invalid UTF-8 in them replaced. A stream's strings
/// are mostly ASCII tokens, checked a word at a time; `str::from_utf8`
/// costs about 100 instructions to start on a 7-byte token (callgrind).
fn append_utf8(bytes: &[u8], out: &mut Vec<u8>) {
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        out.extend_from_slice(bytes);
    } else {
        out.extend_from_slice(String::from_utf8_lossy(bytes).as_bytes());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_content_has_no_backslash_quote_or_non_ascii_byte_at_any_length_and_position() {
        for len in 0..40 {
            assert!(is_plain(&vec![b'a'; len]));
            for at in 0..len {
                for odd in [b'\\', b'"', 0x80, 0xC3, 0xFF] {
                    let mut raw = vec![b'a'; len];
                    raw[at] = odd;
                    assert!(!is_plain(&raw), "{raw:?}");
                }
            }
        }
    }

    #[test]
    fn appended_text_is_decoded_and_always_utf8() {
        let mut out = Vec::new();
        for raw in [&b"plain"[..], b" caf\xC3\xA9", b"\\u00e9\\n", b"bad \xFF"] {
            assert!(append_decoded(raw, &mut out));
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain caf\u{e9}\u{e9}\nbad \u{FFFD}"
        );
        let mut out = b"kept".to_vec();
        assert!(!append_decoded(b"x\\q", &mut out));
        assert_eq!(out, b"kept");
    }
}
