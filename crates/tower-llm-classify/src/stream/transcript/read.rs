//! Reading one event into the [`Transcript`]: an OpenAI chat chunk, an
//! Anthropic Messages event, an Ollama line.
//!
//! Each event is read in one pass with a [`Cursor`]: the members the
//! transcript keeps are read in place, the others skipped (strings a word
//! at a time), and text is decoded straight into the transcript's buffer.

use std::borrow::Cow;
use std::ops::Range;

use super::strings::Field;
use super::{NotContinuable, Reading, Transcript};
use crate::json::{self, Cursor};
use crate::stream::Dialect;

/// What one OpenAI choice said, applied once its index is known.
#[derive(Default)]
struct Choice<'a> {
    index: Option<i64>,
    role: bool,
    finish_reason: Option<&'a [u8]>,
}

/// What reading an event found.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventRead {
    /// The event is a well-formed JSON object.
    pub(crate) well_formed: bool,
    /// Where the one string whose text the event added lies in it
    /// (between its quotes), when that is all the text it added.
    pub(crate) text: Option<Range<usize>>,
}

impl Transcript {
    /// Reads one event's data (`name` is the SSE event name, empty when
    /// unnamed). When the data is not a well-formed JSON object, the text
    /// it would have added is not kept.
    pub(crate) fn event(&mut self, name: &[u8], data: &[u8]) -> EventRead {
        self.mark_rest();
        let text_len = self.text.len();
        self.reading = Reading {
            base: data.as_ptr() as usize,
            ..Reading::default()
        };
        let mut cursor = Cursor::new(data);
        let read = match self.dialect {
            Dialect::OpenAiChat => self.chat_chunk(&mut cursor),
            Dialect::Anthropic => self.anthropic_event(name, &mut cursor),
            Dialect::OllamaNdjson => self.ollama_line(&mut cursor),
            _ => return EventRead::default(),
        };
        let well_formed = read && cursor.at_end();
        if !well_formed {
            self.text.truncate(text_len);
        }
        let reading = std::mem::take(&mut self.reading);
        let text = reading
            .appended
            .filter(|_| well_formed && reading.appends == 1 && !reading.taken_back);
        EventRead { well_formed, text }
    }

    /// Appends the text of a JSON string's content (escapes as written):
    /// an event that differs from the last one read only by that string.
    pub(crate) fn append_text(&mut self, raw: &[u8]) -> bool {
        json::append_decoded(raw, self.text_buffer())
    }

    /// Appends a JSON string's content that is plain ASCII without
    /// escapes ([`json::is_plain`]): as it is.
    pub(crate) fn append_plain_text(&mut self, raw: &[u8]) {
        self.text_buffer().extend_from_slice(raw);
    }

    /// `{"id","object","created","model","system_fingerprint","choices":[…],"usage"}`.
    fn chat_chunk(&mut self, cursor: &mut Cursor<'_>) -> bool {
        cursor.object(|c, key| match &*name(key) {
            b"choices" => c.null() || c.array(|c| self.chat_choice(c)),
            b"id" => self.strings.set_once(Field::Id, c),
            b"object" => self.strings.set_once(Field::Object, c),
            b"model" => self.strings.set_once(Field::Model, c),
            b"system_fingerprint" => self.strings.set_once(Field::SystemFingerprint, c),
            b"created" if self.state.created.is_none() => {
                self.state.created = c.value().and_then(integer);
                true
            }
            b"usage" => self.read_usage(c, b"prompt_tokens", b"completion_tokens"),
            _ => true,
        })
    }

    /// `{"index","delta":{…},"text","logprobs","finish_reason"}`: read in
    /// one pass whatever the order, the text taken back if the index turns
    /// out not to be 0.
    fn chat_choice(&mut self, cursor: &mut Cursor<'_>) -> bool {
        let text_len = self.text.len();
        let mut choice = Choice::default();
        let read = cursor.object(|c, key| match &*name(key) {
            b"index" => {
                choice.index = c.value().and_then(integer);
                true
            }
            // Some servers send the last chunk with `message`.
            b"delta" | b"message" => c.null() || self.chat_delta(c, &mut choice.role),
            b"text" => self.append(c),
            b"finish_reason" => {
                choice.finish_reason = c.value().filter(|v| *v != b"null");
                true
            }
            b"logprobs" => {
                if !c.null() {
                    self.block(NotContinuable::Logprobs);
                }
                true
            }
            _ => true,
        });
        if choice.index.unwrap_or(0) != 0 {
            self.text.truncate(text_len);
            self.reading.taken_back = true;
            self.block(NotContinuable::MultipleChoices);
            return read;
        }
        self.state.index = Some(0);
        self.state.role_sent |= choice.role;
        if let Some(reason) = choice.finish_reason {
            self.state.finished = true;
            self.strings
                .set_once(Field::FinishReason, &mut Cursor::new(reason));
        }
        read
    }

