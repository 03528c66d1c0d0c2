//! Prefill: a request that ends with the start of the assistant's answer
//! asks the model for the rest of it.
//!
//! Providers that continue a partial answer are asked in one of three ways,
//! all of which the simulator reads in every API it serves:
//!
//! - the conversation ends with an assistant message, taken as the start of
//!   the answer: Anthropic ("Prefill Claude's response",
//!   <https://platform.claude.com/docs/en/build-with-claude/prompt-engineering/prefill-claudes-response>,
//!   which also says a prefill cannot end in white space), Ollama's
//!   `/api/chat`, llama.cpp's server, LM Studio;
//! - that message also carries `"prefix": true`: DeepSeek ("Chat Prefix
//!   Completion (Beta)", <https://api-docs.deepseek.com/guides/chat_prefix_completion>)
//!   and Mistral (`AssistantMessage.prefix` in its chat completion API
//!   reference, <https://docs.mistral.ai/api/>);
//! - vLLM's chat template flags at the top level,
//!   `"continue_final_message": true` with `"add_generation_prompt": false`
//!   (vLLM's `ChatCompletionRequest.check_generation_prompt` refuses the
//!   first with the second, which is true by default).
//!
//! OpenAI's own API has no prefill: a trailing assistant message is history
//! and the model writes a new answer ([`PrefillMode::Ignore`]).

mod parse;
mod refusal;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::api::{Api, Family};
use crate::reply::ReplyText;

pub(crate) use parse::LastMessage;
pub(crate) use refusal::Refusal;

/// What a simulator does with a request that carries a prefill (the start
/// of the assistant's answer, for the model to continue).
///
/// Set for the whole simulator with
/// [`SimulatorBuilder::prefill`](crate::SimulatorBuilder::prefill) (or per
/// API with [`prefill_for`](crate::SimulatorBuilder::prefill_for)), and per
/// request by a fault's [`with_prefill`](crate::Fault::with_prefill)
/// (`+prefill=refuse` in a plan's text).
///
/// ```
/// use tower_llm_testkit::PrefillMode;
///
/// assert_eq!(PrefillMode::default(), PrefillMode::Continue);
/// assert_eq!("refuse".parse::<PrefillMode>().unwrap(), PrefillMode::Refuse);
/// assert_eq!(PrefillMode::Ignore.to_string(), "ignore");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrefillMode {
    /// Answer with the rest of the reply after the prefill, as Anthropic,
    /// Ollama, llama.cpp, DeepSeek, Mistral and vLLM do. When the reply
    /// does not start with the prefill, the answer is the whole reply (a
    /// model continues from whatever text it is given). Anthropic's rule
    /// that a prefill cannot end in white space is enforced (400
    /// `invalid_request_error`), as is vLLM's that `continue_final_message`
    /// needs `add_generation_prompt: false`. The default, in every API, so
    /// that a continuation can be tested against an OpenAI-compatible
    /// target.
    #[default]
    Continue,
    /// Treat the trailing assistant message as history and answer with the
    /// whole reply, as OpenAI's own API does (it has no prefill): the
    /// answer then repeats what the prefill already said.
    Ignore,
    /// Refuse any request that carries a prefill with the provider's 400
    /// (`invalid_request_error`, "This model does not support assistant
    /// message prefill. The conversation must end with a user message.",
    /// Anthropic's words for the models that refuse it).
    Refuse,
}

impl fmt::Display for PrefillMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PrefillMode::Continue => "continue",
            PrefillMode::Ignore => "ignore",
            PrefillMode::Refuse => "refuse",
        })
    }
}

impl FromStr for PrefillMode {
    type Err = String;

    /// `continue`, `ignore` or `refuse`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "continue" => Ok(PrefillMode::Continue),
            "ignore" => Ok(PrefillMode::Ignore),
            "refuse" => Ok(PrefillMode::Refuse),
            other => Err(format!(
                "unknown prefill mode `{other}` (expected continue, ignore or refuse)"
            )),
        }
    }
}

/// How a request marked its last message as the start of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrefillMarker {
    /// The conversation ends with an assistant message, nothing more
    /// (Anthropic, Ollama, llama.cpp, LM Studio).
    TrailingAssistant,
    /// That message carries `"prefix": true` (DeepSeek, Mistral).
    PrefixFlag,
    /// `"continue_final_message": true` at the top level (vLLM).
    ContinueFinalMessage,
}

