//! [`EventScanner`]: an incremental, allocation-free (per event) scanner of
//! SSE and NDJSON streams.

use std::sync::LazyLock;

use memchr::memmem;

use super::{Dialect, Framing};
use crate::classification::Phase;
use crate::{Classification, ErrorKind, Provider};

/// Longest line kept across chunk boundaries; a longer line (a huge base64
/// image, say) is passed through without being inspected.
const MAX_LINE: usize = 1 << 20;

/// What one chunk held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanEvent {
    /// At least one content event was completed in this chunk.
    pub content: bool,
    /// At least one keep-alive (SSE comment, `ping`, role-only delta) was
    /// completed in this chunk.
    pub keep_alive: bool,
    /// The stream failed in this chunk; [`EventScanner::error`] says how.
    pub failed: bool,
}

/// Scans a response stream chunk by chunk for in-band errors, content events
/// and its terminal event, without copying complete lines and without
/// allocating per event (only a line split across two chunks is carried over,
/// in a buffer that is reused).
///
/// ```
/// use tower_llm_classify::stream::{Dialect, EventScanner, Framing};
/// use tower_llm_classify::{ErrorKind, Provider};
///
/// let mut scanner = EventScanner::new(Framing::Sse, Dialect::Anthropic, Provider::Anthropic);
/// scanner.feed(b"event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n");
/// assert!(!scanner.content_seen());
/// let event = scanner.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
/// assert!(event.failed);
/// let error = scanner.error().unwrap();
/// assert_eq!(error.kind(), ErrorKind::Overloaded);
/// assert!(error.retryable()); // no content had reached the caller
/// ```
#[derive(Debug)]
pub struct EventScanner {
    framing: Framing,
    dialect: Dialect,
    provider: Provider,
    partial: Vec<u8>,
    overflow: bool,
    event_name: [u8; 40],
    event_name_len: usize,
    content_seen: bool,
    terminated: bool,
    content_events: u64,
    error: Option<Classification>,
    require_terminal: bool,
}

impl EventScanner {
    /// A scanner for a stream of this framing and dialect from `provider`.
    pub fn new(framing: Framing, dialect: Dialect, provider: Provider) -> Self {
        EventScanner {
            framing,
            dialect,
            provider,
            partial: Vec::new(),
            overflow: false,
            event_name: [0; 40],
            event_name_len: 0,
            content_seen: false,
            terminated: false,
            content_events: 0,
            error: None,
            require_terminal: true,
        }
    }

    /// Whether [`finish`](EventScanner::finish) fails a stream that ended
    /// without its dialect's terminal event (default true). Turning it off
    /// changes nothing else: content and keep-alives are still told apart by
    /// the dialect.
    pub(crate) fn require_terminal_event(mut self, require: bool) -> Self {
        self.require_terminal = require;
        self
    }

    /// Whether a content event has been seen.
    pub fn content_seen(&self) -> bool {
        self.content_seen
    }

    /// How many content events have been seen.
    pub fn content_events(&self) -> u64 {
        self.content_events
    }

    /// Whether the stream's terminal event (`[DONE]`, `message_stop`,
    /// `response.completed`, `"done": true`) has been seen.
    pub fn is_terminated(&self) -> bool {
        self.terminated
    }

    /// The failure found, if any.
    pub fn error(&self) -> Option<&Classification> {
        self.error.as_ref()
    }

    /// Takes the failure found, if any.
    pub fn take_error(&mut self) -> Option<Classification> {
        self.error.take()
    }

    fn phase(&self) -> Phase {
        if self.content_seen {
            Phase::MidStream
        } else {
            Phase::AfterHeaders
        }
    }

