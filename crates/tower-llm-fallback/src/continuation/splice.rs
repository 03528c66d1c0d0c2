//! [`Splice`]: the rest of an answer, rewritten into the stream the caller
//! has been reading.

use std::fmt;

use serde_json::Value;
use tower_llm_classify::stream::Dialect;

/// What the caller saw first of the answer being continued, which every
/// event of the rest must keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// OpenAI: the chunks' `id`.
    pub id: Option<String>,
    /// OpenAI: the chunks' `created`.
    pub created: Option<i64>,
    /// The `model` the caller saw (OpenAI chunks, Ollama lines): it stays
    /// the same when another target continues.
    pub model: Option<String>,
    /// OpenAI: the chunks' `system_fingerprint`.
    pub system_fingerprint: Option<String>,
    /// Anthropic: the index of the content block still open in the
    /// caller's stream (the rest's first text block goes on in it);
    /// `None` when no block is open.
    pub open_block: Option<u64>,
    /// Anthropic: how many content blocks the caller has seen started.
    pub blocks: u64,
}

/// Tokens an answer's segments reported as used, as far as they are
/// known: a segment that broke before its usage block reported only what
/// it sends at its start (Anthropic's input tokens), OpenAI's and
/// Ollama's nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) input: u64,
    pub(crate) output: u64,
}

impl Usage {
    fn plus(self, other: Usage) -> Usage {
        Usage {
            input: self.input.saturating_add(other.input),
            output: self.output.saturating_add(other.output),
        }
    }
}

/// Adds `earlier` to the number at `field` of `object`, inserting it when
/// `insert` and the field is missing; returns the number the rest said.
fn add_to(
    object: &mut serde_json::Map<String, Value>,
    field: &str,
    earlier: u64,
    insert: bool,
) -> Option<u64> {
    let said = object.get(field).and_then(Value::as_u64);
    if said.is_some() || insert {
        let total = said.unwrap_or(0).saturating_add(earlier);
        object.insert(field.into(), Value::from(total));
    }
    said
}

/// Why the rest cannot be spliced into the caller's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpliceError {
    /// The caller's dialect is not one the splice knows (the Responses
    /// API, legacy completions, an unknown stream).
    Dialect,
    /// The rest holds what cannot be continued safely: several choices, a
    /// tool call in the text's place.
    NotContinuable(&'static str),
}

impl fmt::Display for SpliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpliceError::Dialect => f.write_str("this stream's dialect cannot be continued"),
            SpliceError::NotContinuable(what) => write!(f, "the continuation holds {what}"),
        }
    }
}

impl std::error::Error for SpliceError {}

/// The rest of an answer (the stream a target sent for a
/// [`prefill_request`](super::prefill_request)), rewritten into the
/// caller's stream: the envelope the caller saw first (`id`, `created`,
/// `model`), no second role chunk or `message_start`, the rest's first
/// text block continuing the caller's open one, and white space the
/// prefill left out not repeated. Keep-alives, the finish and the terminal
/// event pass on; events the caller's SDK would reject (a `data:` line
/// that is not JSON) are dropped.
///
/// Fed the rest's bytes as they come, in any chunking; what the caller
/// should read is appended to `out`. This path runs only after a stream
/// broke: it parses each event of the rest with serde_json.
#[derive(Debug)]
pub struct Splice {
    dialect: Dialect,
    envelope: Envelope,
    /// White space the caller has that the rest may repeat at its start.
    skip: String,
    pending: Vec<u8>,
    /// Whether the rest's content has started (after it, nothing is
    /// skipped).
    started: bool,
    /// The text handed on so far, for a continuation of this one.
    emitted: String,
    /// What the earlier segments reported using, added to the usage the
    /// rest reports, so the caller's last usage block counts every segment
    /// as far as known.
    earlier: Usage,
    /// What the rest reported using itself.
    reported: Usage,
}

