//! [`Cursor`]: one pass over a JSON value, descending into the members and
//! elements a reader asks for and skipping the rest.
//!
//! A reader of a streamed event wants a few fields a few levels down
//! (`choices[0].delta.content`). Finding each member's end first and then
//! walking into it reads the nested bytes twice or more; the cursor reads
//! each byte once: a member the reader descends into is read in place, one
//! it leaves is skipped (strings a word at a time).

use super::skip::{skip_whitespace, string_end, value_end};

/// A position in a JSON body (see the [module docs](self)).
#[derive(Clone, Debug)]
pub(crate) struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Cursor { body, at: 0 }
    }

    fn whitespace(&mut self) {
        self.at = skip_whitespace(self.body, self.at);
    }

    /// Consumes `byte` (after white space) if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        self.whitespace();
        if self.body.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Whether nothing but white space is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.whitespace();
        self.at == self.body.len()
    }

    /// Reads the object at the cursor: `member` is called with each key as
    /// written (escapes not decoded) and the cursor at its value, which it
    /// reads whole or leaves (a value left is skipped). `false` when the
    /// object is not well formed or `member` said so.
    pub(crate) fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> bool) -> bool {
        if !self.eat(b'{') {
            return false;
        }
        if self.eat(b'}') {
            return true;
        }
        loop {
            let Some(key) = self.string() else {
                return false;
            };
            if !self.eat(b':') {
                return false;
            }
            self.whitespace();
            let value = self.at;
            if !member(self, key) || (self.at == value && !self.skip()) {
                return false;
            }
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}');
        }
    }

    /// Reads the array at the cursor: `element` is called with the cursor
    /// at each element, which it reads whole or leaves.
    pub(crate) fn array(&mut self, mut element: impl FnMut(&mut Self) -> bool) -> bool {
        if !self.eat(b'[') {
            return false;
        }
        if self.eat(b']') {
            return true;
        }
        loop {
            self.whitespace();
            let value = self.at;
            if !element(self) || (self.at == value && !self.skip()) {
                return false;
            }
            if self.eat(b',') {
                continue;
            }
            return self.eat(b']');
        }
    }

    /// Skips the value at the cursor.
    pub(crate) fn skip(&mut self) -> bool {
        self.value().is_some()
    }

    /// The value at the cursor, as written, consumed.
    pub(crate) fn value(&mut self) -> Option<&'a [u8]> {
        self.whitespace();
        let end = value_end(self.body, self.at)?;
        let value = &self.body[self.at..end];
        self.at = end;
        Some(value)
    }

    /// The string at the cursor, its content as written (escapes not
    /// decoded), consumed; `None` (nothing consumed) for another value.
    pub(crate) fn string(&mut self) -> Option<&'a [u8]> {
        self.whitespace();
        if self.body.get(self.at) != Some(&b'"') {
            return None;
        }
        let end = string_end(self.body, self.at + 1)?;
        let content = &self.body[self.at + 1..end];
        self.at = end + 1;
        Some(content)
    }

    /// Whether the value at the cursor is `null` (consumed if it is).
    pub(crate) fn null(&mut self) -> bool {
        self.whitespace();
        if self.body[self.at..].starts_with(b"null") {
            self.at += 4;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_read_in_place_and_members_left_are_skipped() {
        let body = br#" { "a" : [1, {"b":"]}"}], "c":{"d":"x\"y"}, "e":null } "#;
        let mut cursor = Cursor::new(body);
        let mut seen = Vec::new();
        let ok = cursor.object(|c, key| match key {
            b"c" => c.object(|c, key| {
                seen.push((key.to_vec(), c.string().unwrap().to_vec()));
                true
            }),
            b"e" => c.null(),
            _ => true,
        });
        assert!(ok && cursor.at_end());
        assert_eq!(seen, [(b"d".to_vec(), br#"x\"y"#.to_vec())]);
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for body in [
            &br#"{"a":1 "b":2}"#[..],
            br#"{"a":}"#,
            br#"{"a":1"#,
            br#"{"a":[1,}"#,
            br#"["a"]"#,
        ] {
            let mut cursor = Cursor::new(body);
            assert!(
                !cursor.object(|c, _| c.skip()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