    /// Scans the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> ScanEvent {
        let mut event = ScanEvent::default();
        if self.error.is_some() {
            return event;
        }
        let mut rest = chunk;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            let (line, after) = (&rest[..newline], &rest[newline + 1..]);
            rest = after;
            if self.overflow {
                self.overflow = false;
                continue;
            }
            if self.partial.is_empty() {
                self.line(line, &mut event);
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.line(&joined, &mut event);
                joined.clear();
                self.partial = joined;
            }
            if self.error.is_some() {
                return event;
            }
        }
        if !rest.is_empty() && !self.overflow {
            if self.partial.len() + rest.len() > MAX_LINE {
                self.partial.clear();
                self.overflow = true;
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        event
    }

    /// Ends the stream: scans a last line without a newline, then returns the
    /// failure if there was one, or a [`StreamIncomplete`](ErrorKind::StreamIncomplete)
    /// failure when the dialect has a terminal event and it never came.
    pub fn finish(&mut self) -> Option<Classification> {
        if self.error.is_none() && !self.partial.is_empty() && !self.overflow {
            let last = std::mem::take(&mut self.partial);
            let mut event = ScanEvent::default();
            self.line(&last, &mut event);
            if self.framing == Framing::Sse {
                self.line(b"", &mut event);
            }
        }
        if let Some(error) = self.error.take() {
            return Some(error);
        }
        if self.require_terminal && self.dialect.has_terminal_event() && !self.terminated {
            return Some(
                Classification::new(ErrorKind::StreamIncomplete)
                    .with_provider(self.provider)
                    .with_phase(self.phase())
                    .with_message("the stream ended without its terminal event"),
            );
        }
        None
    }

    fn line(&mut self, line: &[u8], event: &mut ScanEvent) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.framing {
            Framing::Sse => self.sse_line(line, event),
            Framing::Ndjson => self.ndjson_line(line, event),
        }
    }

    fn sse_line(&mut self, line: &[u8], event: &mut ScanEvent) {
        if line.is_empty() {
            // Dispatch: the next event starts unnamed.
            self.event_name_len = 0;
            return;
        }
        if line[0] == b':' {
            event.keep_alive = true;
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                let len = value.len().min(self.event_name.len());
                self.event_name[..len].copy_from_slice(&value[..len]);
                self.event_name_len = len;
                self.named_event(event);
            }
            b"data" => self.sse_data(value, event),
            // llama.cpp builds through 2025 sent a non-standard `error:`
            // field at HTTP 200 (ggml-org/llama.cpp #14566).
            b"error" => self.fail(value, event),
            _ => {}
        }
    }

    fn event_name(&self) -> &[u8] {
        &self.event_name[..self.event_name_len]
    }

    /// Events whose name alone says what they are.
    fn named_event(&mut self, event: &mut ScanEvent) {
        match self.event_name() {
            b"ping" => event.keep_alive = true,
            b"message_stop" | b"response.completed" | b"response.incomplete" => {
                self.terminated = true;
            }
            _ => {}
        }
    }

    fn sse_data(&mut self, data: &[u8], event: &mut ScanEvent) {
        let name = self.event_name();
        if name == b"error" || name == b"response.failed" || is_error_payload(data) {
            self.fail(data, event);
            return;
        }
        if !name.is_empty() {
            // Named events (Anthropic, Responses): the name says it all.
            if is_content_event_name(name) {
                self.content(event);
            }
            return;
        }
        match self.dialect {
            Dialect::OpenAiChat => {
                if data.trim_ascii() == b"[DONE]" {
                    self.terminated = true;
                } else if has_chat_content(data) {
                    self.content(event);
                } else {
                    event.keep_alive = true;
                }
            }
            Dialect::Anthropic | Dialect::OpenAiResponses => {
                // Unnamed events still carry their type in the payload.
                match json_type(data) {
                    Some(b"message_stop" | b"response.completed" | b"response.incomplete") => {
                        self.terminated = true
                    }
                    Some(b"ping") => event.keep_alive = true,
                    Some(kind) if is_content_event_name(kind) => self.content(event),
                    _ => {}
                }
            }
            Dialect::OllamaNdjson | Dialect::Generic => {
                if data.trim_ascii() == b"[DONE]" {
                    self.terminated = true;
                } else if !data.trim_ascii().is_empty() {
                    self.content(event);
                }
            }
        }
    }

    fn ndjson_line(&mut self, line: &[u8], event: &mut ScanEvent) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        if is_error_payload(line) {
            self.fail(line, event);
            return;
        }
        if has_ollama_content(line) {
            self.content(event);
        } else {
            event.keep_alive = true;
        }
        if has_done_true(line) {
            self.terminated = true;
        }
    }

    fn content(&mut self, event: &mut ScanEvent) {
        self.content_seen = true;
        self.content_events += 1;
        event.content = true;
    }

    fn fail(&mut self, payload: &[u8], event: &mut ScanEvent) {
        let classification = crate::response::classify_event(self.provider, payload, self.phase());
        self.error = Some(classification);
        event.failed = true;
    }
}

