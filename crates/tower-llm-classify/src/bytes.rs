//! Byte searches in short inputs (a key, a host, a media type), eight
//! bytes at a time in a `u64`: for a few dozen bytes, starting `memchr`
//! costs more (about 90 instructions) than the whole search.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` that is `byte`, and perhaps of
/// bytes after the first such one (a borrow can carry into them): the
/// lowest bit set is always exact, which is all callers read.
#[inline]
pub(crate) fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The index in `word` (little-endian: byte 0 first) of the byte that set
/// the lowest bit of `found`, a non-zero result of [`bytes_equal_to`].
#[inline]
pub(crate) fn first_found(found: u64) -> usize {
    (found.trailing_zeros() / 8) as usize
}

/// The index of the first `byte` in `bytes`.
#[inline]
pub(crate) fn find(bytes: &[u8], byte: u8) -> Option<usize> {
    let (words, rest) = bytes.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let found = bytes_equal_to(u64::from_le_bytes(*word), byte);
        if found != 0 {
            return Some(i * 8 + first_found(found));
        }
    }
    let before = bytes.len() - rest.len();
    rest.iter().position(|&b| b == byte).map(|at| before + at)
}

/// Whether `bytes` holds any byte of `set`.
#[inline]
pub(crate) fn contains_any(bytes: &[u8], set: &[u8]) -> bool {
    let hit = |word: &[u8; 8]| {
        let word = u64::from_le_bytes(*word);
        set.iter()
            .fold(0, |found, &b| found | bytes_equal_to(word, b))
            != 0
    };
    let (words, rest) = bytes.as_chunks::<8>();
    if words.iter().any(hit) {
        return true;
    }
    // The last bytes: a word that overlaps the ones before, when there is one.
    match bytes.last_chunk::<8>() {
        Some(last) if !rest.is_empty() => hit(last),
        Some(_) => false,
        None => rest.iter().any(|b| set.contains(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_any_finds_a_byte_at_every_position_and_length() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b':';
                assert!(contains_any(&bytes, b"@:["), "{len} {at}");
                bytes[at] = b'9'; // one above `:`, and `[`-`a` neighbours
                assert!(!contains_any(&bytes, b"@:["), "{len} {at}");
            }
            assert!(!contains_any(&vec![b'a'; len], b"@:["));
        }
    }

    #[test]
    fn find_returns_the_first_index_at_every_position_and_length() {
        for len in 0..40 {
            assert_eq!(find(&vec![b'a'; len], b';'), None);
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b';';
                if at + 1 < len {
                    bytes[len - 1] = b';';
                }
                assert_eq!(find(&bytes, b';'), Some(at), "{len} {at}");
            }
        }
    }

    #[test]
    fn the_first_found_byte_is_exact_when_a_borrow_marks_later_ones() {
        // `#` is one above `"`: after a true match the borrow marks it too.
        let word = u64::from_le_bytes(*b"ab\"#\"#cd");
        let found = bytes_equal_to(word, b'"');
        assert_eq!(first_found(found), 2);
        assert_eq!(bytes_equal_to(u64::from_le_bytes(*b"abcdefgh"), b'"'), 0);
    }
}
