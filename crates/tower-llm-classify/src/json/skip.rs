//! Skipping over JSON without reading it: whitespace, strings, whole values.
//!
//! The walk of a request body is mostly this: the keys and short values of
//! a chat request are a few bytes each, and a `memchr` call costs more to
//! start (about 90 instructions) than such a string costs to read. Short
//! strings are read eight bytes at a time in a `u64` (a quote or a backslash
//! found with two bit tricks per word); past [`SHORT`] bytes a string is
//! long (a conversation's text) and the rest is searched with `memchr`,
//! which runs at memory speed. Inside nested objects and arrays only the
//! bytes between strings are looked at one by one, and they are few.

/// How far a string is read a word at a time before it counts as long and
/// the rest is searched with `memchr`: most keys and model names end well
/// before.
const SHORT: usize = 32;

use crate::bytes::{bytes_equal_to, first_found};

/// JSON's whitespace (RFC 8259 §2): space, tab, line feed, carriage return.
#[inline]
pub(super) fn skip_whitespace(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && matches!(body[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index of the closing quote of a string whose content starts at
/// `start`: the first quote not escaped by a backslash. A backslash escapes
/// the byte after it, so the scan jumps over both; a quote is therefore the
/// end exactly when the run of backslashes before it is even, which is how
/// the long part is checked after `memchr` finds each quote (chat text is
/// full of escaped newlines, and stopping at every backslash would run
/// about half as fast).
#[inline]
pub(crate) fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let short_end = start.saturating_add(SHORT);
    let mut i = start;
    while i < short_end {
        let Some(word) = body.get(i..).and_then(<[u8]>::first_chunk::<8>) else {
            return short_string_tail(body, i);
        };
        let word = u64::from_le_bytes(*word);
        let found = bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\');
        if found == 0 {
            i += 8;
            continue;
        }
        let at = i + first_found(found);
        if body[at] == b'"' {
            return Some(at);
        }
        i = at + 2;
    }
    long_string_end(body, start, i)
}

/// [`string_end`] over the last bytes of the body, fewer than a word.
#[inline(never)]
fn short_string_tail(body: &[u8], mut i: usize) -> Option<usize> {
    while i < body.len() {
        match body[i] {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// [`string_end`] from `from` on, for a string that started at `start` and
/// has no closing quote before `from` (where no escape is half read).
#[inline(never)]
fn long_string_end(body: &[u8], start: usize, mut from: usize) -> Option<usize> {
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
///
/// Brackets are counted, not matched: `[1}` ends at its `}` (the member
/// after it, or the object's end, then finds the damage), as the walk has
/// always read it.
#[inline]
pub(super) fn value_end(body: &[u8], start: usize) -> Option<usize> {
    match *body.get(start)? {
        b'"' => string_end(body, start + 1).map(|end| end + 1),
        b'{' | b'[' => nested_end(body, start + 1),
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

/// The end (exclusive) of an object or array whose content starts at `i`:
/// just after the bracket that brings the depth back to zero.
fn nested_end(body: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 1_usize;
    loop {
        match *body.get(i)? {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward reading `string_end` must agree with: one byte
    /// at a time, a backslash taking the byte after it.
    fn reference_string_end(body: &[u8], start: usize) -> Option<usize> {
        short_string_tail(body, start)
    }

    #[test]
    fn strings_end_at_the_first_unescaped_quote_at_every_length_and_offset() {
        // Lengths across the word, short and long boundaries, escapes at
        // every position a word can split them.
        for len in 0..80 {
            for escape_at in [None, Some(0), Some(6), Some(7), Some(8), Some(31), Some(32)] {
                for escape in [&b"\\\""[..], b"\\\\", b"\\n", b"\\u0041"] {
                    let mut content = vec![b'a'; len];
                    if let Some(at) = escape_at.filter(|&at| at <= len) {
                        content.splice(at..at, escape.iter().copied());
                    }
                    for offset in 0..3 {
                        let mut body = vec![b' '; offset];
                        body.extend_from_slice(&content);
                        body.extend_from_slice(b"\"tail\"");
                        assert_eq!(
                            string_end(&body, offset),
                            Some(offset + content.len()),
                            "{}",
                            String::from_utf8_lossy(&body)
                        );
                        assert_eq!(
                            string_end(&body, offset),
                            reference_string_end(&body, offset)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unterminated_strings_have_no_end() {
        for body in [
            &b""[..],
            b"abc",
            b"abc\\\"",
            b"abc\\",
            &[b'x'; 100],
            b"\\\\\\\"",
        ] {
            assert_eq!(string_end(body, 0), None);
        }
        let mut long = vec![b'x'; 100];
        long.extend_from_slice(b"\\\"\\");
        assert_eq!(string_end(&long, 0), None);
    }

    #[test]
    fn a_word_with_several_candidates_reports_the_first() {
        // The borrow of the bit trick marks a `#` (one above `"`) right
        // after a quote, and a `]` after a backslash: never the first.
        let body = b"ab\"#\"#cd\\]\"efghijklmnop";
        assert_eq!(string_end(body, 0), Some(2));
        assert_eq!(string_end(body, 3), Some(4));
        assert_eq!(string_end(body, 5), Some(10));
    }

    #[test]
    fn nested_values_skip_brackets_inside_strings() {
        let body = br#"[{"a":"]}"},["\"]"]] ,"#;
        assert_eq!(value_end(body, 0), Some(20));
        assert_eq!(value_end(b"[1}", 0), Some(3));
        assert_eq!(value_end(b"[[1]", 0), None);
        assert_eq!(value_end(b"-1.5e3}", 0), Some(6));
        assert_eq!(value_end(b"}", 0), None);
    }
}
