//! [`Transcript`]: what a stream has delivered to the caller, kept as the
//! scan reads it, for a layer that continues a broken answer.

mod read;
mod strings;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Dialect;
use strings::{Field, Strings, StringsMark};

/// The room the text is first given: a short answer's (a few hundred
/// tokens of four bytes or so) fits; a longer one doubles it.
const TEXT_CAPACITY: usize = 1024;

/// A request extension asking [`Classify`](crate::Classify) to keep a
/// [`Transcript`] of the stream that answers the request.
///
/// The streamed response then carries a [`StreamTranscript`] in its
/// extensions, and a failure of its body carries the same one in the
/// [`LlmError`](crate::LlmError)'s extensions. Each attempt gets a new
/// transcript: a request cloned for a retry carries the marker, not the
/// record.
///
/// ```
/// use tower_llm_classify::stream::CaptureTranscript;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(CaptureTranscript);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CaptureTranscript;

/// The shared [`Transcript`] of one stream: the scan writes it, the
/// layers above read it.
///
/// Written once per frame (a lock held while the frame is scanned), before
/// the frame is handed up: a layer that just polled a frame reads what
/// that frame delivered, and after the body failed, what the caller holds.
///
/// # Clone
///
/// Clones share the record (an `Arc`).
#[derive(Clone)]
pub struct StreamTranscript(Arc<Mutex<Transcript>>);

impl StreamTranscript {
    pub(crate) fn new(dialect: Dialect) -> Self {
        StreamTranscript(Arc::new(Mutex::new(Transcript::new(dialect))))
    }

    /// Reads the transcript as it is now.
    pub fn read<R>(&self, read: impl FnOnce(&Transcript) -> R) -> R {
        read(&self.lock())
    }

    /// A copy of the transcript as it is now.
    pub fn snapshot(&self) -> Transcript {
        self.lock().clone()
    }

    /// The record, for the scan. A panic while it was held (none is
    /// expected) leaves it readable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Transcript> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for StreamTranscript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamTranscript")
            .field(&*self.lock())
            .finish()
    }
}

/// Why an answer cannot be continued with a prefill (see
/// [`Transcript`'s docs](Transcript#what-cannot-be-continued)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotContinuable {
    /// The transcript does not read this dialect (the OpenAI Responses
    /// API, generic streams).
    Dialect,
    /// A tool call or function call (its arguments) was delivered.
    ToolCall,
    /// More than one choice (`n > 1`): a choice index other than 0.
    MultipleChoices,
    /// Token log probabilities were delivered.
    Logprobs,
    /// Reasoning (`reasoning_content`, Anthropic thinking, Ollama
    /// `thinking`) was delivered.
    Reasoning,
    /// A refusal (OpenAI `delta.refusal`) was delivered.
    Refusal,
    /// A content block or delta other than text: Anthropic citations,
    /// server tool results, a second text block.
    NonText,
    /// An event the scanner could not read: longer than it buffers, or
    /// split over several `data:` lines.
    Unreadable,
    /// More text than a transcript keeps ([`Transcript::MAX_TEXT`]): the
    /// prefill would be as large, and an endless stream must not hold
    /// memory without end.
    TooLong,
}

impl NotContinuable {
    /// A stable name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            NotContinuable::Dialect => "dialect",
            NotContinuable::ToolCall => "tool_call",
            NotContinuable::MultipleChoices => "multiple_choices",
            NotContinuable::Logprobs => "logprobs",
            NotContinuable::Reasoning => "reasoning",
            NotContinuable::Refusal => "refusal",
            NotContinuable::NonText => "non_text",
            NotContinuable::Unreadable => "unreadable",
            NotContinuable::TooLong => "too_long",
        }
    }
}

impl fmt::Display for NotContinuable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The token counts a stream reported, as far as it got.
///
/// OpenAI: `usage.prompt_tokens` / `completion_tokens` (the chunk after
/// the finish, when `stream_options.include_usage` asked for it).
/// Anthropic: `input_tokens` from `message_start`, `output_tokens` from
/// the last of `message_start` and `message_delta` (cumulative). Ollama:
/// `prompt_eval_count` / `eval_count` of the `done` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenUsage {
    /// Tokens of the prompt.
    pub input_tokens: Option<u64>,
    /// Tokens generated.
    pub output_tokens: Option<u64>,
}