/// Anthropic `content_block_delta`, Responses `response.*.delta`
/// (`output_text`, `function_call_arguments`, `reasoning_summary_text`, …).
fn is_content_event_name(name: &[u8]) -> bool {
    name == b"content_block_delta" || (name.starts_with(b"response.") && name.ends_with(b".delta"))
}

/// A `"key"` to look for, its searcher built once: building a
/// `memmem::Finder` costs more than searching a short chunk, and a chunk
/// is searched for up to seven keys.
macro_rules! key {
    ($quoted:literal) => {{
        static FINDER: LazyLock<memmem::Finder<'static>> =
            LazyLock::new(|| memmem::Finder::new($quoted));
        &*FINDER
    }};
}

/// Finds `"key"` as an object key (not escaped inside a string) followed by
/// optional whitespace and `:`; returns the index just after the colon.
fn find_key(payload: &[u8], quoted_key: &memmem::Finder<'static>) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = quoted_key.find(&payload[from..]) {
        let start = from + at;
        let end = start + quoted_key.needle().len();
        from = end;
        if start > 0 && payload[start - 1] == b'\\' {
            continue;
        }
        let mut i = end;
        while i < payload.len() && payload[i].is_ascii_whitespace() {
            i += 1;
        }
        if payload.get(i) == Some(&b':') {
            return Some(i + 1);
        }
    }
    None
}

