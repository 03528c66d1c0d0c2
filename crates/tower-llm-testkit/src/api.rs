//! The wire formats the simulator speaks, and how a successful answer
//! looks in each, whole or streamed.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use bytes::Bytes;

use crate::embeddings::{self, EmbeddingAsk};
use crate::reply::Tokens;
use crate::responses::{self, ResponseEvents};
use crate::wire::{push_json_escaped, push_json_str, rfc3339, unix_secs};

/// An API the simulator serves, chosen by the request's path.
///
/// | path | API | streaming format |
/// |---|---|---|
/// | `POST /v1/chat/completions` | OpenAI Chat Completions | SSE ending in `data: [DONE]` |
/// | `POST /v1/completions` | OpenAI (legacy) Completions | SSE `text_completion` chunks ending in `data: [DONE]` |
/// | `POST /v1/embeddings` | OpenAI Embeddings | none: one vector per input, floats or base64 |
/// | `POST /v1/responses` | OpenAI Responses | SSE `response.created` … `response.completed` |
/// | `POST /v1/messages` | Anthropic Messages | SSE `message_start` … `message_stop`, with `ping` |
/// | `POST /v1/messages/count_tokens` | Anthropic token counting | none: `{"input_tokens": N}` |
/// | `POST /api/chat` | Ollama chat | NDJSON ending in `"done":true` (streams unless `"stream":false`) |
///
/// The paths without `/v1` are served too for the OpenAI APIs (a base URL
/// that ends in `/v1`, as the SDKs take it, with the API's own path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// OpenAI Chat Completions (and every OpenAI-compatible server).
    OpenAiChat,
    /// OpenAI's legacy Completions (`prompt` in, `choices[].text` out).
    OpenAiCompletions,
    /// OpenAI Embeddings.
    OpenAiEmbeddings,
    /// OpenAI Responses.
    OpenAiResponses,
    /// Anthropic Messages.
    AnthropicMessages,
    /// Anthropic's token counting for a Messages request (the SDKs'
    /// `messages.count_tokens`).
    AnthropicCountTokens,
    /// Ollama's native chat API.
    OllamaChat,
}

/// Whose conventions an API follows: error bodies, headers, statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    OpenAi,
    Anthropic,
    Ollama,
}

impl Api {
    /// The conversation APIs — one of each family: OpenAI chat, Anthropic
    /// Messages, Ollama chat — in a fixed order: what a test that checks
    /// every dialect of a chat stream loops over. [`Api::EVERY`] adds
    /// OpenAI's legacy completions, embeddings and Responses.
    pub const ALL: [Api; 3] = [Api::OpenAiChat, Api::AnthropicMessages, Api::OllamaChat];

    /// Every API the simulator serves, in a fixed order.
    pub const EVERY: [Api; 7] = [
        Api::OpenAiChat,
        Api::OpenAiCompletions,
        Api::OpenAiEmbeddings,
        Api::OpenAiResponses,
        Api::AnthropicMessages,
        Api::AnthropicCountTokens,
        Api::OllamaChat,
    ];

    /// The API served at `path`, if any.
    pub fn from_path(path: &str) -> Option<Api> {
        match path {
            "/v1/chat/completions" | "/chat/completions" => Some(Api::OpenAiChat),
            "/v1/completions" | "/completions" => Some(Api::OpenAiCompletions),
            "/v1/embeddings" | "/embeddings" => Some(Api::OpenAiEmbeddings),
            "/v1/responses" | "/responses" => Some(Api::OpenAiResponses),
            "/v1/messages" => Some(Api::AnthropicMessages),
            "/v1/messages/count_tokens" => Some(Api::AnthropicCountTokens),
            "/api/chat" => Some(Api::OllamaChat),
            _ => None,
        }
    }

