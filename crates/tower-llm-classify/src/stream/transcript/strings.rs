//! The envelope's strings of a [`Transcript`](super::Transcript): copied
//! once each, when first seen, into one buffer.

use std::ops::Range;

use crate::json::{self, Cursor};

/// A string of the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field {
    Id,
    Model,
    Object,
    SystemFingerprint,
    CreatedAt,
    FinishReason,
}

const FIELDS: usize = 6;

/// The room the buffer is first given: an OpenAI chunk's `id`, `object`,
/// `model`, `system_fingerprint` and finish reason fit, so that a stream's
/// envelope is one allocation (it was one per string).
const CAPACITY: usize = 192;

/// The envelope's strings, decoded, one after the other in one buffer.
#[derive(Clone, Debug, Default)]
pub(super) struct Strings {
    /// UTF-8 by construction: only [`json::append_decoded`]'s output is
    /// appended, and it is cut only where a string started.
    buffer: Vec<u8>,
    /// Where each field's string lies in the buffer, once set.
    fields: [Option<Range<usize>>; FIELDS],
}

/// Which strings were set and how long the buffer was: what a withheld
/// frame goes back to.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StringsMark {
    set: u8,
    len: usize,
}

impl Strings {
    /// The field's string, once set.
    pub(super) fn get(&self, field: Field) -> Option<&str> {
        let range = self.fields[field as usize].clone()?;
        std::str::from_utf8(self.buffer.get(range)?).ok()
    }

    pub(super) fn mark(&self) -> StringsMark {
        let set = self.fields.iter().enumerate().fold(0, |set, (bit, field)| {
            set | (u8::from(field.is_some()) << bit)
        });
        StringsMark {
            set,
            len: self.buffer.len(),
        }
    }

    /// Goes back to `mark`: the fields set since are cleared. They were
    /// set once each, so after the mark, and their strings lie past its
    /// length.
    pub(super) fn restore(&mut self, mark: StringsMark) {
        for (bit, field) in self.fields.iter_mut().enumerate() {
            if mark.set & (1 << bit) == 0 {
                *field = None;
            }
        }
        self.buffer.truncate(mark.len);
    }

    /// Sets a field from the value at the cursor the first time it is
    /// seen (the value is left, to be skipped, once the field is set);
    /// `false` when the value is neither a string nor null.
    pub(super) fn set_once(&mut self, field: Field, cursor: &mut Cursor<'_>) -> bool {
        if self.fields[field as usize].is_some() || cursor.null() {
            return true;
        }
        let Some(raw) = cursor.string() else {
            return false;
        };
        if self.buffer.capacity() == 0 {
            self.buffer.reserve(CAPACITY);
        }
        let start = self.buffer.len();
        if !json::append_decoded(raw, &mut self.buffer) {
            return false;
        }
        self.fields[field as usize] = Some(start..self.buffer.len());
        true
    }
}