fn skip_ws(payload: &[u8], mut i: usize) -> usize {
    while i < payload.len() && payload[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// A JSON payload with a non-null `"error"` key, or `"type": "error"` /
/// `"type": "response.failed"`.
fn is_error_payload(payload: &[u8]) -> bool {
    if let Some(value_at) = find_key(payload, key!(b"\"error\"")) {
        let value = &payload[skip_ws(payload, value_at)..];
        if !value.starts_with(b"null")
            && !value.starts_with(b"false")
            && !value.starts_with(b"\"\"")
        {
            return true;
        }
    }
    matches!(json_type(payload), Some(b"error" | b"response.failed"))
}

/// The string value of the first `"type"` key.
fn json_type(payload: &[u8]) -> Option<&[u8]> {
    let value_at = skip_ws(payload, find_key(payload, key!(b"\"type\""))?);
    let rest = payload.get(value_at..)?.strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// Whether `"key": "<non-empty>"` is present.
fn has_nonempty_string(payload: &[u8], quoted_key: &memmem::Finder<'static>) -> bool {
    let Some(value_at) = find_key(payload, quoted_key) else {
        return false;
    };
    let value = &payload[skip_ws(payload, value_at)..];
    value.len() >= 2 && value[0] == b'"' && value[1] != b'"'
}

/// An OpenAI chat chunk that carries something the caller sees: text,
/// reasoning, a refusal or a tool call (a role-only or usage-only chunk does
/// not).
fn has_chat_content(data: &[u8]) -> bool {
    has_nonempty_string(data, key!(b"\"content\""))
        || has_nonempty_string(data, key!(b"\"reasoning_content\""))
        || has_nonempty_string(data, key!(b"\"reasoning\""))
        || has_nonempty_string(data, key!(b"\"refusal\""))
        || has_nonempty_string(data, key!(b"\"text\""))
        || find_key(data, key!(b"\"tool_calls\"")).is_some()
        || find_key(data, key!(b"\"function_call\"")).is_some()
}

fn has_ollama_content(line: &[u8]) -> bool {
    has_nonempty_string(line, key!(b"\"content\""))
        || has_nonempty_string(line, key!(b"\"response\""))
        || has_nonempty_string(line, key!(b"\"thinking\""))
        || find_key(line, key!(b"\"tool_calls\"")).is_some()
}

fn has_done_true(line: &[u8]) -> bool {
    find_key(line, key!(b"\"done\""))
        .is_some_and(|at| line[skip_ws(line, at)..].starts_with(b"true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(
        framing: Framing,
        dialect: Dialect,
        chunks: &[&[u8]],
    ) -> (EventScanner, Option<Classification>) {
        let mut scanner = EventScanner::new(framing, dialect, Provider::Unknown);
        for chunk in chunks {
            scanner.feed(chunk);
        }
        let end = scanner.finish();
        (scanner, end)
    }

    #[test]
    fn openai_stream_split_anywhere_is_complete() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let (scanner, end) = scan(
                Framing::Sse,
                Dialect::OpenAiChat,
                &[&stream[..split], &stream[split..]],
            );
            assert_eq!(end, None, "split at {split}");
            assert_eq!(scanner.content_events(), 1, "split at {split}");
        }
    }

    #[test]
    fn role_only_delta_is_not_content() {
        let mut scanner = EventScanner::new(Framing::Sse, Dialect::OpenAiChat, Provider::OpenAi);
        let event = scanner.feed(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        );
        assert!(!event.content && event.keep_alive);
    }

    #[test]
    fn missing_done_is_incomplete_after_content() {
        let (_, end) = scan(
            Framing::Sse,
            Dialect::OpenAiChat,
            &[b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"],
        );
        let end = end.unwrap();
        assert_eq!(
            (end.kind(), end.phase()),
            (ErrorKind::StreamIncomplete, Phase::MidStream)
        );
        assert!(!end.retryable());
    }

    #[test]
    fn escaped_error_text_in_content_is_not_an_error() {
        let chunk = b"data: {\"choices\":[{\"delta\":{\"content\":\"the \\\"error\\\": field\"}}]}\n\ndata: [DONE]\n\n";
        let (scanner, end) = scan(Framing::Sse, Dialect::OpenAiChat, &[chunk]);
        assert_eq!(end, None);
        assert!(scanner.content_seen());
    }

    #[test]
    fn comments_and_pings_are_keep_alives() {
        let mut scanner = EventScanner::new(Framing::Sse, Dialect::Anthropic, Provider::Anthropic);
        let event =
            scanner.feed(b": OPENROUTER PROCESSING\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n");
        assert!(event.keep_alive && !event.content);
    }

    #[test]
    fn ollama_error_line_after_content_is_mid_stream() {
        let (scanner, end) = scan(
            Framing::Ndjson,
            Dialect::OllamaNdjson,
            &[b"{\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n{\"error\":\"an error was encountered while running the model\"}\n"],
        );
        let end = end.unwrap();
        assert!(scanner.content_seen());
        assert_eq!(end.phase(), Phase::MidStream);
        assert!(!end.retryable());
    }

    #[test]
    fn a_final_line_without_newline_is_scanned() {
        let (_, end) = scan(
            Framing::Ndjson,
            Dialect::OllamaNdjson,
            &[b"{\"message\":{\"content\":\"x\"},\"done\":false}\n{\"done\":true}"],
        );
        assert_eq!(end, None);
    }

    #[test]
    fn overlong_lines_are_skipped_not_buffered() {
        let mut scanner = EventScanner::new(Framing::Sse, Dialect::Generic, Provider::Unknown);
        let big = vec![b'a'; MAX_LINE + 10];
        scanner.feed(b"data: ");
        scanner.feed(&big);
        assert!(scanner.partial.capacity() <= MAX_LINE);
        scanner.feed(b"\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n");
        assert!(scanner.error().is_some());
    }
}