    /// The canonical path of this API.
    pub fn path(self) -> &'static str {
        match self {
            Api::OpenAiChat => "/v1/chat/completions",
            Api::OpenAiCompletions => "/v1/completions",
            Api::OpenAiEmbeddings => "/v1/embeddings",
            Api::OpenAiResponses => "/v1/responses",
            Api::AnthropicMessages => "/v1/messages",
            Api::AnthropicCountTokens => "/v1/messages/count_tokens",
            Api::OllamaChat => "/api/chat",
        }
    }

    /// Whose conventions the API follows.
    pub(crate) fn family(self) -> Family {
        match self {
            Api::OpenAiChat
            | Api::OpenAiCompletions
            | Api::OpenAiEmbeddings
            | Api::OpenAiResponses => Family::OpenAi,
            Api::AnthropicMessages | Api::AnthropicCountTokens => Family::Anthropic,
            Api::OllamaChat => Family::Ollama,
        }
    }

    /// Whether the API can stream its answer (embeddings and token counts
    /// cannot: a request's `stream` is ignored).
    pub fn streams(self) -> bool {
        !matches!(self, Api::OpenAiEmbeddings | Api::AnthropicCountTokens)
    }

    /// The `content-type` of a streamed answer.
    pub fn stream_content_type(self) -> &'static str {
        match self.family() {
            Family::OpenAi | Family::Anthropic => "text/event-stream; charset=utf-8",
            Family::Ollama => "application/x-ndjson",
        }
    }

    /// Whether a request that does not say `"stream"` is streamed: Ollama
    /// streams by default, the others do not.
    pub fn streams_by_default(self) -> bool {
        matches!(self, Api::OllamaChat)
    }

    /// The bytes a stalled stream sends to keep the connection open, if this
    /// API has any: an SSE comment for OpenAI's (as OpenRouter and most
    /// OpenAI-compatible proxies do), Anthropic's `ping` event. Ollama has
    /// none: a stalled NDJSON stream is silent.
    pub fn keepalive(self) -> Option<&'static [u8]> {
        match self.family() {
            Family::OpenAi => Some(b": keep-alive\n\n"),
            Family::Anthropic => Some(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"),
            Family::Ollama => None,
        }
    }

    /// The name of the header that carries the request id.
    pub fn request_id_header(self) -> &'static str {
        match self.family() {
            Family::Anthropic => "request-id",
            Family::OpenAi | Family::Ollama => "x-request-id",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Api::OpenAiChat => "openai",
            Api::OpenAiCompletions => "openai-completions",
            Api::OpenAiEmbeddings => "openai-embeddings",
            Api::OpenAiResponses => "openai-responses",
            Api::AnthropicMessages => "anthropic",
            Api::AnthropicCountTokens => "anthropic-count-tokens",
            Api::OllamaChat => "ollama",
        })
    }
}

/// What a reply is about: the request it answers.
#[derive(Clone, Debug)]
pub(crate) struct Exchange<'a> {
    pub(crate) api: Api,
    pub(crate) model: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) now: SystemTime,
    pub(crate) prompt_tokens: u64,
    pub(crate) include_usage: bool,
    /// What an embeddings request asks for (`None` for the other APIs).
    pub(crate) embedding: Option<&'a EmbeddingAsk>,
}

/// A rendered stream: one buffer, and where slow tokens pause in it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Events {
    pub(crate) data: Bytes,
    /// Byte offset of the end of the preamble (0 when there is none): a
    /// first-token delay is spent there, before the first content.
    pub(crate) first_content: usize,
    /// Byte offsets of the content events after the first: a token delay
    /// is spent before each. Everything else (preamble, first content,
    /// closing events) goes out without delay, as providers send it.
    pub(crate) breaks: Vec<usize>,
}

impl Exchange<'_> {
    /// The request id without its `req_` prefix, for `chatcmpl-…`, `cmpl-…`,
    /// `resp_…` and `msg_…` ids.
    pub(crate) fn id(&self) -> &str {
        self.request_id
            .strip_prefix("req_")
            .unwrap_or(self.request_id)
    }
}