impl Splice {
    /// A splice into a stream of `dialect` whose caller saw `envelope`;
    /// `trimmed` is [`Prefill::trimmed`](super::Prefill::trimmed).
    pub fn new(dialect: Dialect, envelope: Envelope, trimmed: String) -> Result<Self, SpliceError> {
        if !matches!(
            dialect,
            Dialect::OpenAiChat | Dialect::Anthropic | Dialect::OllamaNdjson
        ) {
            return Err(SpliceError::Dialect);
        }
        Ok(Splice {
            dialect,
            envelope,
            skip: trimmed,
            pending: Vec::new(),
            started: false,
            emitted: String::new(),
            earlier: Usage::default(),
            reported: Usage::default(),
        })
    }

    /// Counts `earlier` (what the segments before this rest reported) in
    /// the usage the rest reports to the caller.
    pub(crate) fn after(mut self, earlier: Usage) -> Self {
        self.earlier = earlier;
        self
    }

    /// What every segment up to and including this rest reported using so
    /// far (for a continuation of this one, should it break too).
    pub(crate) fn usage(&self) -> Usage {
        self.earlier.plus(self.reported)
    }

    /// The text of the rest handed on so far (what the caller holds after
    /// the delivered text, should this stream break too).
    pub fn emitted(&self) -> &str {
        &self.emitted
    }