/// What a stream has delivered to the caller: the envelope it saw first,
/// the text of its answer (choice 0, or Anthropic's text block), whether
/// the finish went by, the usage, and whether the answer can be continued.
///
/// Kept by the scan when asked ([`CaptureTranscript`]); read through a
/// [`StreamTranscript`]. What the record holds is what the frames handed
/// to the caller so far delivered: what [`ResponseBody`](super::ResponseBody)
/// withholds is not in it (a frame that completes a malformed event; an
/// in-band error event and the rest of its frame, the stream's
/// [`bytes`](Transcript::bytes) then ending where the error event starts).
///
/// ```
/// use tower_llm_classify::stream::{Dialect, EventScanner, Framing};
/// use tower_llm_classify::Provider;
///
/// let mut scanner = EventScanner::new(Framing::Sse, Dialect::OpenAiChat, Provider::OpenAi)
///     .capture_transcript();
/// scanner.feed(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1795435200,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
/// scanner.feed(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caf\\u00e9 \\\"au lait\\\" \"}}]}\n\n");
/// let transcript = scanner.transcript().unwrap().snapshot();
/// assert_eq!(transcript.text(), "Café \"au lait\" "); // decoded, trailing space kept
/// assert_eq!(transcript.id(), Some("chatcmpl-1"));
/// assert_eq!(transcript.created(), Some(1795435200));
/// assert!(transcript.role_sent() && !transcript.finished());
/// assert!(transcript.is_continuable());
/// ```
///
/// # Why the scanner keeps it
///
/// A stream that breaks after content can be continued: the same request
/// is sent again with the text the caller already has as the assistant's
/// partial answer (a prefill), and the new stream is spliced into the
/// caller's. That needs exactly what the caller's SDK holds — the text of
/// the answer as it concatenated it (escapes decoded, trailing white space
/// kept: "The prefill content cannot end with trailing whitespace" on
/// Anthropic, so the splice must know it is there), the envelope it saw first (`id`,
/// `created`, `model`), whether the role chunk went by — and whether the
/// answer holds anything a prefill cannot carry. [`Classify`](crate::Classify)
/// already reads every event of the stream once; reading the few fields
/// more as they pass costs less than a second reader of the stream, and
/// the answer is never held twice.
///
/// A transcript is opt-in ([`CaptureTranscript`] on a request, or
/// [`ClassifyLayer::capture_transcripts`](crate::ClassifyLayer::capture_transcripts)):
/// a stream without one pays nothing for it. With one, the text grows in
/// one buffer, given room for a short answer at its first append, and the
/// envelope's strings are copied once into another: four allocations a
/// stream (the record, its text, its envelope, the event template), none
/// per event. An event that repeats the last one read but for its text —
/// nearly every event of a stream — is read by comparing its bytes around
/// the text (plain ASCII text, nearly every token, is then copied as it
/// is), and keeps that event's verdicts (content, not an error) without
/// the scanner's key searches: on the classify bench's 2,000-event OpenAI
/// stream a scan with a transcript runs about a third fewer instructions
/// than one without (4,382 against 6,480 a chunk under callgrind). A
/// short stream pays for reading its first events whole: the root stack
/// bench's healthy 50-event stream costs 3.4 % more instructions through
/// the whole stack with a transcript than without (115,269 against
/// 111,435 under callgrind).
///
/// # What cannot be continued
///
/// A prefill carries text. [`Transcript::not_continuable`] says why an
/// answer cannot be continued: a tool call or function arguments, more
/// than one choice (`n > 1`), log probabilities (a continuation would not
/// have the delivered tokens'), a refusal, a content block other than text
/// (Anthropic citations, server tool results), an event the scanner could
/// not read, more text than a transcript keeps ([`Transcript::MAX_TEXT`];
/// the text is then dropped), or a dialect the transcript does not read
/// (the Responses API, generic streams). Reasoning is not continued either: Anthropic does not
/// take a prefill with extended thinking ("Prefilling is only available for
/// non-extended thinking modes", docs.claude.com, *Prefill Claude's
/// response*),
/// llama.cpp refuses one with `enable_thinking` ("Assistant response
/// prefill is incompatible with enable_thinking"), and a continuation
/// would reason again, which the caller would see twice.
#[derive(Clone)]
pub struct Transcript {
    dialect: Dialect,
    /// The text, UTF-8 by construction (only [`crate::json::append_decoded`]'s
    /// output is appended, and it is cut only where an append started):
    /// kept as bytes, validated when read, because validating each token
    /// as it is appended cost more than the rest of appending it.
    text: Vec<u8>,
    strings: Strings,
    state: State,
    /// The record as it was when the frame being scanned started.
    mark: Mark,
    /// What reading the current event did to the text.
    reading: Reading,
    /// The text passed [`Transcript::MAX_TEXT`]: it is dropped, and what
    /// follows is not kept.
    dropped: bool,
}