/// The start of the answer a request carried, as the simulator read it
/// (see [`RecordedRequest::prefill`](crate::RecordedRequest::prefill)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedPrefill {
    /// The text of the trailing assistant message (its text blocks joined,
    /// when its content is a list of blocks).
    pub text: String,
    /// How the request marked it.
    pub marker: PrefillMarker,
}

/// The prefill of one request, borrowed from its body.
#[derive(Debug)]
pub(crate) struct RequestPrefill<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) marker: PrefillMarker,
}

impl RequestPrefill<'_> {
    pub(crate) fn to_recorded(&self) -> RecordedPrefill {
        RecordedPrefill {
            text: self.text.clone().into_owned(),
            marker: self.marker,
        }
    }
}

/// The top-level fields of a request that bear on prefill.
#[derive(Debug, Default)]
pub(crate) struct PrefillFields<'a> {
    pub(crate) last: LastMessage<'a>,
    pub(crate) continue_final_message: Option<bool>,
    pub(crate) add_generation_prompt: Option<bool>,
}

impl<'a> PrefillFields<'a> {
    /// The prefill the request carries: a last message from the assistant
    /// with text content.
    pub(crate) fn prefill(&mut self) -> Option<RequestPrefill<'a>> {
        let message = self.last.0.as_mut()?;
        if message.role.as_deref() != Some("assistant") {
            return None;
        }
        let text = message.content.take()?.0;
        let marker = if message.prefix == Some(true) {
            PrefillMarker::PrefixFlag
        } else if self.continue_final_message == Some(true) {
            PrefillMarker::ContinueFinalMessage
        } else {
            PrefillMarker::TrailingAssistant
        };
        Some(RequestPrefill { text, marker })
    }

    /// vLLM's rule: `continue_final_message` cannot go with
    /// `add_generation_prompt`, which is true unless the request says not.
    fn flags_conflict(&self) -> bool {
        self.continue_final_message == Some(true) && self.add_generation_prompt != Some(false)
    }
}

/// The simulator's prefill mode of each API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PrefillModes {
    openai: PrefillMode,
    anthropic: PrefillMode,
    ollama: PrefillMode,
}

impl PrefillModes {
    pub(crate) fn get(&self, api: Api) -> PrefillMode {
        match api.family() {
            Family::OpenAi => self.openai,
            Family::Anthropic => self.anthropic,
            Family::Ollama => self.ollama,
        }
    }

    pub(crate) fn set(&mut self, api: Api, mode: PrefillMode) {
        match api.family() {
            Family::OpenAi => self.openai = mode,
            Family::Anthropic => self.anthropic = mode,
            Family::Ollama => self.ollama = mode,
        }
    }
}