/// Writes the events of one streamed answer into one buffer.
#[derive(Debug)]
pub(crate) struct EventWriter<'a> {
    exchange: &'a Exchange<'a>,
    /// The part every OpenAI chunk (or Ollama line) starts with.
    prefix: String,
    buf: String,
    first_content: usize,
    breaks: Vec<usize>,
    content_events: u64,
    /// The Responses API's numbered events.
    responses: ResponseEvents,
}

impl<'a> EventWriter<'a> {
    pub(crate) fn new(exchange: &'a Exchange<'a>, expected_events: usize) -> Self {
        let mut prefix = String::with_capacity(160);
        match exchange.api {
            Api::OpenAiChat => {
                prefix.push_str("data: {\"id\":\"chatcmpl-");
                prefix.push_str(exchange.id());
                let _ = write!(
                    prefix,
                    "\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":",
                    unix_secs(exchange.now)
                );
                push_json_str(&mut prefix, exchange.model);
                prefix.push_str(",\"system_fingerprint\":\"fp_simulated\",\"choices\":[");
            }
            Api::OpenAiCompletions => {
                prefix.push_str("data: {\"id\":\"cmpl-");
                prefix.push_str(exchange.id());
                let _ = write!(
                    prefix,
                    "\",\"object\":\"text_completion\",\"created\":{},\"model\":",
                    unix_secs(exchange.now)
                );
                push_json_str(&mut prefix, exchange.model);
                prefix.push_str(",\"choices\":[");
            }
            Api::OllamaChat => {
                prefix.push_str("{\"model\":");
                push_json_str(&mut prefix, exchange.model);
                prefix.push_str(",\"created_at\":\"");
                prefix.push_str(&rfc3339(exchange.now, 9));
                prefix.push_str("\",\"message\":{\"role\":\"assistant\",\"content\":");
            }
            Api::AnthropicMessages
            | Api::AnthropicCountTokens
            | Api::OpenAiEmbeddings
            | Api::OpenAiResponses => {}
        }
        EventWriter {
            exchange,
            prefix,
            buf: String::with_capacity(256 + expected_events * (prefix_len(exchange.api) + 64)),
            first_content: 0,
            breaks: Vec::with_capacity(expected_events),
            content_events: 0,
            responses: ResponseEvents::default(),
        }
    }

    fn usage_suffix(&mut self) {
        if self.exchange.include_usage {
            self.buf.push_str(",\"usage\":null");
        }
    }

    /// What comes before the first content: OpenAI's role chunk, Anthropic's
    /// `message_start`, `content_block_start` and first `ping`. Ollama has none.
    pub(crate) fn preamble(&mut self) {
        let ex = self.exchange;
        match ex.api {
            Api::OpenAiChat => {
                self.buf.push_str(&self.prefix);
                self.buf.push_str(
                    "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]",
                );
                self.usage_suffix();
                self.buf.push_str("}\n\n");
            }
            Api::AnthropicMessages => {
                self.buf.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_");
                self.buf.push_str(ex.id());
                self.buf
                    .push_str("\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
                push_json_str(&mut self.buf, ex.model);
                let _ = write!(
                    self.buf,
                    ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}\n\n",
                    ex.prompt_tokens
                );
                self.buf.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
                self.buf
                    .push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
            }
            Api::OpenAiResponses => self.responses.preamble(&mut self.buf, ex),
            // Legacy completions start with text; embeddings never stream.
            Api::OpenAiCompletions
            | Api::OpenAiEmbeddings
            | Api::AnthropicCountTokens
            | Api::OllamaChat => {}
        }
        self.first_content = self.buf.len();
    }

