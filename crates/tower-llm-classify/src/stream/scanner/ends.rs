//! How a stream ends: an answer's finish, followed to the end of an OpenAI
//! or Anthropic stream, and events the caller's SDK could not read.

use super::keys::{UsageKey, has_finish_reason, usage_key};
use super::{EventScanner, ScanEvent};
use crate::stream::Dialect;
use crate::stream::transcript::Transcript;
use crate::{Classification, ErrorKind};

/// How far an OpenAI chat or Anthropic answer has got towards its finish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Finish {
    /// No finish yet (or content came after one: another choice is still
    /// running).
    #[default]
    Open,
    /// The finish went by; the usage chunk its `"usage": null` announced
    /// has not.
    AwaitingUsage,
    /// The answer is whole.
    Delivered,
}

impl EventScanner {
    /// Whether the caller's SDK parses this event's data as JSON, so that
    /// data that is not JSON makes it raise: every event but `[DONE]` in
    /// OpenAI's SDKs (`Stream.__stream__` in openai-python's
    /// `_streaming.py`), the six Messages events in Anthropic's (its
    /// `_streaming.py`; unnamed events and `ping` are skipped). Empty data
    /// is left alone: no provider sends it as an event, and failing a
    /// stream on a blank heartbeat would be worse than passing it on.
    pub(super) fn parsed_as_json(&self, name: &[u8], trimmed: &[u8]) -> bool {
        if self.terminated || trimmed.is_empty() {
            return false;
        }
        match self.dialect {
            Dialect::OpenAiChat => trimmed != b"[DONE]",
            Dialect::OpenAiResponses => true,
            Dialect::Anthropic => matches!(
                name,
                b"message_start"
                    | b"message_delta"
                    | b"message_stop"
                    | b"content_block_start"
                    | b"content_block_delta"
                    | b"content_block_stop"
            ),
            Dialect::OllamaNdjson | Dialect::Generic => false,
        }
    }

    /// Follows an OpenAI chat answer to its finish: a chunk with a
    /// `finish_reason`, then (when the chunks say `"usage": null`) the
    /// usage chunk. Content after a finish is another choice still
    /// running: the answer is open again.
    pub(super) fn chat_finish(&mut self, data: &[u8], content: bool) {
        if content {
            self.finish = Finish::Open;
        }
        if has_finish_reason(data) {
            self.finish = match usage_key(data) {
                UsageKey::Null => Finish::AwaitingUsage,
                UsageKey::Absent | UsageKey::Present => Finish::Delivered,
            };
        } else if self.finish == Finish::AwaitingUsage && usage_key(data) == UsageKey::Present {
            self.finish = Finish::Delivered;
        }
    }

    /// A malformed event fails the stream, and the chunk that completes it
    /// is withheld: what the scanner counted of the chunk, and of the
    /// event, is taken back, so that the failure's phase and the
    /// transcript say what the caller was handed.
    pub(super) fn malformed(&mut self, event: &mut ScanEvent, t: Option<&mut Transcript>) {
        let delivered = self.frame_mark.min(self.event_mark);
        self.content_events = delivered;
        self.content_seen = delivered > 0;
        if let Some(t) = t {
            t.withhold_frame();
        }
        event.content = false;
        event.keep_alive = false;
        event.failed = true;
        event.malformed = true;
        self.error = Some(
            Classification::new(ErrorKind::StreamIncomplete)
                .with_provider(self.provider)
                .with_phase(self.phase())
                .with_message("a malformed event in the stream (its data is not JSON)"),
        );
    }
}
