//! [`prefill_request`]: the request for the rest of an answer.

use std::fmt;

use bytes::Bytes;
use serde_json::{Map, Value};
use tower_llm_classify::stream::Dialect;

use super::Continuation;

/// The request for the rest of an answer, and what the splice must know
/// about how it was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefill {
    /// The request body to send.
    pub body: Bytes,
    /// White space at the end of the delivered text that the prefill left
    /// out (Anthropic refuses a prefill that ends in white space). The
    /// caller already has it: the splice drops it from the start of the
    /// rest if the rest repeats it.
    pub trimmed: String,
}

/// Why an answer cannot be continued.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrefillError {
    /// The target cannot continue an answer.
    Unsupported,
    /// The request's API has no messages to continue (legacy completions,
    /// Ollama's `/api/generate`, the Responses API, an unknown dialect).
    Dialect,
    /// The body is not a JSON object with a `messages` array.
    NotAChatRequest,
    /// Nothing was delivered: there is nothing to continue (replay instead).
    NothingDelivered,
}

impl fmt::Display for PrefillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrefillError::Unsupported => "the target cannot continue an answer",
            PrefillError::Dialect => "this API has no messages to continue",
            PrefillError::NotAChatRequest => {
                "the body is not a JSON object with a `messages` array"
            }
            PrefillError::NothingDelivered => "nothing was delivered to continue",
        })
    }
}

impl std::error::Error for PrefillError {}

/// The request `body` asking for the rest of an answer of which the caller
/// has `delivered`: the same request with `delivered` appended as the
/// assistant's partial answer, marked as `how` requires.
///
/// The rest of the request (model, sampling, `stream`, `max_tokens`) is
/// sent as it came: a continuation may therefore be longer in total than
/// `max_tokens` allowed the first answer to be, which is documented rather
/// than guessed at (token counts are the provider's). If the request's last
/// message is already the assistant's (the caller prefilled), the delivered
/// text is appended to it. In the Anthropic dialect, white space at the end
/// of the prefill is left out (the API refuses it) and returned in
/// [`Prefill::trimmed`].
///
/// ```
/// use tower_llm_classify::stream::Dialect;
/// use tower_llm_fallback::continuation::{Continuation, prefill_request};
///
/// let body = br#"{"model":"claude-sonnet-4","stream":true,"messages":[{"role":"user","content":"Count"}]}"#;
/// let prefill = prefill_request(body, "1, 2, ", Continuation::TrailingAssistant, Dialect::Anthropic).unwrap();
/// let sent: serde_json::Value = serde_json::from_slice(&prefill.body).unwrap();
/// assert_eq!(sent["messages"][1], serde_json::json!({"role": "assistant", "content": "1, 2,"}));
/// assert_eq!(prefill.trimmed, " ");
/// ```
pub fn prefill_request(
    body: &[u8],
    delivered: &str,
    how: Continuation,
    dialect: Dialect,
) -> Result<Prefill, PrefillError> {
    if !how.is_supported() {
        return Err(PrefillError::Unsupported);
    }
    if !matches!(
        dialect,
        Dialect::OpenAiChat | Dialect::Anthropic | Dialect::OllamaNdjson
    ) {
        return Err(PrefillError::Dialect);
    }
    if delivered.is_empty() {
        return Err(PrefillError::NothingDelivered);
    }
    let mut request: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| PrefillError::NotAChatRequest)?;
    let (text, trimmed) = if dialect == Dialect::Anthropic {
        let kept = delivered.trim_end();
        (kept, &delivered[kept.len()..])
    } else {
        (delivered, "")
    };
    if text.is_empty() {
        // Only white space was delivered, and it cannot be sent: ask for
        // the answer from the start; the splice drops what is repeated.
        return Err(PrefillError::NothingDelivered);
    }
    let Some(Value::Array(messages)) = request.get_mut("messages") else {
        return Err(PrefillError::NotAChatRequest);
    };
    let last_is_assistant = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("assistant");
    if last_is_assistant {
        append_to_last(messages, text)?;
    } else {
        let mut message = Map::new();
        message.insert("role".into(), Value::from("assistant"));
        message.insert("content".into(), Value::from(text));
        messages.push(Value::Object(message));
    }
    match how {
        Continuation::PrefixFlag => {
            if let Some(Value::Object(last)) = messages.last_mut() {
                last.insert("prefix".into(), Value::Bool(true));
            }
        }
        Continuation::ContinueFinalMessage => {
            request.insert("continue_final_message".into(), Value::Bool(true));
            request.insert("add_generation_prompt".into(), Value::Bool(false));
        }
        Continuation::TrailingAssistant | Continuation::Unsupported => {}
    }
    let body = serde_json::to_vec(&request).map_err(|_| PrefillError::NotAChatRequest)?;
    Ok(Prefill {
        body: Bytes::from(body),
        trimmed: trimmed.to_owned(),
    })
}

/// Appends `text` to the caller's own trailing assistant message: a string
/// content, or the last text block of a content array.
fn append_to_last(messages: &mut [Value], text: &str) -> Result<(), PrefillError> {
    let Some(Value::Object(last)) = messages.last_mut() else {
        return Err(PrefillError::NotAChatRequest);
    };
    match last.get_mut("content") {
        Some(Value::String(content)) => {
            content.push_str(text);
            Ok(())
        }
        Some(Value::Array(blocks)) => {
            let text_block = blocks.iter_mut().rev().find_map(|block| {
                (block.get("type").and_then(Value::as_str) == Some("text"))
                    .then(|| block.get_mut("text"))
                    .flatten()
            });
            match text_block {
                Some(Value::String(content)) => {
                    content.push_str(text);
                    Ok(())
                }
                _ => Err(PrefillError::NotAChatRequest),
            }
        }
        _ => Err(PrefillError::NotAChatRequest),
    }
}
