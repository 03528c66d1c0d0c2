//! The stream fixtures (real provider stream captures under
//! `tests/fixtures/`), and what a caller's SDK makes of one: its text,
//! read with serde_json the way the official SDKs read events.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use tower_llm_classify::Provider;
use tower_llm_classify::stream::{Dialect, Framing};

/// A streamed fixture.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamFixture {
    #[serde(skip)]
    pub(crate) name: String,
    pub(crate) provider: Provider,
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) body: String,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
}

impl StreamFixture {
    pub(crate) fn dialect(&self) -> Dialect {
        let uri: http::Uri = self.url.parse().unwrap();
        Dialect::from_path(uri.path())
    }

    pub(crate) fn framing(&self) -> Framing {
        let value = http::HeaderValue::from_str(&self.headers["content-type"]).unwrap();
        Framing::from_header_value(&value).unwrap()
    }
}

/// Every streamed fixture, by name.
pub(crate) fn stream_fixtures() -> Vec<StreamFixture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut fixtures: Vec<StreamFixture> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut fixture: StreamFixture = toml::from_str(&text).unwrap();
            fixture.name = path.file_name().unwrap().to_string_lossy().into_owned();
            fixture
        })
        .filter(|fixture| fixture.stream)
        .collect();
    fixtures.sort_by(|a, b| a.name.cmp(&b.name));
    fixtures
}

/// The SSE events of `body` as an SDK's decoder dispatches them: the
/// event name and the `data:` lines joined with newlines, at each blank
/// line (an event without its blank line at the end is not dispatched).
pub(crate) fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if !data.is_empty() {
                events.push((name.take(), data.join("\n")));
            }
            name = None;
            data.clear();
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    events
}

/// The text a caller's SDK accumulates from a stream of `dialect`:
/// choice 0's `delta.content` (OpenAI), the first text block's
/// `text_delta`s (Anthropic, named events only), `message.content` or
/// `response` (Ollama, one JSON value a line).
pub(crate) fn sdk_text(dialect: Dialect, body: &str) -> String {
    let mut text = String::new();
    match dialect {
        Dialect::OpenAiChat => {
            for (_, data) in sse_events(body) {
                if data.starts_with("[DONE]") {
                    break;
                }
                let chunk: Value = serde_json::from_str(&data).unwrap();
                for choice in chunk["choices"].as_array().into_iter().flatten() {
                    if choice["index"].as_u64().unwrap_or(0) != 0 {
                        continue;
                    }
                    if let Some(content) = choice["delta"]["content"].as_str() {
                        text.push_str(content);
                    }
                    if let Some(content) = choice["text"].as_str() {
                        text.push_str(content);
                    }
                }
            }
        }
        Dialect::Anthropic => {
            let mut text_block = None;
            for (name, data) in sse_events(body) {
                let event: Value = match name.as_deref() {
                    Some(
                        "content_block_start"
                        | "content_block_delta"
                        | "message_start"
                        | "message_delta"
                        | "message_stop"
                        | "content_block_stop",
                    ) => serde_json::from_str(&data).unwrap(),
                    _ => continue,
                };
                match name.as_deref() {
                    Some("content_block_start")
                        if event["content_block"]["type"] == "text" && text_block.is_none() =>
                    {
                        text_block = event["index"].as_u64();
                        text.push_str(event["content_block"]["text"].as_str().unwrap_or(""));
                    }
                    Some("content_block_delta")
                        if event["delta"]["type"] == "text_delta"
                            && event["index"].as_u64() == text_block =>
                    {
                        text.push_str(event["delta"]["text"].as_str().unwrap());
                    }
                    _ => {}
                }
            }
        }
        Dialect::OllamaNdjson => {
            for line in body.lines().filter(|line| !line.trim().is_empty()) {
                let line: Value = serde_json::from_str(line).unwrap();
                if line.get("error").is_some() {
                    break;
                }
                if let Some(content) = line["message"]["content"].as_str() {
                    text.push_str(content);
                }
                if let Some(content) = line["response"].as_str() {
                    text.push_str(content);
                }
            }
        }
        other => panic!("no SDK text for {other:?}"),
    }
    text
}

/// A stream of `dialect` whose content deltas are `pieces`: escapes of
/// every kind, multi-byte characters (written raw and as `\u` escapes,
/// surrogate pairs included) and trailing white space, so that a chunking
/// can cut inside any of them.
pub(crate) fn synthetic_stream(dialect: Dialect, pieces: &[String]) -> String {
    let quoted = |piece: &str| serde_json::Value::from(piece).to_string();
    let mut body = String::new();
    match dialect {
        Dialect::OpenAiChat => {
            body.push_str("data: {\"id\":\"chatcmpl-x\",\"object\":\"chat.completion.chunk\",\"created\":1795435200,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
            for piece in pieces {
                body.push_str(&format!(
                    "data: {{\"id\":\"chatcmpl-x\",\"object\":\"chat.completion.chunk\",\"created\":1795435200,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
                    escape_more(&quoted(piece))
                ));
            }
            body.push_str("data: {\"id\":\"chatcmpl-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        }
        Dialect::Anthropic => {
            body.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_x\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
            for piece in pieces {
                body.push_str(&format!(
                    "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n",
                    escape_more(&quoted(piece))
                ));
            }
            body.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        }
        Dialect::OllamaNdjson => {
            for piece in pieces {
                body.push_str(&format!(
                    "{{\"model\":\"m\",\"created_at\":\"2026-11-23T12:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":{}}},\"done\":false}}\n",
                    escape_more(&quoted(piece))
                ));
            }
            body.push_str("{\"model\":\"m\",\"created_at\":\"2026-11-23T12:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true}\n");
        }
        other => panic!("no synthetic stream for {other:?}"),
    }
    body
}

/// serde_json writes non-ASCII raw and escapes only what it must; providers
/// also write `\u00e9`, `\ud83d\ude00` and `\/`. Rewrites some of each.
fn escape_more(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for (i, c) in json.chars().enumerate() {
        match c {
            '/' => out.push_str("\\/"),
            c if !c.is_ascii() && i % 2 == 0 => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}