/// Where the answer to a request starts in the reply (0: the whole reply),
/// or why the request is refused.
pub(crate) fn answer_start(
    api: Api,
    mode: PrefillMode,
    fields: &PrefillFields<'_>,
    prefill: Option<&RequestPrefill<'_>>,
    reply: &ReplyText,
) -> Result<usize, Refusal> {
    if mode != PrefillMode::Continue {
        return match (mode, prefill) {
            (PrefillMode::Refuse, Some(_)) => Err(Refusal::Unsupported),
            _ => Ok(0),
        };
    }
    // vLLM is an OpenAI-compatible server: its flags mean nothing elsewhere.
    if api == Api::OpenAiChat && fields.flags_conflict() {
        return Err(Refusal::ConflictingFlags);
    }
    let Some(prefill) = prefill else {
        return Ok(0);
    };
    if api == Api::AnthropicMessages && prefill.text.ends_with(char::is_whitespace) {
        return Err(Refusal::TrailingWhitespace);
    }
    Ok(reply.start_after(&prefill.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> PrefillFields<'_> {
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(borrow, default)]
            messages: LastMessage<'a>,
            #[serde(default)]
            continue_final_message: Option<bool>,
            #[serde(default)]
            add_generation_prompt: Option<bool>,
        }
        let body: Body<'_> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        PrefillFields {
            last: body.messages,
            continue_final_message: body.continue_final_message,
            add_generation_prompt: body.add_generation_prompt,
        }
    }

    fn start(api: Api, mode: PrefillMode, body: &str) -> Result<usize, Refusal> {
        let reply = ReplyText::new(["Hello ", "world."]);
        let mut fields = fields(body);
        let prefill = fields.prefill();
        answer_start(api, mode, &fields, prefill.as_ref(), &reply)
    }

    #[test]
    fn each_marker_is_read() {
        let trailing =
            r#"{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hel"}]}"#;
        let prefix = r#"{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hel","prefix":true}]}"#;
        let vllm = r#"{"continue_final_message":true,"add_generation_prompt":false,"messages":[{"role":"assistant","content":"Hel"}]}"#;
        for (body, marker) in [
            (trailing, PrefillMarker::TrailingAssistant),
            (prefix, PrefillMarker::PrefixFlag),
            (vllm, PrefillMarker::ContinueFinalMessage),
        ] {
            let prefill = fields(body).prefill().unwrap();
            assert_eq!(prefill.text, "Hel");
            assert_eq!(prefill.marker, marker);
        }
    }

    #[test]
    fn a_conversation_that_ends_with_the_user_has_no_prefill() {
        let body =
            r#"{"messages":[{"role":"assistant","content":"Hi"},{"role":"user","content":"Hel"}]}"#;
        assert!(fields(body).prefill().is_none());
        assert!(fields(r#"{"messages":[]}"#).prefill().is_none());
        assert!(fields(r#"{"model":"m"}"#).prefill().is_none());
        // A tool call has no text to continue.
        let tool_call = r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[]}]}"#;
        assert!(fields(tool_call).prefill().is_none());
    }

    #[test]
    fn text_blocks_are_joined() {
        let body = r#"{"messages":[{"role":"assistant","content":[{"type":"text","text":"Hel"},{"type":"image","source":{}},{"type":"text","text":"lo"}]}]}"#;
        assert_eq!(fields(body).prefill().unwrap().text, "Hello");
        let escaped = r#"{"messages":[{"role":"assistant","content":"a\"b\u00e9"}]}"#;
        assert_eq!(fields(escaped).prefill().unwrap().text, "a\"bé");
    }

    #[test]
    fn the_answer_starts_after_a_prefill_the_reply_starts_with() {
        let body = r#"{"messages":[{"role":"assistant","content":"Hello wo"}]}"#;
        assert_eq!(start(Api::OpenAiChat, PrefillMode::Continue, body), Ok(8));
        assert_eq!(start(Api::OllamaChat, PrefillMode::Continue, body), Ok(8));
        assert_eq!(start(Api::OpenAiChat, PrefillMode::Ignore, body), Ok(0));
        assert_eq!(
            start(Api::OpenAiChat, PrefillMode::Refuse, body),
            Err(Refusal::Unsupported)
        );
        let other = r#"{"messages":[{"role":"assistant","content":"Goodbye"}]}"#;
        assert_eq!(start(Api::OpenAiChat, PrefillMode::Continue, other), Ok(0));
    }

    #[test]
    fn anthropic_refuses_trailing_white_space_and_the_others_do_not() {
        let body = r#"{"messages":[{"role":"assistant","content":"Hello "}]}"#;
        assert_eq!(
            start(Api::AnthropicMessages, PrefillMode::Continue, body),
            Err(Refusal::TrailingWhitespace)
        );
        assert_eq!(start(Api::OpenAiChat, PrefillMode::Continue, body), Ok(6));
        let newline = r#"{"messages":[{"role":"assistant","content":"Hello\n"}]}"#;
        assert_eq!(
            start(Api::AnthropicMessages, PrefillMode::Continue, newline),
            Err(Refusal::TrailingWhitespace)
        );
    }

    #[test]
    fn vllm_refuses_continue_final_message_with_a_generation_prompt() {
        let body =
            r#"{"continue_final_message":true,"messages":[{"role":"assistant","content":"Hel"}]}"#;
        assert_eq!(
            start(Api::OpenAiChat, PrefillMode::Continue, body),
            Err(Refusal::ConflictingFlags)
        );
        let both = r#"{"continue_final_message":true,"add_generation_prompt":true,"messages":[]}"#;
        assert_eq!(
            start(Api::OpenAiChat, PrefillMode::Continue, both),
            Err(Refusal::ConflictingFlags)
        );
    }

    #[test]
    fn a_refusing_mode_lets_requests_without_prefill_through() {
        let body = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;
        assert_eq!(
            start(Api::AnthropicMessages, PrefillMode::Refuse, body),
            Ok(0)
        );
    }
}