/// What reading one event did to the text: where the one string it
/// appended lies in the event, so that the next event that differs from
/// it only there can be read by appending that string alone.
#[derive(Clone, Debug, Default)]
struct Reading {
    /// The address of the event's data.
    base: usize,
    /// The content (between its quotes) of the string appended.
    appended: Option<std::ops::Range<usize>>,
    appends: u8,
    /// Text appended was taken back (a choice other than 0, a block other
    /// than the text's), or the event did what reading it twice would do
    /// twice (a block started): no template.
    taken_back: bool,
}

/// Everything else, `Copy`: marked at each frame, restored when a frame
/// is withheld.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    created: Option<i64>,
    index: Option<u64>,
    open_block: Option<u64>,
    blocks: u64,
    role_sent: bool,
    finished: bool,
    usage: Option<TokenUsage>,
    not_continuable: Option<NotContinuable>,
    bytes: u64,
    last_event_end: u64,
}

/// What a withheld frame goes back to: where the text and the position
/// were when it started, and — taken before the first change the frame
/// makes to them, most frames making none (an event that repeats the
/// template adds text only) — the strings and the rest of the state.
#[derive(Clone, Copy, Debug, Default)]
struct Mark {
    text_len: usize,
    bytes: u64,
    last_event_end: u64,
    rest: Option<(StringsMark, State)>,
}

impl Transcript {
    /// The most text, in bytes, a transcript keeps (4 MiB): past it the
    /// answer is not continued ([`NotContinuable::TooLong`]) and its text
    /// is dropped.
    pub const MAX_TEXT: usize = 4 << 20;

    fn new(dialect: Dialect) -> Self {
        let mut state = State::default();
        if !matches!(
            dialect,
            Dialect::OpenAiChat | Dialect::Anthropic | Dialect::OllamaNdjson
        ) {
            state.not_continuable = Some(NotContinuable::Dialect);
        }
        Transcript {
            dialect,
            text: Vec::new(),
            strings: Strings::default(),
            state,
            mark: Mark::default(),
            reading: Reading::default(),
            dropped: false,
        }
    }

    /// The dialect of the stream.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The text delivered so far: choice 0's `delta.content` (OpenAI; the
    /// legacy completions' `text`), the text block's `text_delta`s
    /// (Anthropic), `message.content` or `response` (Ollama), decoded and
    /// concatenated as the caller's SDK does — white space at the end kept.
    pub fn text(&self) -> &str {
        if self.dropped {
            return "";
        }
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The `id` the caller saw first: the chunks' (OpenAI), the
    /// `message_start` message's (Anthropic).
    pub fn id(&self) -> Option<&str> {
        self.strings.get(Field::Id)
    }

    /// The `model` the caller saw first (OpenAI chunks, Anthropic's
    /// `message_start`, Ollama lines).
    pub fn model(&self) -> Option<&str> {
        self.strings.get(Field::Model)
    }

    /// OpenAI: the chunks' `object` (`chat.completion.chunk`).
    pub fn object(&self) -> Option<&str> {
        self.strings.get(Field::Object)
    }

    /// OpenAI: the chunks' `created` (Unix seconds).
    pub fn created(&self) -> Option<i64> {
        self.state.created
    }

    /// OpenAI: the chunks' `system_fingerprint`, when they carry one.
    pub fn system_fingerprint(&self) -> Option<&str> {
        self.strings.get(Field::SystemFingerprint)
    }

    /// Ollama: the first line's `created_at`.
    pub fn created_at(&self) -> Option<&str> {
        self.strings.get(Field::CreatedAt)
    }

    /// The index of what the text is: the choice (OpenAI, 0), the text
    /// content block (Anthropic). `None` until one was seen.
    pub fn index(&self) -> Option<u64> {
        self.state.index
    }

    /// Anthropic: the index of the content block the caller has seen
    /// started and not stopped, if any (a continuation's text goes on in
    /// it).
    pub fn open_block(&self) -> Option<u64> {
        self.state.open_block
    }

    /// Anthropic: how many content blocks the caller has seen started.
    pub fn blocks(&self) -> u64 {
        self.state.blocks
    }

    /// Whether the opening of the answer went by: OpenAI's role chunk (a
    /// delta with `role`), Anthropic's `message_start`, Ollama's first
    /// `message` line. A continuation sends no second one.
    pub fn role_sent(&self) -> bool {
        self.state.role_sent
    }

    /// Whether the answer's finish went by: choice 0's `finish_reason`
    /// (OpenAI), `message_delta` with a `stop_reason` or `message_stop`
    /// (Anthropic), `"done": true` (Ollama).
    pub fn finished(&self) -> bool {
        self.state.finished
    }

    /// The finish reason, when it went by: `stop`, `length`,
    /// `tool_calls` (OpenAI), `end_turn`, `max_tokens` (Anthropic),
    /// Ollama's `done_reason`.
    pub fn finish_reason(&self) -> Option<&str> {
        self.strings.get(Field::FinishReason)
    }

    /// The token counts the stream reported, if it reported any.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.state.usage
    }

