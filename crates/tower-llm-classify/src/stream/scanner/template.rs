//! [`EventReader`]: reads events into a [`Transcript`] — and the common
//! one, an event that differs from the last one read only by its text,
//! without walking or searching it again.
//!
//! A stream's content events are one template with a different string in
//! it: every OpenAI chunk repeats `id`, `object`, `created`, `model`,
//! `system_fingerprint` and the choice around its `delta.content`; every
//! Anthropic `content_block_delta` repeats its type, index and delta type
//! around its `text`. Once an event has been read whole and added the text
//! of exactly one string, what comes before and after that string is kept.
//! An event with the same name, the same bytes before and after, and one
//! JSON string between them:
//!
//! - reads into the transcript exactly as the kept one did but for that
//!   string (every other effect of reading it — the envelope set once, the
//!   same flags — is already there), so its string alone is appended;
//! - gets the kept one's verdicts from the scanner's key searches: a key
//!   cannot be found inside a JSON string (every quote in one is escaped,
//!   and no key starts at a string's closing quote), so every search finds
//!   what it found in the kept event; only whether the string is empty
//!   can change whether the event is content, so each answer is judged
//!   once, on the first event that repeats the template with an empty or
//!   a non-empty string, and kept.
//!
//! Two comparisons of bytes then replace a walk of the event and the
//! searches for its error and content keys.

use crate::json;
use crate::stream::transcript::{NotContinuable, Transcript};

/// The room the template is first given: an OpenAI chunk's envelope (a
/// long model name and a fingerprint included) fits, so that a stream's
/// templates are one allocation.
const TEMPLATE_CAPACITY: usize = 512;

/// Reads events into a [`Transcript`] (see the [module docs](self)).
#[derive(Debug, Default)]
pub(super) struct EventReader {
    /// Whether the fields below hold a template.
    ready: bool,
    /// The template's event name, the bytes before its string and the
    /// bytes after it, one after the other in one buffer (reused).
    template: Vec<u8>,
    name_len: usize,
    before_len: usize,
    /// Whether the template is content with a non-empty string, and with
    /// an empty one: judged the first time an event that repeats it with
    /// such a string is seen (most templates are seen with one kind only).
    content_with_text: Option<bool>,
    content_without_text: Option<bool>,
}

/// Whether the scanner counts an event's data as content.
pub(super) type IsContent<'a> = &'a dyn Fn(&[u8]) -> bool;

/// An event that is the template but for its string.
pub(super) struct Hit<'a> {
    /// The string's content, escapes as written.
    pub(super) text: &'a [u8],
    /// Whether the string is plain ASCII without escapes.
    plain: bool,
    /// Whether the scanner counts the event as content (false when the
    /// caller did not ask).
    pub(super) content: bool,
}

impl Hit<'_> {
    /// Appends the string to the transcript's text: `false` when an
    /// escape in it is invalid.
    pub(super) fn append_to(&self, transcript: &mut Transcript) -> bool {
        if self.plain {
            transcript.append_plain_text(self.text);
            true
        } else {
            transcript.append_text(self.text)
        }
    }
}

impl EventReader {
    /// The event `data` named `name`, if it is the template but for its
    /// string; `content`, when given, judges the event's data the first
    /// time the template is repeated with an empty or a non-empty string.
    pub(super) fn hit<'a>(
        &mut self,
        name: &[u8],
        data: &'a [u8],
        content: Option<IsContent<'_>>,
    ) -> Option<Hit<'a>> {
        if !self.ready {
            return None;
        }
        let (template_name, rest) = self.template.split_at(self.name_len);
        let (before, after) = rest.split_at(self.before_len);
        // Most events are unnamed: their names compared without a call.
        let same_name =
            name.len() == template_name.len() && (name.is_empty() || name == template_name);
        if data.len() < before.len() + after.len() || !same_name {
            return None;
        }
        let start = before.len();
        let end = data.len() - after.len();
        if data[end..] != *after || data[..start] != *before {
            return None;
        }
        // `before` ends with the string's opening quote and `after` starts
        // with its closing one: the string must close exactly there, as
        // plain content does.
        let text = &data[start..end];
        let plain = json::is_plain(text);
        if !plain && json::string_end(data, start) != Some(end) {
            return None;
        }
        let content = content.is_some_and(|content| {
            let verdict = if text.is_empty() {
                &mut self.content_without_text
            } else {
                &mut self.content_with_text
            };
            *verdict.get_or_insert_with(|| content(data))
        });
        Some(Hit {
            text,
            plain,
            content,
        })
    }

    /// Reads one event's data into `transcript`: `false` when it is not a
    /// well-formed JSON object (the text it would have added is not kept).
    pub(super) fn read(&mut self, transcript: &mut Transcript, name: &[u8], data: &[u8]) -> bool {
        if let Some(hit) = self.hit(name, data, None) {
            return hit.append_to(transcript);
        }
        let read = transcript.event(name, data);
        match read.text {
            Some(text) => {
                let (before, after) = (&data[..text.start], &data[text.end..]);
                self.template.clear();
                self.template
                    .reserve(TEMPLATE_CAPACITY.max(name.len() + before.len() + after.len()));
                self.template.extend_from_slice(name);
                self.template.extend_from_slice(before);
                self.template.extend_from_slice(after);
                self.name_len = name.len();
                self.before_len = before.len();
                self.content_with_text = None;
                self.content_without_text = None;
                self.ready = true;
            }
            None => self.ready = false,
        }
        read.well_formed
    }
}

/// After the transcript could not read an event's `data`: whether it is
/// malformed, which fails the stream as the caller's SDK would fail on it
/// (not a JSON object). An object the transcript cannot represent (a
/// `content` given as an array of parts, `choices` as an object, a lone
/// surrogate escape, which JavaScript's `JSON.stringify` writes and
/// Python's and JavaScript's parsers read) is no failure: the stream goes
/// on, and only its continuation is off.
pub(super) fn unreadable(transcript: &mut Transcript, data: &[u8]) -> bool {
    let mut members = crate::json::members(data);
    members.by_ref().for_each(drop);
    if members.malformed() {
        return true;
    }
    transcript.block(NotContinuable::Unreadable);
    false
}
