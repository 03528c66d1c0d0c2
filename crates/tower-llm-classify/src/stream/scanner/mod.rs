//! [`EventScanner`]: an incremental, allocation-free (per event) scanner of
//! SSE and NDJSON streams.

mod ends;
mod keys;
mod template;

#[cfg(test)]
mod tests;

use ends::Finish;
use keys::{
    has_chat_content, has_done_true, has_ollama_content, has_stop_reason, is_content_event_name,
    is_error_payload, is_json_shaped, json_type,
};

use super::transcript::{NotContinuable, StreamTranscript, Transcript};
use super::{Dialect, Framing};
use crate::classification::Phase;
use crate::{Classification, ErrorKind, Provider};
use template::{EventReader, unreadable};

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
    ///
    /// With a transcript, an in-band error event is meant to be withheld
    /// from the caller, from its start to the end of the chunk (the
    /// complete events before it are passed on): the transcript's
    /// [`bytes`](super::Transcript::bytes) end where it starts.
    pub failed: bool,
    /// The chunk completes a malformed event: one whose data the caller's
    /// SDK parses as JSON and that is not JSON (see the
    /// [module docs](super#malformed-events)). The stream has failed
    /// ([`failed`](ScanEvent::failed) is set), and the chunk is meant to
    /// be withheld from the caller: what the scanner counts
    /// ([`content_events`](EventScanner::content_events), the transcript)
    /// no longer includes what the chunk carried, and
    /// [`content`](ScanEvent::content) is false.
    pub malformed: bool,
}

