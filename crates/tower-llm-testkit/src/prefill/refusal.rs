//! The 400 a provider answers a prefill it will not continue with.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::api::{Api, Exchange, Family};
use crate::failure::ErrorReply;
use crate::wire::push_json_str;

/// Why a request with a prefill is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The model does not continue a partial answer (the simulator was
    /// told to refuse prefill).
    Unsupported,
    /// Anthropic: the prefill ends in white space.
    TrailingWhitespace,
    /// vLLM: `continue_final_message` with `add_generation_prompt` left true.
    ConflictingFlags,
}

impl Refusal {
    /// The provider's words.
    fn message(self) -> &'static str {
        match self {
            // Anthropic's 400 for the models that refuse prefill; proxies
            // in front of them (GitHub Copilot's) relay it in the OpenAI
            // shape.
            Refusal::Unsupported => {
                "This model does not support assistant message prefill. The conversation must end with a user message."
            }
            Refusal::TrailingWhitespace => {
                "messages: final assistant content cannot end with trailing whitespace"
            }
            Refusal::ConflictingFlags => {
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            }
        }
    }

    /// The 400 in `ex`'s API: OpenAI's `{"error":{message,type,param,code}}`
    /// with `param: "messages"` (vLLM's own `BadRequestError` for its flags),
    /// Anthropic's `{"type":"error","error":{type,message},"request_id"}`,
    /// Ollama's `{"error":"…"}`.
    pub(crate) fn render(self, ex: &Exchange<'_>) -> ErrorReply {
        let message = self.message();
        let mut body = String::with_capacity(200);
        match ex.api.family() {
            Family::OpenAi => {
                body.push_str("{\"error\":{\"message\":");
                push_json_str(&mut body, message);
                body.push_str(match self {
                    Refusal::ConflictingFlags => {
                        ",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}}"
                    }
                    _ => {
                        ",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":null}}"
                    }
                });
            }
            Family::Anthropic => {
                body.push_str(
                    "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":",
                );
                push_json_str(&mut body, message);
                body.push_str("},\"request_id\":");
                push_json_str(&mut body, ex.request_id);
                body.push('}');
            }
            Family::Ollama => {
                body.push_str("{\"error\":");
                push_json_str(&mut body, message);
                body.push('}');
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if ex.api == Api::AnthropicMessages {
            // A bad request is not worth retrying.
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        ErrorReply {
            status: StatusCode::BAD_REQUEST,
            headers,
            body: Bytes::from(body),
        }
    }
}