    /// Why the answer cannot be continued, if it cannot (the first reason
    /// found; it stays).
    pub fn not_continuable(&self) -> Option<NotContinuable> {
        self.state.not_continuable
    }

    /// Whether what was delivered can be continued with a prefill.
    pub fn is_continuable(&self) -> bool {
        self.state.not_continuable.is_none()
    }

    /// How many bytes of the stream the caller was handed.
    pub fn bytes(&self) -> u64 {
        self.state.bytes
    }

    /// Where the last complete event ends in the stream (after its blank
    /// line for SSE, its newline for NDJSON): the bytes after it are part
    /// of an event the caller's parser holds unfinished, which a splice
    /// must not continue blindly.
    pub fn last_event_end(&self) -> u64 {
        self.state.last_event_end
    }

    // --- Written by the scan. ---

    /// The text, to append to: given room for a short answer the first
    /// time (a stream's text otherwise grows from 8 bytes by doubling, a
    /// reallocation every few events at first).
    fn text_buffer(&mut self) -> &mut Vec<u8> {
        if self.text.len() >= Self::MAX_TEXT && !self.dropped {
            self.block(NotContinuable::TooLong);
            self.dropped = true;
            self.text = Vec::new();
        }
        if self.dropped {
            // Each append lands in an emptied buffer: no more is held.
            self.text.clear();
        } else if self.text.capacity() == 0 {
            self.text.reserve(TEXT_CAPACITY);
        }
        &mut self.text
    }

    /// A frame starts: what it delivers can still be taken back.
    pub(crate) fn begin_frame(&mut self) {
        self.mark = Mark {
            text_len: self.text.len(),
            bytes: self.state.bytes,
            last_event_end: self.state.last_event_end,
            rest: None,
        };
    }

    /// The strings and state are about to change: marked first, once a
    /// frame.
    fn mark_rest(&mut self) {
        if self.mark.rest.is_none() {
            self.mark.rest = Some((self.strings.mark(), self.state));
        }
    }

    /// The frame being scanned is withheld from the caller: the record
    /// goes back to what the frames before it delivered.
    pub(crate) fn withhold_frame(&mut self) {
        self.text.truncate(self.mark.text_len);
        if let Some((strings, state)) = self.mark.rest {
            self.strings.restore(strings);
            self.state = state;
        }
        self.state.bytes = self.mark.bytes;
        self.state.last_event_end = self.mark.last_event_end;
    }

    /// Where the scan is: `bytes` fed, the last complete event ending at
    /// `last_event_end`.
    pub(crate) fn set_position(&mut self, bytes: u64, last_event_end: u64) {
        self.state.bytes = bytes;
        self.state.last_event_end = last_event_end;
    }

    /// The answer cannot be continued, for `reason` (unless an earlier
    /// reason was found).
    pub(crate) fn block(&mut self, reason: NotContinuable) {
        self.mark_rest();
        self.state.not_continuable.get_or_insert(reason);
    }
}

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcript")
            .field("dialect", &self.dialect)
            .field("text_len", &self.text.len())
            .field("id", &self.id())
            .field("model", &self.model())
            .field("index", &self.state.index)
            .field("role_sent", &self.state.role_sent)
            .field("finished", &self.state.finished)
            .field("finish_reason", &self.finish_reason())
            .field("usage", &self.state.usage)
            .field("not_continuable", &self.state.not_continuable)
            .finish_non_exhaustive()
    }
}
