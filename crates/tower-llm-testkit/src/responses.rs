//! The OpenAI Responses API's answer: the `response` object, and the typed
//! events of its stream (`response.created` … `response.output_text.delta`
//! … `response.completed`), each with its `sequence_number`, as
//! platform.openai.com's *Streaming responses* guide lists them.

use std::fmt::Write as _;

use crate::api::Exchange;
use crate::wire::{push_json_str, unix_secs};

/// Where a response is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    InProgress,
    Completed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
        }
    }
}

/// The id of the answer's one message item.
fn push_item_id(buf: &mut String, ex: &Exchange<'_>) {
    buf.push_str("\"msg_");
    buf.push_str(ex.id());
    buf.push('"');
}

/// The message item carrying `text` (`None`: still empty, in progress).
fn push_message_item(buf: &mut String, ex: &Exchange<'_>, text: Option<&str>) {
    buf.push_str("{\"id\":");
    push_item_id(buf, ex);
    buf.push_str(",\"type\":\"message\",\"status\":");
    buf.push_str(if text.is_some() {
        "\"completed\""
    } else {
        "\"in_progress\""
    });
    buf.push_str(",\"role\":\"assistant\",\"content\":[");
    if let Some(text) = text {
        push_output_text(buf, text);
    }
    buf.push_str("]}");
}

fn push_output_text(buf: &mut String, text: &str) {
    buf.push_str("{\"type\":\"output_text\",\"text\":");
    push_json_str(buf, text);
    buf.push_str(",\"annotations\":[],\"logprobs\":[]}");
}

/// The `response` object. `text` is the answer's (a completed response),
/// `output_tokens` what it used.
pub(crate) fn push_response(
    buf: &mut String,
    ex: &Exchange<'_>,
    status: Status,
    text: Option<&str>,
    output_tokens: u64,
) {
    buf.push_str("{\"id\":\"resp_");
    buf.push_str(ex.id());
    let _ = write!(
        buf,
        "\",\"object\":\"response\",\"created_at\":{},\"status\":\"{}\",\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":null,\"model\":",
        unix_secs(ex.now),
        status.as_str()
    );
    push_json_str(buf, ex.model);
    buf.push_str(",\"output\":[");
    if let Some(text) = text {
        push_message_item(buf, ex, Some(text));
    }
    buf.push_str("],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":false,\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":");
    if status == Status::Completed {
        let input = ex.prompt_tokens;
        let _ = write!(
            buf,
            "{{\"input_tokens\":{input},\"input_tokens_details\":{{\"cached_tokens\":0}},\"output_tokens\":{output_tokens},\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":{}}}",
            input + output_tokens,
        );
    } else {
        buf.push_str("null");
    }
    buf.push_str(",\"user\":null,\"metadata\":{}}");
}

/// Writes the stream's events, numbering them.
#[derive(Debug, Default)]
pub(crate) struct ResponseEvents {
    sequence: u64,
    /// The text sent so far (the `done` events repeat it whole).
    text: String,
}

impl ResponseEvents {
    /// `event: <name>` and the data's opening, up to its own fields.
    fn open(&mut self, buf: &mut String, name: &str) {
        let _ = write!(
            buf,
            "event: {name}\ndata: {{\"type\":\"{name}\",\"sequence_number\":{}",
            self.sequence
        );
        self.sequence += 1;
    }

    /// `response.created`, `response.in_progress`, the message item and
    /// its text part added.
    pub(crate) fn preamble(&mut self, buf: &mut String, ex: &Exchange<'_>) {
        for name in ["response.created", "response.in_progress"] {
            self.open(buf, name);
            buf.push_str(",\"response\":");
            push_response(buf, ex, Status::InProgress, None, 0);
            buf.push_str("}\n\n");
        }
        self.open(buf, "response.output_item.added");
        buf.push_str(",\"output_index\":0,\"item\":");
        push_message_item(buf, ex, None);
        buf.push_str("}\n\n");
        self.open(buf, "response.content_part.added");
        buf.push_str(",\"item_id\":");
        push_item_id(buf, ex);
        buf.push_str(",\"output_index\":0,\"content_index\":0,\"part\":");
        push_output_text(buf, "");
        buf.push_str("}\n\n");
    }

    /// One `response.output_text.delta` carrying `token`.
    pub(crate) fn delta(&mut self, buf: &mut String, ex: &Exchange<'_>, token: &str) {
        self.text.push_str(token);
        self.open(buf, "response.output_text.delta");
        buf.push_str(",\"item_id\":");
        push_item_id(buf, ex);
        buf.push_str(",\"output_index\":0,\"content_index\":0,\"delta\":");
        push_json_str(buf, token);
        buf.push_str(",\"logprobs\":[]}\n\n");
    }

    /// The text, part and item done, then `response.completed`.
    pub(crate) fn finish(&mut self, buf: &mut String, ex: &Exchange<'_>, output_tokens: u64) {
        let text = std::mem::take(&mut self.text);
        self.open(buf, "response.output_text.done");
        buf.push_str(",\"item_id\":");
        push_item_id(buf, ex);
        buf.push_str(",\"output_index\":0,\"content_index\":0,\"text\":");
        push_json_str(buf, &text);
        buf.push_str(",\"logprobs\":[]}\n\n");
        self.open(buf, "response.content_part.done");
        buf.push_str(",\"item_id\":");
        push_item_id(buf, ex);
        buf.push_str(",\"output_index\":0,\"content_index\":0,\"part\":");
        push_output_text(buf, &text);
        buf.push_str("}\n\n");
        self.open(buf, "response.output_item.done");
        buf.push_str(",\"output_index\":0,\"item\":");
        push_message_item(buf, ex, Some(&text));
        buf.push_str("}\n\n");
        self.open(buf, "response.completed");
        buf.push_str(",\"response\":");
        push_response(buf, ex, Status::Completed, Some(&text), output_tokens);
        buf.push_str("}\n\n");
    }
}