    /// Feeds the next bytes of the rest; appends what the caller reads.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), SpliceError> {
        self.pending.extend_from_slice(chunk);
        // The buffer is taken out while its events are read (no copy of
        // each), and what is left of it put back.
        let mut pending = std::mem::take(&mut self.pending);
        let mut consumed = 0;
        let mut result = Ok(());
        while let Some((event, next)) = next_event(self.dialect, &pending[consumed..]) {
            consumed += next;
            result = self.event(event, out);
            if result.is_err() {
                break;
            }
        }
        pending.drain(..consumed);
        self.pending = pending;
        result
    }

    /// The rest ended: an event left without its closing blank line (or
    /// newline) is handed on as the others; a part of one that is not JSON
    /// is dropped.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), SpliceError> {
        let rest = std::mem::take(&mut self.pending);
        if rest.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.event(&rest, out)?;
        Ok(())
    }

    fn event(&mut self, event: &[u8], out: &mut Vec<u8>) -> Result<(), SpliceError> {
        match self.dialect {
            Dialect::OllamaNdjson => self.ollama_line(event, out),
            _ => self.sse_event(event, out),
        }
    }

    fn sse_event(&mut self, event: &[u8], out: &mut Vec<u8>) -> Result<(), SpliceError> {
        let Ok(text) = std::str::from_utf8(event) else {
            return Ok(());
        };
        let mut name = None;
        let mut data = String::new();
        let mut has_data = false;
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim());
            } else if let Some(value) = line.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
                has_data = true;
            }
        }
        if !has_data {
            // A comment or an empty event: a keep-alive, passed on.
            if text.trim().is_empty() {
                return Ok(());
            }
            out.extend_from_slice(event);
            out.extend_from_slice(b"\n\n");
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            out.extend_from_slice(b"data: [DONE]\n\n");
            return Ok(());
        }
        let Ok(mut value) = serde_json::from_str::<Value>(&data) else {
            tracing::warn!(
                target: crate::TRACING_TARGET,
                "a continuation event that is not JSON was dropped"
            );
            return Ok(());
        };
        let keep = match self.dialect {
            Dialect::Anthropic => {
                let kind = name
                    .map(str::to_owned)
                    .or_else(|| value.get("type").and_then(Value::as_str).map(str::to_owned));
                let keep = self.anthropic(kind.as_deref(), &mut value)?;
                if keep && let Some(kind) = kind {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(kind.as_bytes());
                    out.push(b'\n');
                }
                keep
            }
            _ => self.openai(&mut value)?,
        };
        if keep {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(value.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        Ok(())
    }

    /// An OpenAI chunk of the rest: the caller's envelope, no role, the
    /// repeated white space dropped; `false` to drop the chunk.
    fn openai(&mut self, chunk: &mut Value) -> Result<bool, SpliceError> {
        let Some(object) = chunk.as_object_mut() else {
            return Ok(false);
        };
        if object.contains_key("error") {
            return Ok(true);
        }
        if let Some(id) = &self.envelope.id {
            object.insert("id".into(), Value::from(id.as_str()));
        }
        if let Some(created) = self.envelope.created {
            object.insert("created".into(), Value::from(created));
        }
        if let Some(model) = &self.envelope.model {
            object.insert("model".into(), Value::from(model.as_str()));
        }
        if let Some(fingerprint) = &self.envelope.system_fingerprint {
            object.insert(
                "system_fingerprint".into(),
                Value::from(fingerprint.as_str()),
            );
        }
        let has_usage = object.get("usage").is_some_and(|u| !u.is_null());
        if let Some(Value::Object(usage)) = object.get_mut("usage") {
            let input = add_to(usage, "prompt_tokens", self.earlier.input, false);
            let output = add_to(usage, "completion_tokens", self.earlier.output, false);
            self.reported = Usage {
                input: input.unwrap_or(0),
                output: output.unwrap_or(0),
            };
            let total = self.usage();
            if usage.contains_key("total_tokens") {
                usage.insert(
                    "total_tokens".into(),
                    Value::from(total.input.saturating_add(total.output)),
                );
            }
        }
        let Some(Value::Array(choices)) = object.get_mut("choices") else {
            return Ok(true);
        };
        if choices.is_empty() {
            return Ok(has_usage);
        }
        if choices.len() > 1 {
            return Err(SpliceError::NotContinuable("several choices"));
        }
        let Some(choice) = choices.first_mut().and_then(Value::as_object_mut) else {
            return Ok(false);
        };
        if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
            return Err(SpliceError::NotContinuable("several choices"));
        }
        let finished = choice.get("finish_reason").is_some_and(|r| !r.is_null());
        let Some(Value::Object(delta)) = choice.get_mut("delta") else {
            return Ok(finished || has_usage);
        };
        if delta.contains_key("tool_calls") || delta.contains_key("function_call") {
            return Err(SpliceError::NotContinuable("a tool call"));
        }
        delta.remove("role");
        if let Some(Value::String(content)) = delta.get_mut("content") {
            self.skip_repeated(content);
        }
        let content = delta
            .get("content")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty());
        if delta.get("content").is_some_and(|c| c.as_str() == Some("")) {
            delta.remove("content");
        }
        let other = delta.iter().any(|(_, v)| !v.is_null());
        Ok(content || other || finished || has_usage)
    }

    /// An Anthropic event of the rest; `false` to drop it.
    fn anthropic(&mut self, kind: Option<&str>, event: &mut Value) -> Result<bool, SpliceError> {
        let index = event.get("index").and_then(Value::as_u64);
        // The rest's block `i` is the caller's open block when `i` is 0,
        // else the one after the caller's last.
        let mapped = index.map(|i| match self.envelope.open_block {
            Some(open) => open + i,
            None => self.envelope.blocks + i,
        });
        let continues_open = index == Some(0) && self.envelope.open_block.is_some();
        match kind {
            Some("message_start") => {
                // Dropped (the caller has its own), but what the rest was
                // billed for its prompt is counted.
                let said = |field: &str| {
                    event
                        .pointer(&format!("/message/usage/{field}"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                };
                self.reported = Usage {
                    input: said("input_tokens"),
                    output: said("output_tokens"),
                };
                return Ok(false);
            }
            Some("message_delta") => {
                if let Some(Value::Object(usage)) = event.get_mut("usage") {
                    // `output_tokens` is the rest's running count; the
                    // input the whole answer's (the SDKs take a delta's
                    // `input_tokens` as the message's).
                    let earlier = self.earlier;
                    if let Some(output) = add_to(usage, "output_tokens", earlier.output, false) {
                        self.reported.output = output;
                    }
                    let input = usage
                        .get("input_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(self.reported.input);
                    self.reported.input = input;
                    usage.insert(
                        "input_tokens".into(),
                        Value::from(input.saturating_add(earlier.input)),
                    );
                }
            }
            Some("content_block_start") if continues_open => {
                let is_text =
                    event.pointer("/content_block/type").and_then(Value::as_str) == Some("text");
                if !is_text {
                    return Err(SpliceError::NotContinuable("a block other than text"));
                }
                return Ok(false);
            }
            Some("content_block_delta") => {
                if let Some(Value::String(text)) = event.pointer_mut("/delta/text") {
                    self.skip_repeated(text);
                    if text.is_empty() {
                        return Ok(false);
                    }
                }
            }
            _ => {}
        }
        if let (Some(mapped), Some(object)) = (mapped, event.as_object_mut()) {
            object.insert("index".into(), Value::from(mapped));
        }
        Ok(true)
    }

    /// An Ollama line of the rest.
    fn ollama_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), SpliceError> {
        let Ok(mut value) = serde_json::from_slice::<Value>(line) else {
            if !line.iter().all(u8::is_ascii_whitespace) {
                tracing::warn!(
                    target: crate::TRACING_TARGET,
                    "a continuation line that is not JSON was dropped"
                );
            }
            return Ok(());
        };
        if let (Some(model), Some(object)) = (&self.envelope.model, value.as_object_mut())
            && object.contains_key("model")
        {
            object.insert("model".into(), Value::from(model.as_str()));
        }
        let done = value.get("done").and_then(Value::as_bool) == Some(true);
        if done && let Some(object) = value.as_object_mut() {
            let input = add_to(object, "prompt_eval_count", self.earlier.input, false);
            let output = add_to(object, "eval_count", self.earlier.output, false);
            self.reported = Usage {
                input: input.unwrap_or(0),
                output: output.unwrap_or(0),
            };
        }
        if let Some(Value::String(content)) = value.pointer_mut("/message/content") {
            self.skip_repeated(content);
            if content.is_empty() && !done && value.get("error").is_none() {
                return Ok(());
            }
        }
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(b'\n');
        Ok(())
    }

    /// Drops from the start of the rest's text the white space the caller
    /// already has, once: up to the first character that differs; counts
    /// what is left as handed on.
    fn skip_repeated(&mut self, text: &mut String) {
        self.drop_repeated(text);
        self.emitted.push_str(text);
    }

    fn drop_repeated(&mut self, text: &mut String) {
        if self.started || text.is_empty() {
            return;
        }
        let common: usize = self
            .skip
            .chars()
            .zip(text.chars())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a.len_utf8())
            .sum();
        let whole_text = common == text.len();
        text.drain(..common);
        if whole_text && common < self.skip.len() {
            // The text was all repeated white space: go on skipping.
            self.skip.drain(..common);
        } else {
            self.skip.clear();
            self.started = true;
        }
    }
}

/// The next complete event of `buffer` and where the one after starts.
fn next_event(dialect: Dialect, buffer: &[u8]) -> Option<(&[u8], usize)> {
    if dialect == Dialect::OllamaNdjson {
        let end = memchr::memchr(b'\n', buffer)?;
        return Some((&buffer[..end], end + 1));
    }
    // SSE: an event ends at a blank line (`\n\n`, or `\r\n\r\n`).
    let lf = memchr::memmem::find(buffer, b"\n\n").map(|i| (i, 2));
    let crlf = memchr::memmem::find(buffer, b"\r\n\r\n").map(|i| (i, 4));
    let (end, len) = match (lf, crlf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return None,
    };
    Some((&buffer[..end], end + len))
}
