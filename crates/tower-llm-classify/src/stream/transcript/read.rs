//! Reading one event into the [`Transcript`]: an OpenAI chat chunk, an
//! Anthropic Messages event, an Ollama line.
//!
//! Each event is walked with [`json::members`](crate::json::members) (keys
//! compared decoded, strings skipped a word at a time) and only the fields
//! the transcript keeps are decoded; text is decoded straight into the
//! transcript's buffer.

use std::borrow::Cow;
use std::ops::Range;

use super::{NotContinuable, Transcript};
use crate::json::{self, Member};
use crate::stream::Dialect;

impl Transcript {
    /// Reads one event's data (`name` is the SSE event name, empty when
    /// unnamed). `false` when the data is not a well-formed JSON object:
    /// the text it would have added is not kept.
    pub(crate) fn event(&mut self, name: &[u8], data: &[u8]) -> bool {
        let text_len = self.text.len();
        let read = match self.dialect {
            Dialect::OpenAiChat => self.chat_chunk(data),
            Dialect::Anthropic => self.anthropic_event(name, data),
            Dialect::OllamaNdjson => self.ollama_line(data),
            _ => true,
        };
        if !read {
            self.text.truncate(text_len);
        }
        read
    }

    /// `{"id","object","created","model","system_fingerprint","choices":[…],"usage"}`.
    fn chat_chunk(&mut self, data: &[u8]) -> bool {
        let mut members = json::members(data);
        for m in members.by_ref() {
            let value = &data[m.value.clone()];
            let ok = match &*key(data, &m) {
                b"id" => set_once(&mut self.strings.id, value),
                b"object" => set_once(&mut self.strings.object, value),
                b"model" => set_once(&mut self.strings.model, value),
                b"system_fingerprint" => set_once(&mut self.strings.system_fingerprint, value),
                b"created" => {
                    if self.state.created.is_none() {
                        self.state.created = integer(value);
                    }
                    true
                }
                b"choices" => self.chat_choices(value),
                b"usage" => self.read_usage(value, b"prompt_tokens", b"completion_tokens"),
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        !members.malformed()
    }

    fn chat_choices(&mut self, choices: &[u8]) -> bool {
        if is_null(choices) {
            return true;
        }
        let mut elements = json::elements(choices);
        for choice in elements.by_ref() {
            if !self.chat_choice(&choices[choice]) {
                return false;
            }
        }
        !elements.malformed()
    }

    /// `{"index","delta":{…},"text","logprobs","finish_reason"}`.
    fn chat_choice(&mut self, choice: &[u8]) -> bool {
        let mut index = 0;
        let mut delta = None;
        let mut legacy_text = None;
        let mut finish_reason = None;
        let mut members = json::members(choice);
        for m in members.by_ref() {
            let value = m.value.clone();
            match &*key(choice, &m) {
                b"index" => index = integer(&choice[value]).unwrap_or(-1),
                // Some servers send the last chunk with `message`.
                b"delta" | b"message" => delta = Some(value),
                b"text" => legacy_text = Some(value),
                b"finish_reason" => finish_reason = Some(value),
                b"logprobs" if !is_null(&choice[value]) => self.block(NotContinuable::Logprobs),
                _ => {}
            }
        }
        if members.malformed() {
            return false;
        }
        if index != 0 {
            self.block(NotContinuable::MultipleChoices);
            return true;
        }
        self.state.index = Some(0);
        if let Some(delta) = delta
            && !self.chat_delta(&choice[delta])
        {
            return false;
        }
        if let Some(text) = legacy_text
            && !self.append(&choice[text])
        {
            return false;
        }
        if let Some(reason) = finish_reason
            && !is_null(&choice[reason.clone()])
        {
            self.state.finished = true;
            return set_once(&mut self.strings.finish_reason, &choice[reason]);
        }
        true
    }

    /// `{"role","content","tool_calls","function_call","refusal","reasoning_content"}`.
    fn chat_delta(&mut self, delta: &[u8]) -> bool {
        if is_null(delta) {
            return true;
        }
        let mut members = json::members(delta);
        for m in members.by_ref() {
            let value = &delta[m.value.clone()];
            match &*key(delta, &m) {
                b"role" if !is_null(value) => self.state.role_sent = true,
                // Appended by the guard; only a value that is not text stops.
                b"content" if !self.append(value) => return false,
                b"tool_calls" | b"function_call" if !is_null(value) => {
                    self.block(NotContinuable::ToolCall);
                }
                b"refusal" if is_nonempty_string(value) => self.block(NotContinuable::Refusal),
                b"reasoning_content" | b"reasoning" if is_nonempty_string(value) => {
                    self.block(NotContinuable::Reasoning);
                }
                b"reasoning_details" if !is_null(value) && value != b"[]" => {
                    self.block(NotContinuable::Reasoning);
                }
                _ => {}
            }
        }
        !members.malformed()
    }

    /// An Anthropic Messages event, by its SSE name or (unnamed) its
    /// `type`.
    fn anthropic_event(&mut self, name: &[u8], data: &[u8]) -> bool {
        let mut kind = name;
        let mut index = None;
        let mut message = None;
        let mut block = None;
        let mut delta = None;
        let mut usage = None;
        let mut members = json::members(data);
        for m in members.by_ref() {
            let value = m.value.clone();
            match &*key(data, &m) {
                // Event types are plain words: compared as written.
                b"type" if name.is_empty() => {
                    let value = &data[value];
                    kind = value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value);
                }
                b"index" => index = integer(&data[value]).and_then(|i| u64::try_from(i).ok()),
                b"message" => message = Some(value),
                b"content_block" => block = Some(value),
                b"delta" => delta = Some(value),
                b"usage" => usage = Some(value),
                _ => {}
            }
        }
        if members.malformed() {
            return false;
        }
        let part = |range: Option<Range<usize>>| range.map(|r| &data[r]);
        match kind {
            b"message_start" => {
                self.state.role_sent = true;
                part(message).is_none_or(|message| self.anthropic_message(message))
            }
            b"content_block_start" => self.anthropic_block_start(index, part(block)),
            b"content_block_delta" => self.anthropic_delta(index, part(delta)),
            b"content_block_stop" => {
                if index.is_some() && self.state.open_block == index {
                    self.state.open_block = None;
                }
                true
            }
            b"message_delta" => {
                let stop = part(delta).map(|delta| field(delta, b"stop_reason"));
                if let Some(Some(reason)) = stop
                    && !is_null(reason)
                {
                    self.state.finished = true;
                    set_once(&mut self.strings.finish_reason, reason);
                }
                part(usage)
                    .is_none_or(|usage| self.read_usage(usage, b"input_tokens", b"output_tokens"))
            }
            b"message_stop" => {
                self.state.finished = true;
                true
            }
            _ => true,
        }
    }

    /// `message_start`'s `{"id","model","usage"}`.
    fn anthropic_message(&mut self, message: &[u8]) -> bool {
        let mut members = json::members(message);
        for m in members.by_ref() {
            let value = &message[m.value.clone()];
            let ok = match &*key(message, &m) {
                b"id" => set_once(&mut self.strings.id, value),
                b"model" => set_once(&mut self.strings.model, value),
                b"usage" => self.read_usage(value, b"input_tokens", b"output_tokens"),
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        !members.malformed()
    }

    fn anthropic_block_start(&mut self, index: Option<u64>, block: Option<&[u8]>) -> bool {
        self.state.blocks += 1;
        self.state.open_block = index;
        let Some(block) = block else {
            return true;
        };
        match field(block, b"type").and_then(string).as_deref() {
            Some("text") if self.state.index.is_none() => {
                self.state.index = index;
                // The block may start with text (the SDK starts from it).
                field(block, b"text").is_none_or(|text| self.append(text))
            }
            Some("text") => {
                self.block(NotContinuable::NonText);
                true
            }
            Some("tool_use" | "server_tool_use" | "mcp_tool_use") => {
                self.block(NotContinuable::ToolCall);
                true
            }
            Some("thinking" | "redacted_thinking") => {
                self.block(NotContinuable::Reasoning);
                true
            }
            _ => {
                self.block(NotContinuable::NonText);
                true
            }
        }
    }

    fn anthropic_delta(&mut self, index: Option<u64>, delta: Option<&[u8]>) -> bool {
        let Some(delta) = delta else {
            return true;
        };
        match field(delta, b"type").and_then(string).as_deref() {
            Some("text_delta") if index.is_some() && index == self.state.index => {
                field(delta, b"text").is_none_or(|text| self.append(text))
            }
            Some("input_json_delta") => {
                self.block(NotContinuable::ToolCall);
                true
            }
            Some("thinking_delta" | "signature_delta") => {
                self.block(NotContinuable::Reasoning);
                true
            }
            _ => {
                self.block(NotContinuable::NonText);
                true
            }
        }
    }

    /// `{"model","created_at","message":{…},"response","done","done_reason",…}`.
    fn ollama_line(&mut self, line: &[u8]) -> bool {
        let mut usage = self.state.usage.unwrap_or_default();
        let mut counted = false;
        let mut members = json::members(line);
        for m in members.by_ref() {
            let value = &line[m.value.clone()];
            let ok = match &*key(line, &m) {
                b"model" => set_once(&mut self.strings.model, value),
                b"created_at" => set_once(&mut self.strings.created_at, value),
                b"message" => self.ollama_message(value),
                // `/api/generate`.
                b"response" => self.append(value),
                b"thinking" if is_nonempty_string(value) => {
                    self.block(NotContinuable::Reasoning);
                    true
                }
                b"done" => {
                    self.state.finished |= value == b"true";
                    true
                }
                b"done_reason" => set_once(&mut self.strings.finish_reason, value),
                b"prompt_eval_count" => {
                    usage.input_tokens = unsigned(value);
                    counted = true;
                    true
                }
                b"eval_count" => {
                    usage.output_tokens = unsigned(value);
                    counted = true;
                    true
                }
                b"logprobs" if !is_null(value) => {
                    self.block(NotContinuable::Logprobs);
                    true
                }
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        if counted {
            self.state.usage = Some(usage);
        }
        !members.malformed()
    }

    /// `/api/chat`'s `{"role","content","thinking","tool_calls"}`.
    fn ollama_message(&mut self, message: &[u8]) -> bool {
        if is_null(message) {
            return true;
        }
        let mut members = json::members(message);
        for m in members.by_ref() {
            let value = &message[m.value.clone()];
            match &*key(message, &m) {
                b"role" if !is_null(value) => self.state.role_sent = true,
                // Appended by the guard; only a value that is not text stops.
                b"content" if !self.append(value) => return false,
                b"thinking" if is_nonempty_string(value) => self.block(NotContinuable::Reasoning),
                b"tool_calls" if !is_null(value) && value != b"[]" => {
                    self.block(NotContinuable::ToolCall);
                }
                _ => {}
            }
        }
        !members.malformed()
    }

    /// Reads the token counts of a usage object (`null` is none).
    fn read_usage(&mut self, usage: &[u8], input: &[u8], output: &[u8]) -> bool {
        if is_null(usage) {
            return true;
        }
        let mut counts = self.state.usage.unwrap_or_default();
        let mut members = json::members(usage);
        for m in members.by_ref() {
            let value = &usage[m.value.clone()];
            let name = key(usage, &m);
            if *name == *input {
                counts.input_tokens = unsigned(value).or(counts.input_tokens);
            } else if *name == *output {
                counts.output_tokens = unsigned(value).or(counts.output_tokens);
            }
        }
        self.state.usage = Some(counts);
        !members.malformed()
    }

    /// Appends a JSON string value's text (`null` adds nothing); `false`
    /// when the value is not a string or null.
    fn append(&mut self, value: &[u8]) -> bool {
        if is_null(value) {
            return true;
        }
        match value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
        {
            Some(raw) => json::append_decoded(raw, &mut self.text),
            None => false,
        }
    }
}

/// A member's key, decoded (borrowed unless it is written with escapes).
fn key<'a>(body: &'a [u8], member: &Member) -> Cow<'a, [u8]> {
    let raw = &body[member.key.clone()];
    if raw.contains(&b'\\') {
        let mut decoded = String::new();
        if json::append_decoded(raw, &mut decoded) {
            return Cow::Owned(decoded.into_bytes());
        }
    }
    Cow::Borrowed(raw)
}

/// The value of the member `name` of the object `body`.
fn field<'a>(body: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    json::members(body)
        .find(|m| *key(body, m) == *name)
        .map(|m| &body[m.value])
}

/// A JSON string value, decoded.
fn string(value: &[u8]) -> Option<Cow<'_, str>> {
    let raw = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut decoded = String::new();
    json::append_decoded(raw, &mut decoded).then_some(Cow::Owned(decoded))
}

/// Sets a string field the first time it is seen; `false` when the value
/// is neither a string nor null.
fn set_once(slot: &mut Option<Box<str>>, value: &[u8]) -> bool {
    if slot.is_some() || is_null(value) {
        return true;
    }
    match string(value) {
        Some(text) => {
            *slot = Some(text.into());
            true
        }
        None => false,
    }
}

fn is_null(value: &[u8]) -> bool {
    value == b"null"
}

fn is_nonempty_string(value: &[u8]) -> bool {
    value.len() > 2 && value[0] == b'"'
}

/// A JSON integer (a number with a fraction or exponent is none).
fn integer(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn unsigned(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}