    /// One content event carrying `token`.
    pub(crate) fn content(&mut self, token: &str) {
        if self.content_events > 0 {
            self.breaks.push(self.buf.len());
        }
        self.content_events += 1;
        match self.exchange.api {
            Api::OpenAiChat => {
                self.buf.push_str(&self.prefix);
                self.buf.push_str("{\"index\":0,\"delta\":{\"content\":");
                push_json_str(&mut self.buf, token);
                self.buf
                    .push_str("},\"logprobs\":null,\"finish_reason\":null}]");
                self.usage_suffix();
                self.buf.push_str("}\n\n");
            }
            Api::AnthropicMessages => {
                self.buf.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
                push_json_str(&mut self.buf, token);
                self.buf.push_str("}}\n\n");
            }
            Api::OpenAiCompletions => {
                self.buf.push_str(&self.prefix);
                self.buf.push_str("{\"text\":");
                push_json_str(&mut self.buf, token);
                self.buf
                    .push_str(",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]");
                self.usage_suffix();
                self.buf.push_str("}\n\n");
            }
            Api::OpenAiResponses => self.responses.delta(&mut self.buf, self.exchange, token),
            Api::OpenAiEmbeddings | Api::AnthropicCountTokens => {}
            Api::OllamaChat => {
                self.buf.push_str(&self.prefix);
                push_json_str(&mut self.buf, token);
                self.buf.push_str("},\"done\":false}\n");
            }
        }
    }

    /// The events that end a complete stream: finish reason, usage and the
    /// terminal event (`[DONE]`, `message_stop`, `"done":true`).
    pub(crate) fn finish(&mut self) {
        let ex = self.exchange;
        let completion = self.content_events;
        match ex.api {
            Api::OpenAiChat | Api::OpenAiCompletions => {
                // The last choice (a chat delta, or a completion's text),
                // the usage chunk when asked for, then `[DONE]`.
                let last_choice = if ex.api == Api::OpenAiChat {
                    "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]"
                } else {
                    "{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]"
                };
                self.buf.push_str(&self.prefix);
                self.buf.push_str(last_choice);
                self.usage_suffix();
                self.buf.push_str("}\n\n");
                if ex.include_usage {
                    self.buf.push_str(&self.prefix);
                    self.buf.push(']');
                    push_usage_openai(&mut self.buf, ex.prompt_tokens, completion);
                    self.buf.push_str("}\n\n");
                }
                self.buf.push_str("data: [DONE]\n\n");
            }
            Api::OpenAiResponses => self.responses.finish(&mut self.buf, ex, completion),
            Api::OpenAiEmbeddings | Api::AnthropicCountTokens => {}
            Api::AnthropicMessages => {
                self.buf.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
                let _ = write!(
                    self.buf,
                    "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{completion}}}}}\n\n"
                );
                self.buf
                    .push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            }
            Api::OllamaChat => {
                self.buf.push_str(&self.prefix);
                self.buf
                    .push_str("\"\"},\"done_reason\":\"stop\",\"done\":true");
                push_ollama_timings(&mut self.buf, ex.prompt_tokens, completion);
                self.buf.push_str("}\n");
            }
        }
    }

    /// Appends an already rendered event (an in-band error).
    pub(crate) fn raw(&mut self, event: &str) {
        self.buf.push_str(event);
    }

    pub(crate) fn into_events(self) -> Events {
        Events {
            data: Bytes::from(self.buf),
            first_content: self.first_content,
            breaks: self.breaks,
        }
    }
}

fn prefix_len(api: Api) -> usize {
    match api {
        Api::OpenAiChat | Api::OpenAiCompletions => 170,
        Api::OpenAiResponses => 200,
        Api::AnthropicMessages
        | Api::AnthropicCountTokens
        | Api::OllamaChat
        | Api::OpenAiEmbeddings => 110,
    }
}

fn push_usage_openai(buf: &mut String, prompt: u64, completion: u64) {
    let _ = write!(
        buf,
        ",\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}",
        prompt + completion
    );
}

fn push_ollama_timings(buf: &mut String, prompt: u64, completion: u64) {
    // Plausible timings: 1 ms per prompt token, 20 ms per generated token.
    let prompt_ns = prompt * 1_000_000;
    let eval_ns = completion * 20_000_000;
    let _ = write!(
        buf,
        ",\"total_duration\":{},\"load_duration\":1000000,\"prompt_eval_count\":{prompt},\"prompt_eval_duration\":{prompt_ns},\"eval_count\":{completion},\"eval_duration\":{eval_ns}",
        prompt_ns + eval_ns + 1_000_000
    );
}