/// What the scanner knows of the SSE event being read.
#[derive(Clone, Copy, Debug, Default)]
struct PendingEvent {
    data_lines: u8,
    /// A `data:` line the caller's SDK would parse is not JSON: malformed,
    /// unless another `data:` line follows (the SDK joins them).
    not_json: bool,
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
    finish: Finish,
    pending: PendingEvent,
    /// `content_events` when the chunk being scanned started, and when
    /// the event being read started: what a malformed event takes back.
    frame_mark: u64,
    event_mark: u64,
    /// Bytes fed before the frame being scanned (its first part).
    frame_start: u64,
    /// Bytes fed before the chunk being scanned; where the line being
    /// read ends; where the last complete event ended.
    fed: u64,
    line_end: u64,
    last_event_end: u64,
    /// Set by `finish`: the end of the stream is judged by what came
    /// before, not by the unfinished event it cut.
    finishing: bool,
    transcript: Option<StreamTranscript>,
    reader: EventReader,
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
            finish: Finish::Open,
            pending: PendingEvent::default(),
            frame_mark: 0,
            event_mark: 0,
            frame_start: 0,
            fed: 0,
            line_end: 0,
            last_event_end: 0,
            finishing: false,
            transcript: None,
            reader: EventReader::default(),
        }
    }

    /// Keeps a [`Transcript`] of what the stream delivers, shared through
    /// [`transcript`](EventScanner::transcript).
    pub fn capture_transcript(mut self) -> Self {
        self.transcript = Some(StreamTranscript::new(self.dialect));
        self
    }

    /// The transcript, when [`capture_transcript`](EventScanner::capture_transcript)
    /// asked for one.
    pub fn transcript(&self) -> Option<&StreamTranscript> {
        self.transcript.as_ref()
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

    /// Whether the answer's finish has been delivered, so that a clean end
    /// without the terminal event loses nothing: an OpenAI chat chunk with a
    /// `finish_reason` and no content after it (and the usage chunk after
    /// it, when the chunks' `"usage": null` announced one), an Anthropic
    /// `message_delta` with a `stop_reason`. The terminal event itself
    /// counts too.
    pub fn finish_seen(&self) -> bool {
        self.terminated || self.finish == Finish::Delivered
    }

    /// The failure found, if any.
    pub fn error(&self) -> Option<&Classification> {
        self.error.as_ref()
    }

    /// Takes the failure found, if any.
    pub fn take_error(&mut self) -> Option<Classification> {
        self.error.take()
    }

    /// How many bytes of the frame being scanned (see
    /// [`feed_part`](EventScanner::feed_part)) come before the event that
    /// failed the stream: the complete events before it, which the caller
    /// may be handed. Zero when the event began in an earlier frame.
    pub(crate) fn frame_bytes_before_error(&self) -> usize {
        // Bounded by the frame's length: the last complete event ended
        // within what was fed.
        usize::try_from(self.last_event_end.saturating_sub(self.frame_start)).unwrap_or(0)
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
        self.feed_part(chunk, true)
    }

    /// Scans the next part of a frame: `starts_frame` for its first part,
    /// where what a malformed event withholds starts.
    pub(crate) fn feed_part(&mut self, chunk: &[u8], starts_frame: bool) -> ScanEvent {
        let mut event = ScanEvent::default();
        if self.error.is_some() {
            return event;
        }
        if starts_frame {
            self.frame_mark = self.content_events;
            self.frame_start = self.fed;
        }
        match self.transcript.take() {
            None => self.scan(chunk, &mut event, None),
            Some(shared) => {
                {
                    let mut transcript = shared.lock();
                    if starts_frame {
                        transcript.begin_frame();
                    }
                    self.scan(chunk, &mut event, Some(&mut transcript));
                    if event.failed {
                        // An error event is withheld from its start (a
                        // malformed one with its frame: `withhold_frame`).
                        if !event.malformed {
                            let handed = self.frame_start + self.frame_bytes_before_error() as u64;
                            transcript.set_position(handed, self.last_event_end);
                        }
                    } else {
                        let fed = self.fed + chunk.len() as u64;
                        transcript.set_position(fed, self.last_event_end);
                    }
                }
                self.transcript = Some(shared);
            }
        }
        self.fed += chunk.len() as u64;
        event
    }

    fn scan(&mut self, chunk: &[u8], event: &mut ScanEvent, mut t: Option<&mut Transcript>) {
        let mut rest = chunk;
        while let Some(newline) = next_newline(rest) {
            let (line, after) = (&rest[..newline], &rest[newline + 1..]);
            rest = after;
            self.line_end = self.fed + (chunk.len() - rest.len()) as u64;
            if self.overflow {
                self.overflow = false;
                continue;
            }
            if self.partial.is_empty() {
                self.line(line, event, t.as_deref_mut());
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(line);
                self.line(&joined, event, t.as_deref_mut());
                joined.clear();
                self.partial = joined;
            }
            if self.error.is_some() {
                return;
            }
        }
        if !rest.is_empty() && !self.overflow {
            if self.partial.len() + rest.len() > MAX_LINE {
                self.partial.clear();
                self.overflow = true;
                if let Some(t) = t {
                    t.block(NotContinuable::Unreadable);
                }
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
    }

    /// Ends the stream: scans a last line without a newline, then returns the
    /// failure if there was one, or a [`StreamIncomplete`](ErrorKind::StreamIncomplete)
    /// failure when the dialect has a terminal event, it never came, and the
    /// answer's finish was not delivered either ([`finish_seen`](EventScanner::finish_seen)).
    pub fn finish(&mut self) -> Option<Classification> {
        self.finishing = true;
        if self.error.is_none() && !self.partial.is_empty() && !self.overflow {
            let last = std::mem::take(&mut self.partial);
            self.line_end = self.fed;
            let mut event = ScanEvent::default();
            match (self.framing, self.transcript.take()) {
                // Ollama's clients parse a last line without its newline;
                // an SSE event without its blank line is never dispatched
                // to the caller, so it is not in the transcript.
                (Framing::Ndjson, Some(shared)) => {
                    self.line(&last, &mut event, Some(&mut shared.lock()));
                    self.transcript = Some(shared);
                }
                (_, shared) => {
                    self.line(&last, &mut event, None);
                    self.transcript = shared;
                }
            }
            if self.framing == Framing::Sse {
                self.line(b"", &mut event, None);
            }
        }
        if let Some(error) = self.error.take() {
            return Some(error);
        }
        if self.require_terminal && self.dialect.has_terminal_event() && !self.finish_seen() {
            return Some(
                Classification::new(ErrorKind::StreamIncomplete)
                    .with_provider(self.provider)
                    .with_phase(self.phase())
                    .with_message("the stream ended without its terminal event"),
            );
        }
        None
    }

    fn line(&mut self, line: &[u8], event: &mut ScanEvent, t: Option<&mut Transcript>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.framing {
            Framing::Sse => self.sse_line(line, event, t),
            Framing::Ndjson => self.ndjson_line(line, event, t),
        }
    }

    fn sse_line(&mut self, line: &[u8], event: &mut ScanEvent, t: Option<&mut Transcript>) {
        if line.is_empty() {
            self.dispatch(event, t);
            return;
        }
        if line[0] == b':' {
            event.keep_alive = true;
            return;
        }
        // Nearly every line of a stream is a `data:` line: read as one
        // without searching for its colon.
        if let Some(value) = line.strip_prefix(b"data:") {
            self.sse_data(value.strip_prefix(b" ").unwrap_or(value), event, t);
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
            b"data" => self.sse_data(value, event, t),
            // llama.cpp builds through 2025 sent a non-standard `error:`
            // field at HTTP 200 (ggml-org/llama.cpp #14566).
            b"error" => self.fail(value, event),
            _ => {}
        }
    }

    /// The blank line that ends an SSE event: the caller's SDK acts on the
    /// event now.
    fn dispatch(&mut self, event: &mut ScanEvent, t: Option<&mut Transcript>) {
        let pending = std::mem::take(&mut self.pending);
        self.event_name_len = 0;
        if pending.not_json && pending.data_lines == 1 && !self.finishing {
            self.malformed(event, t);
            return;
        }
        self.event_mark = self.content_events;
        self.last_event_end = self.line_end;
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

    fn sse_data(&mut self, data: &[u8], event: &mut ScanEvent, mut t: Option<&mut Transcript>) {
        self.pending.data_lines = self.pending.data_lines.saturating_add(1);
        let trimmed = data.trim_ascii();
        let dialect = self.dialect;
        let name = &self.event_name[..self.event_name_len];
        if self.pending.data_lines == 1
            && !self.terminated
            && let Some(t) = t.as_deref_mut()
            && let Some(hit) = self.reader.hit(
                name,
                trimmed,
                Some(&|data: &[u8]| content_event(dialect, name, data)),
            )
        {
            // The last event read whole but for its text: its verdicts.
            if hit.content {
                self.content(event);
            } else if self.event_name_len == 0 && self.dialect == Dialect::OpenAiChat {
                event.keep_alive = true;
            }
            if self.event_name_len == 0 && self.dialect == Dialect::OpenAiChat {
                self.chat_finish(trimmed, hit.content);
            }
            if !hit.append_to(t) {
                self.pending.not_json = unreadable(t, trimmed);
            }
            return;
        }
        let name = self.event_name();
        if name == b"error" || name == b"response.failed" || is_error_payload(data, self.dialect) {
            self.fail(data, event);
            return;
        }
        let parsed = self.parsed_as_json(name, trimmed);
        if parsed && !is_json_shaped(trimmed) {
            self.pending.not_json = true;
        }
        self.classify_data(data, trimmed, event);
        if let Some(t) = t {
            if self.pending.data_lines > 1 {
                t.block(NotContinuable::Unreadable);
            } else if parsed && !self.pending.not_json {
                let name = &self.event_name[..self.event_name_len];
                if !self.reader.read(t, name, trimmed) {
                    self.pending.not_json = unreadable(t, trimmed);
                }
            }
        }
    }

    /// Content, keep-alive or terminal event: what a `data:` line is.
    ///
    /// What decides content here must stay what [`content_event`] says,
    /// which [`EventReader`] keeps for events that repeat a template.
    fn classify_data(&mut self, data: &[u8], trimmed: &[u8], event: &mut ScanEvent) {
        let name = self.event_name();
        if !name.is_empty() {
            // Named events (Anthropic, Responses): the name says it all.
            if is_content_event_name(name) {
                self.content(event);
            } else if name == b"message_delta" && has_stop_reason(data) {
                self.finish = Finish::Delivered;
            }
            return;
        }
        match self.dialect {
            Dialect::OpenAiChat => {
                if trimmed == b"[DONE]" {
                    self.terminated = true;
                    return;
                }
                let content = has_chat_content(data);
                if content {
                    self.content(event);
                } else {
                    event.keep_alive = true;
                }
                self.chat_finish(trimmed, content);
            }
            Dialect::Anthropic | Dialect::OpenAiResponses => {
                // Unnamed events still carry their type in the payload.
                match json_type(data) {
                    Some(b"message_stop" | b"response.completed" | b"response.incomplete") => {
                        self.terminated = true
                    }
                    Some(b"ping") => event.keep_alive = true,
                    Some(b"message_delta") if has_stop_reason(data) => {
                        self.finish = Finish::Delivered;
                    }
                    Some(kind) if is_content_event_name(kind) => self.content(event),
                    _ => {}
                }
            }
            Dialect::OllamaNdjson | Dialect::Generic => {
                if trimmed == b"[DONE]" {
                    self.terminated = true;
                } else if !trimmed.is_empty() {
                    self.content(event);
                }
            }
        }
    }

    fn ndjson_line(&mut self, line: &[u8], event: &mut ScanEvent, t: Option<&mut Transcript>) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        self.event_mark = self.content_events;
        if is_error_payload(line, self.dialect) {
            self.fail(line, event);
            return;
        }
        // Ollama's clients parse every line (`json.loads` in ollama-python's
        // `_stream`).
        let parsed = self.dialect == Dialect::OllamaNdjson && !self.terminated;
        if parsed && !is_json_shaped(line) && !self.finishing {
            self.malformed(event, t);
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
        if let Some(t) = t
            && parsed
            // NDJSON lines are judged whole (Ollama's repeat no template:
            // each carries its own `created_at`).
            && !self.reader.read(t, b"", line)
            && unreadable(t, line)
            && !self.finishing
        {
            self.malformed(event, Some(t));
            return;
        }
        self.last_event_end = self.line_end;
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

/// Whether the scanner counts a `data:` line of a JSON event named `name`
/// as content (as [`EventScanner::classify_data`] decides).
fn content_event(dialect: Dialect, name: &[u8], data: &[u8]) -> bool {
    if !name.is_empty() {
        return is_content_event_name(name);
    }
    match dialect {
        Dialect::OpenAiChat => has_chat_content(data),
        Dialect::Anthropic | Dialect::OpenAiResponses => {
            json_type(data).is_some_and(is_content_event_name)
        }
        Dialect::OllamaNdjson | Dialect::Generic => !data.trim_ascii().is_empty(),
    }
}

/// The index of the first `\n` in `rest`. The blank line that ends an SSE
/// event (`\n` or `\r\n`, usually right after its `data:` line) is seen
/// before searching: a `memchr` call costs more to start than such a line
/// costs to read.
#[inline]
fn next_newline(rest: &[u8]) -> Option<usize> {
    match rest {
        [b'\n', ..] => Some(0),
        [b'\r', b'\n', ..] => Some(1),
        _ => memchr::memchr(b'\n', rest),
    }
}
