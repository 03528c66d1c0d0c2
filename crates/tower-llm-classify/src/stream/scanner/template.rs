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
//!   can change whether the event is content, and both answers are kept.
//!
//! Two comparisons of bytes then replace a walk of the event and the
//! searches for its error and content keys.

use crate::stream::transcript::Transcript;

/// Reads events into a [`Transcript`] (see the [module docs](self)).
#[derive(Debug, Default)]
pub(super) struct EventReader {
    /// Whether the fields below hold a template.
    ready: bool,
    name: Vec<u8>,
    before: Vec<u8>,
    after: Vec<u8>,
    /// Whether the template is content with a non-empty string, and with
    /// an empty one.
    content_with_text: bool,
    content_without_text: bool,
    /// Where the variants of the template are written to be judged.
    scratch: Vec<u8>,
}

/// Whether the scanner counts an event's data as content.
pub(super) type IsContent<'a> = &'a dyn Fn(&[u8]) -> bool;

/// An event that is the template but for its string.
pub(super) struct Hit<'a> {
    /// The string's content, escapes as written.
    pub(super) text: &'a [u8],
    /// Whether the scanner counts the event as content.
    pub(super) content: bool,
}

impl EventReader {
    /// The event `data` named `name`, if it is the template but for its
    /// string.
    pub(super) fn hit<'a>(&self, name: &[u8], data: &'a [u8]) -> Option<Hit<'a>> {
        if !self.ready
            || data.len() < self.before.len() + self.after.len()
            || name != self.name.as_slice()
        {
            return None;
        }
        let start = self.before.len();
        let end = data.len() - self.after.len();
        if data[end..] != *self.after || data[..start] != *self.before {
            return None;
        }
        // `before` ends with the string's opening quote and `after` starts
        // with its closing one: the string must close exactly there.
        if crate::json::string_end(data, start) != Some(end) {
            return None;
        }
        let text = &data[start..end];
        let content = if text.is_empty() {
            self.content_without_text
        } else {
            self.content_with_text
        };
        Some(Hit { text, content })
    }

    /// Reads one event's data into `transcript`: `false` when it is not a
    /// well-formed JSON object (the text it would have added is not kept).
    /// `content` says whether the scanner counts an event of this name and
    /// data as content, for the template's verdicts (without it, events
    /// that repeat the template are only read faster, not judged).
    pub(super) fn read(
        &mut self,
        transcript: &mut Transcript,
        name: &[u8],
        data: &[u8],
        content: Option<IsContent<'_>>,
    ) -> bool {
        if let Some(hit) = self.hit(name, data) {
            return transcript.append_text(hit.text);
        }
        let read = transcript.event(name, data);
        match read.text {
            Some(text) => {
                replace(&mut self.name, name);
                replace(&mut self.before, &data[..text.start]);
                replace(&mut self.after, &data[text.end..]);
                if let Some(content) = content {
                    self.content_with_text = self.judge(b"x", content);
                    self.content_without_text = self.judge(b"", content);
                }
                self.ready = true;
            }
            None => self.ready = false,
        }
        read.well_formed
    }

    /// Whether the template with `text` as its string is content.
    fn judge(&mut self, text: &[u8], content: IsContent<'_>) -> bool {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.before);
        self.scratch.extend_from_slice(text);
        self.scratch.extend_from_slice(&self.after);
        content(&self.scratch)
    }
}

fn replace(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.clear();
    buffer.extend_from_slice(bytes);
}