/// The whole (non-streamed) answer carrying `tokens` as its text.
pub(crate) fn full_body(exchange: &Exchange<'_>, tokens: Tokens<'_>) -> Bytes {
    let text_len: usize = tokens.clone().map(str::len).sum();
    let mut buf = String::with_capacity(512 + text_len);
    let completion = tokens.len() as u64;
    let text = Concat(tokens);
    match exchange.api {
        Api::OpenAiChat => {
            buf.push_str("{\"id\":\"chatcmpl-");
            buf.push_str(exchange.id());
            let _ = write!(
                buf,
                "\",\"object\":\"chat.completion\",\"created\":{},\"model\":",
                unix_secs(exchange.now)
            );
            push_json_str(&mut buf, exchange.model);
            buf.push_str(
                ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
            );
            text.push_json(&mut buf);
            buf.push_str(",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}]");
            push_usage_openai(&mut buf, exchange.prompt_tokens, completion);
            buf.push_str(",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_simulated\"}");
        }
        Api::OpenAiCompletions => {
            buf.push_str("{\"id\":\"cmpl-");
            buf.push_str(exchange.id());
            let _ = write!(
                buf,
                "\",\"object\":\"text_completion\",\"created\":{},\"model\":",
                unix_secs(exchange.now)
            );
            push_json_str(&mut buf, exchange.model);
            buf.push_str(",\"choices\":[{\"text\":");
            text.push_json(&mut buf);
            buf.push_str(",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]");
            push_usage_openai(&mut buf, exchange.prompt_tokens, completion);
            buf.push('}');
        }
        Api::OpenAiEmbeddings => {
            let ask = exchange.embedding.cloned().unwrap_or_default();
            buf = embeddings::body(exchange, &ask);
        }
        Api::AnthropicCountTokens => {
            // What Anthropic's `count_tokens` answers: the request's input
            // tokens (here estimated, as for every answer's usage).
            let _ = write!(buf, "{{\"input_tokens\":{}}}", exchange.prompt_tokens);
        }
        Api::OpenAiResponses => {
            let mut whole = String::with_capacity(text_len);
            for token in text.0.clone() {
                whole.push_str(token);
            }
            responses::push_response(
                &mut buf,
                exchange,
                responses::Status::Completed,
                Some(&whole),
                completion,
            );
        }
        Api::AnthropicMessages => {
            buf.push_str("{\"id\":\"msg_");
            buf.push_str(exchange.id());
            buf.push_str("\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
            push_json_str(&mut buf, exchange.model);
            buf.push_str(",\"content\":[{\"type\":\"text\",\"text\":");
            text.push_json(&mut buf);
            let _ = write!(
                buf,
                "}}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":{completion}}}}}",
                exchange.prompt_tokens
            );
        }
        Api::OllamaChat => {
            buf.push_str("{\"model\":");
            push_json_str(&mut buf, exchange.model);
            buf.push_str(",\"created_at\":\"");
            buf.push_str(&rfc3339(exchange.now, 9));
            buf.push_str("\",\"message\":{\"role\":\"assistant\",\"content\":");
            text.push_json(&mut buf);
            buf.push_str("},\"done_reason\":\"stop\",\"done\":true");
            push_ollama_timings(&mut buf, exchange.prompt_tokens, completion);
            buf.push('}');
        }
    }
    Bytes::from(buf)
}

/// Tokens written as one JSON string without joining them first.
struct Concat<'a>(Tokens<'a>);

impl Concat<'_> {
    fn push_json(&self, buf: &mut String) {
        // Escaping token by token gives the same bytes as escaping the join:
        // escapes never span a token boundary.
        buf.push('"');
        for token in self.0.clone() {
            push_json_escaped(buf, token);
        }
        buf.push('"');
    }
}