    /// `{"role","content","tool_calls","function_call","refusal","reasoning_content"}`.
    fn chat_delta(&mut self, cursor: &mut Cursor<'_>, role: &mut bool) -> bool {
        cursor.object(|c, key| match &*name(key) {
            b"content" => self.append(c),
            b"role" => {
                *role |= !c.null();
                true
            }
            b"tool_calls" | b"function_call" => {
                if !c.null() {
                    self.block(NotContinuable::ToolCall);
                }
                true
            }
            b"refusal" => self.block_if_text(c, NotContinuable::Refusal),
            b"reasoning_content" | b"reasoning" => self.block_if_text(c, NotContinuable::Reasoning),
            b"reasoning_details" => {
                if c.value().is_some_and(|v| v != b"null" && v != b"[]") {
                    self.block(NotContinuable::Reasoning);
                }
                true
            }
            _ => true,
        })
    }

    /// An Anthropic Messages event, by its SSE name or (unnamed) its
    /// `type`. Its parts are read once its kind and index are known.
    fn anthropic_event(&mut self, name_: &[u8], cursor: &mut Cursor<'_>) -> bool {
        let mut kind = name_;
        let mut index = None;
        let mut part = None;
        let mut usage = None;
        let read = cursor.object(|c, key| match &*name(key) {
            // Event types are plain words: compared as written.
            b"type" if name_.is_empty() => c.string().map(|t| kind = t).is_some(),
            b"index" => {
                index = c
                    .value()
                    .and_then(integer)
                    .and_then(|i| u64::try_from(i).ok());
                true
            }
            b"message" | b"content_block" | b"delta" => {
                part = c.value();
                part.is_some()
            }
            b"usage" => {
                usage = c.value();
                usage.is_some()
            }
            _ => true,
        });
        if !read {
            return false;
        }
        let part = part.map(Cursor::new);
        match kind {
            b"message_start" => {
                self.state.role_sent = true;
                part.is_none_or(|mut message| self.anthropic_message(&mut message))
            }
            b"content_block_start" => {
                part.is_none_or(|mut block| self.anthropic_block_start(index, &mut block))
            }
            b"content_block_delta" => {
                part.is_none_or(|mut delta| self.anthropic_delta(index, &mut delta))
            }
            b"content_block_stop" => {
                if index.is_some() && self.state.open_block == index {
                    self.state.open_block = None;
                }
                true
            }
            b"message_delta" => {
                let read = part.is_none_or(|mut delta| {
                    delta.object(|c, key| match &*name(key) {
                        b"stop_reason" if !c.null() => {
                            self.state.finished = true;
                            self.strings.set_once(Field::FinishReason, c)
                        }
                        _ => true,
                    })
                });
                read && usage.is_none_or(|usage| {
                    self.read_usage(&mut Cursor::new(usage), b"input_tokens", b"output_tokens")
                })
            }
            b"message_stop" => {
                self.state.finished = true;
                true
            }
            _ => true,
        }
    }

    /// `message_start`'s `{"id","model","usage"}`.
    fn anthropic_message(&mut self, cursor: &mut Cursor<'_>) -> bool {
        cursor.object(|c, key| match &*name(key) {
            b"id" => self.strings.set_once(Field::Id, c),
            b"model" => self.strings.set_once(Field::Model, c),
            b"usage" => self.read_usage(c, b"input_tokens", b"output_tokens"),
            _ => true,
        })
    }

    /// `content_block_start`'s `{"type","text",…}`.
    fn anthropic_block_start(&mut self, index: Option<u64>, cursor: &mut Cursor<'_>) -> bool {
        self.state.blocks += 1;
        self.state.open_block = index;
        self.reading.taken_back = true;
        let mut kind = None;
        let mut text = None;
        let read = cursor.object(|c, key| match &*name(key) {
            b"type" => {
                kind = c.string();
                kind.is_some()
            }
            b"text" => {
                text = c.value();
                text.is_some()
            }
            _ => true,
        });
        match kind {
            Some(b"text") if self.state.index.is_none() => {
                self.state.index = index;
                // The block may start with text: the SDK starts from it.
                read && text.is_none_or(|text| self.append(&mut Cursor::new(text)))
            }
            Some(b"text") => self.blocked(read, NotContinuable::NonText),
            Some(b"tool_use" | b"server_tool_use" | b"mcp_tool_use") => {
                self.blocked(read, NotContinuable::ToolCall)
            }
            Some(b"thinking" | b"redacted_thinking") => {
                self.blocked(read, NotContinuable::Reasoning)
            }
            _ => self.blocked(read, NotContinuable::NonText),
        }
    }

