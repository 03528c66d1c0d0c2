//! Continuation: asking a target for *the rest* of an answer that broke
//! after content reached the caller, and splicing the rest into the
//! caller's stream so that the caller sees one answer.
//!
//! ```
//! use tower_llm_classify::stream::Dialect;
//! use tower_llm_fallback::continuation::{Continuation, Envelope, Splice, prefill_request};
//!
//! // The caller asked for a stream and got "Hello, wor" before it broke.
//! let request = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
//! let prefill = prefill_request(request, "Hello, wor", Continuation::TrailingAssistant, Dialect::OpenAiChat)
//!     .unwrap();
//! // The same request, the delivered text as the assistant's partial answer.
//! let sent: serde_json::Value = serde_json::from_slice(&prefill.body).unwrap();
//! assert_eq!(sent["messages"][1]["content"], "Hello, wor");
//!
//! // The target's answer is the rest; the caller keeps the envelope it saw first.
//! let envelope = Envelope { id: Some("chatcmpl-first".into()), ..Envelope::default() };
//! let mut splice = Splice::new(Dialect::OpenAiChat, envelope, prefill.trimmed).unwrap();
//! let mut out = Vec::new();
//! splice.feed(b"data: {\"id\":\"chatcmpl-second\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n", &mut out).unwrap();
//! splice.feed(b"data: {\"id\":\"chatcmpl-second\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ld!\"}}]}\n\n", &mut out).unwrap();
//! splice.finish(&mut out).unwrap();
//! let seen = String::from_utf8(out).unwrap();
//! assert!(!seen.contains("role"), "no second role chunk");
//! assert!(seen.contains("chatcmpl-first") && seen.contains("ld!"));
//! ```
//!
//! # Why a prefill
//!
//! A stream cut after 40 of 60 tokens is most of an answer. Replaying the
//! request from the start would send the caller the first 40 tokens twice;
//! ending with an error loses them. Providers that accept a trailing
//! assistant message continue it (Anthropic's "prefill Claude's response",
//! Ollama, llama.cpp and LM Studio; DeepSeek's "chat prefix completion" and
//! Mistral with `"prefix": true` on that message; vLLM with
//! `continue_final_message` and no generation prompt). Asked with the text
//! the caller already has as that message, a target answers with what
//! comes after it, and the splice hands it on in the envelope the caller
//! saw first: one `id`, one role chunk, one terminal event. OpenAI's own
//! API has no prefill: a target there cannot continue, and a broken stream
//! ends as it does without continuation.
//!
//! The splice is only as good as the model's continuation: a continued
//! answer is a plausible rest of the text, not the bytes the first target
//! would have sent. Text of one choice is continued; a tool call in
//! progress, several choices or log probabilities cannot be, and end as
//! they do today.
//!
//! # Usage
//!
//! Every segment of a continued answer is billed. The last usage block the
//! caller reads (OpenAI's `usage` chunk, Anthropic's `message_delta`,
//! Ollama's `done` line) is the sum of what each segment reported, as far
//! as it is known: a segment that broke before its own usage block
//! reported only what its dialect sends at the start — Anthropic's input
//! tokens, in `message_start` — so a broken OpenAI or Ollama segment adds
//! nothing, and the tokens it streamed before it broke are not counted.
//! Anthropic's `message_delta` then carries `input_tokens` for the whole
//! answer (the SDKs take a delta's `input_tokens` as the message's).

mod prefill;
pub(crate) mod resume;
mod splice;
#[cfg(test)]
mod tests;
mod transcript;

use tower_llm_classify::Provider;

pub use prefill::{Prefill, PrefillError, prefill_request};
pub use resume::ContinuationReport;
pub use splice::{Envelope, Splice, SpliceError};

/// How a target continues a partial answer, if it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Continuation {
    /// A trailing assistant message is continued as it is: Anthropic
    /// Messages, Ollama's `/api/chat`, llama.cpp, LM Studio.
    TrailingAssistant,
    /// The trailing assistant message marked `"prefix": true`: DeepSeek's
    /// chat prefix completion, Mistral.
    PrefixFlag,
    /// vLLM's chat template flags: `continue_final_message: true` and
    /// `add_generation_prompt: false` at the top level.
    ContinueFinalMessage,
    /// The target cannot continue an answer (OpenAI's API has no prefill).
    Unsupported,
}

impl Continuation {
    /// What a provider is known to support. OpenAI-compatible servers and
    /// unknown providers are assumed not to: a target that can is marked
    /// so in its settings.
    pub const fn for_provider(provider: Provider) -> Continuation {
        match provider {
            Provider::Anthropic | Provider::Ollama | Provider::LlamaCpp | Provider::LmStudio => {
                Continuation::TrailingAssistant
            }
            Provider::DeepSeek | Provider::Mistral => Continuation::PrefixFlag,
            Provider::Vllm => Continuation::ContinueFinalMessage,
            _ => Continuation::Unsupported,
        }
    }

    /// Whether a target with this capability can be asked for the rest.
    pub const fn is_supported(self) -> bool {
        !matches!(self, Continuation::Unsupported)
    }
}