    /// `content_block_delta`'s `{"type","text"}` (or another delta).
    fn anthropic_delta(&mut self, index: Option<u64>, cursor: &mut Cursor<'_>) -> bool {
        let ours = index.is_some() && index == self.state.index;
        let text_len = self.text.len();
        let mut kind = None;
        let read = cursor.object(|c, key| match &*name(key) {
            b"type" => {
                kind = c.string();
                kind.is_some()
            }
            b"text" if ours => self.append(c),
            _ => true,
        });
        match kind {
            Some(b"text_delta") if ours => read,
            kind => {
                self.text.truncate(text_len);
                self.reading.taken_back = true;
                let reason = match kind {
                    Some(b"input_json_delta") => NotContinuable::ToolCall,
                    Some(b"thinking_delta" | b"signature_delta") => NotContinuable::Reasoning,
                    _ => NotContinuable::NonText,
                };
                self.blocked(read, reason)
            }
        }
    }

    /// `{"model","created_at","message":{…},"response","done","done_reason",…}`.
    fn ollama_line(&mut self, cursor: &mut Cursor<'_>) -> bool {
        let mut usage = self.state.usage.unwrap_or_default();
        let mut counted = false;
        let read = cursor.object(|c, key| match &*name(key) {
            b"message" => c.null() || self.ollama_message(c),
            // `/api/generate`.
            b"response" => self.append(c),
            b"model" => self.strings.set_once(Field::Model, c),
            b"created_at" => self.strings.set_once(Field::CreatedAt, c),
            b"thinking" => self.block_if_text(c, NotContinuable::Reasoning),
            b"done" => {
                self.state.finished |= c.value() == Some(b"true");
                true
            }
            b"done_reason" => self.strings.set_once(Field::FinishReason, c),
            b"prompt_eval_count" => {
                usage.input_tokens = c.value().and_then(unsigned);
                counted = true;
                true
            }
            b"eval_count" => {
                usage.output_tokens = c.value().and_then(unsigned);
                counted = true;
                true
            }
            b"logprobs" => {
                if !c.null() {
                    self.block(NotContinuable::Logprobs);
                }
                true
            }
            _ => true,
        });
        if counted {
            self.state.usage = Some(usage);
        }
        read
    }

    /// `/api/chat`'s `{"role","content","thinking","tool_calls"}`.
    fn ollama_message(&mut self, cursor: &mut Cursor<'_>) -> bool {
        cursor.object(|c, key| match &*name(key) {
            b"content" => self.append(c),
            b"role" => {
                self.state.role_sent |= !c.null();
                true
            }
            b"thinking" => self.block_if_text(c, NotContinuable::Reasoning),
            b"tool_calls" => {
                if c.value().is_some_and(|v| v != b"null" && v != b"[]") {
                    self.block(NotContinuable::ToolCall);
                }
                true
            }
            _ => true,
        })
    }

    /// Reads the token counts of a usage object (`null` is none).
    fn read_usage(&mut self, cursor: &mut Cursor<'_>, input: &[u8], output: &[u8]) -> bool {
        if cursor.null() {
            return true;
        }
        let mut counts = self.state.usage.unwrap_or_default();
        let read = cursor.object(|c, key| {
            let key = name(key);
            if *key == *input {
                counts.input_tokens = c.value().and_then(unsigned).or(counts.input_tokens);
            } else if *key == *output {
                counts.output_tokens = c.value().and_then(unsigned).or(counts.output_tokens);
            }
            true
        });
        self.state.usage = Some(counts);
        read
    }

    /// Appends the string at the cursor, decoded (`null` adds nothing);
    /// `false` for another value.
    fn append(&mut self, cursor: &mut Cursor<'_>) -> bool {
        if cursor.null() {
            return true;
        }
        let Some(raw) = cursor.string() else {
            return false;
        };
        let start = raw.as_ptr() as usize - self.reading.base;
        self.reading.appended = Some(start..start + raw.len());
        self.reading.appends = self.reading.appends.saturating_add(1);
        json::append_decoded(raw, self.text_buffer())
    }

    /// Blocks for `reason` when the value at the cursor is a non-empty
    /// string.
    fn block_if_text(&mut self, cursor: &mut Cursor<'_>, reason: NotContinuable) -> bool {
        match cursor.value() {
            Some(value) => {
                if value.len() > 2 && value[0] == b'"' {
                    self.block(reason);
                }
                true
            }
            None => false,
        }
    }

    fn blocked(&mut self, read: bool, reason: NotContinuable) -> bool {
        self.block(reason);
        read
    }
}

/// A key's name, decoded (borrowed unless it is written with escapes,
/// which no provider does).
fn name(raw: &[u8]) -> Cow<'_, [u8]> {
    if json::has_escape(raw) {
        let mut decoded = Vec::new();
        if json::append_decoded(raw, &mut decoded) {
            return Cow::Owned(decoded);
        }
    }
    Cow::Borrowed(raw)
}

/// A JSON integer (a number with a fraction or exponent is none).
fn integer(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn unsigned(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}
