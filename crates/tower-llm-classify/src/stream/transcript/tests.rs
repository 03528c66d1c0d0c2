//! The transcript of hand-written events of each dialect: the envelope,
//! the text, the finish, the usage, and what stops a continuation.

use super::*;
use crate::Provider;
use crate::stream::{EventScanner, Framing};

fn transcript(framing: Framing, dialect: Dialect, stream: &[u8]) -> Transcript {
    let mut scanner = EventScanner::new(framing, dialect, Provider::Unknown).capture_transcript();
    scanner.feed(stream);
    scanner.transcript().unwrap().snapshot()
}

fn chat(stream: &str) -> Transcript {
    transcript(Framing::Sse, Dialect::OpenAiChat, stream.as_bytes())
}

fn anthropic(stream: &str) -> Transcript {
    transcript(Framing::Sse, Dialect::Anthropic, stream.as_bytes())
}

fn ollama(stream: &str) -> Transcript {
    transcript(Framing::Ndjson, Dialect::OllamaNdjson, stream.as_bytes())
}

const CHAT_ROLE: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1795435200,\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";

#[test]
fn an_openai_chunk_gives_its_envelope_once_and_its_text_decoded() {
    let t = chat(&format!(
        "{CHAT_ROLE}data: {{\"id\":\"chatcmpl-2\",\"model\":\"other\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tab\\there \\u00e9\\ud83d\\ude00 \\\"q\\\"\\n \"}}}}]}}\n\n"
    ));
    assert_eq!(t.text(), "tab\there é😀 \"q\"\n ");
    assert_eq!(
        t.id(),
        Some("chatcmpl-1"),
        "the envelope the caller saw first"
    );
    assert_eq!(t.model(), Some("gpt-4o"));
    assert_eq!(t.object(), Some("chat.completion.chunk"));
    assert_eq!(t.created(), Some(1_795_435_200));
    assert_eq!(t.system_fingerprint(), Some("fp_1"));
    assert_eq!(t.index(), Some(0));
    assert!(t.role_sent());
    assert!(!t.finished());
    assert_eq!(t.not_continuable(), None);
}

#[test]
fn an_openai_finish_and_usage_are_recorded() {
    let t = chat(&format!(
        "{CHAT_ROLE}data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Hi\"}},\"finish_reason\":null}}]}}\n\ndata: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"length\"}}],\"usage\":null}}\n\ndata: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":14,\"completion_tokens\":8,\"total_tokens\":22}}}}\n\n"
    ));
    assert!(t.finished());
    assert_eq!(t.finish_reason(), Some("length"));
    let usage = t.usage().unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (Some(14), Some(8))
    );
}

#[test]
fn what_a_prefill_cannot_carry_makes_an_openai_answer_not_continuable() {
    let cases = [
        (
            "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}",
            NotContinuable::ToolCall,
        ),
        (
            "{\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"arguments\":\"{\"}}}]}",
            NotContinuable::ToolCall,
        ),
        (
            "{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"}}]}",
            NotContinuable::MultipleChoices,
        ),
        (
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"logprobs\":{\"content\":[{\"token\":\"a\",\"logprob\":-0.1}]}}]}",
            NotContinuable::Logprobs,
        ),
        (
            "{\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"I can't\"}}]}",
            NotContinuable::Refusal,
        ),
        (
            "{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Let me think\"}}]}",
            NotContinuable::Reasoning,
        ),
    ];
    for (chunk, reason) in cases {
        let t = chat(&format!("{CHAT_ROLE}data: {chunk}\n\n"));
        assert_eq!(t.not_continuable(), Some(reason), "{chunk}");
        assert!(!t.is_continuable());
    }
}

#[test]
fn a_second_choice_adds_no_text_to_the_first() {
    let t = chat(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n",
    );
    assert_eq!(t.text(), "a");
    assert_eq!(t.not_continuable(), Some(NotContinuable::MultipleChoices));
}

#[test]
fn legacy_completions_text_is_the_text() {
    let t = chat(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"Once \",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    );
    assert_eq!(t.text(), "Once ");
}

const MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
const TEXT_START: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";

fn text_delta(index: u64, text: &str) -> String {
    format!(
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
    )
}

#[test]
fn an_anthropic_message_gives_its_envelope_text_block_finish_and_usage() {
    let t = anthropic(&format!(
        "{MESSAGE_START}{TEXT_START}event: ping\ndata: {{\"type\": \"ping\"}}\n\n{}{}event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":12}}}}\n\n",
        text_delta(0, "Hello"),
        text_delta(0, "! How \\u00e0 "),
    ));
    assert_eq!(t.text(), "Hello! How à ");
    assert_eq!(t.id(), Some("msg_01"));
    assert_eq!(t.model(), Some("claude-sonnet-4-5"));
    assert!(t.role_sent());
    assert_eq!((t.index(), t.open_block(), t.blocks()), (Some(0), None, 1));
    assert!(t.finished());
    assert_eq!(t.finish_reason(), Some("end_turn"));
    let usage = t.usage().unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (Some(25), Some(12))
    );
    assert!(t.is_continuable());
}

#[test]
fn an_open_anthropic_text_block_is_reported_open() {
    let t = anthropic(&format!(
        "{MESSAGE_START}{TEXT_START}{}",
        text_delta(0, "Hel")
    ));
    assert_eq!((t.open_block(), t.blocks()), (Some(0), 1));
    assert!(!t.finished());
}

#[test]
fn anthropic_tool_use_and_thinking_blocks_are_not_continuable() {
    let tool = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n";
    let t = anthropic(&format!(
        "{MESSAGE_START}{TEXT_START}{}{tool}",
        text_delta(0, "Let me check.")
    ));
    assert_eq!(t.text(), "Let me check.");
    assert_eq!(t.not_continuable(), Some(NotContinuable::ToolCall));
    assert_eq!(t.blocks(), 2);

    let thinking = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm\"}}\n\n";
    let t = anthropic(&format!("{MESSAGE_START}{thinking}"));
    assert_eq!(t.text(), "", "thinking is not the answer's text");
    assert_eq!(t.not_continuable(), Some(NotContinuable::Reasoning));
}

#[test]
fn a_second_anthropic_text_block_is_not_continuable() {
    let second = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    let t = anthropic(&format!(
        "{MESSAGE_START}{TEXT_START}{}{second}{}",
        text_delta(0, "a"),
        text_delta(1, "b")
    ));
    assert_eq!(t.text(), "a");
    assert_eq!(t.not_continuable(), Some(NotContinuable::NonText));
}

#[test]
fn unnamed_anthropic_events_are_not_the_callers_text() {
    // Anthropic's SDKs skip events without a name.
    let unnamed = "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n";
    let t = anthropic(&format!("{MESSAGE_START}{TEXT_START}{unnamed}"));
    assert_eq!(t.text(), "");
}

#[test]
fn an_ollama_chat_stream_gives_model_created_at_text_finish_and_counts() {
    let t = ollama(
        "{\"model\":\"llama3.2\",\"created_at\":\"2026-11-23T12:00:00.512Z\",\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n{\"model\":\"llama3.2\",\"created_at\":\"2026-11-23T12:00:00.538Z\",\"message\":{\"role\":\"assistant\",\"content\":\" sky \"},\"done\":false}\n{\"model\":\"llama3.2\",\"created_at\":\"2026-11-23T12:00:00.633Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"prompt_eval_count\":26,\"eval_count\":12}\n",
    );
    assert_eq!(t.text(), "The sky ");
    assert_eq!(t.model(), Some("llama3.2"));
    assert_eq!(t.created_at(), Some("2026-11-23T12:00:00.512Z"));
    assert!(t.role_sent() && t.finished());
    assert_eq!(t.finish_reason(), Some("stop"));
    let usage = t.usage().unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens),
        (Some(26), Some(12))
    );
}

#[test]
fn an_ollama_generate_stream_is_read_from_response() {
    let t = ollama(
        "{\"model\":\"llama3.2\",\"created_at\":\"x\",\"response\":\"Once\",\"done\":false}\n{\"model\":\"llama3.2\",\"created_at\":\"y\",\"response\":\" upon\",\"done\":false}\n",
    );
    assert_eq!(t.text(), "Once upon");
}

#[test]
fn ollama_thinking_and_tool_calls_are_not_continuable() {
    let t = ollama(
        "{\"model\":\"qwen3\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Let me\"},\"done\":false}\n",
    );
    assert_eq!(t.not_continuable(), Some(NotContinuable::Reasoning));
    let t = ollama(
        "{\"model\":\"qwen3\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{}}}]},\"done\":false}\n",
    );
    assert_eq!(t.not_continuable(), Some(NotContinuable::ToolCall));
}

#[test]
fn dialects_without_a_reader_are_not_continuable() {
    for dialect in [Dialect::OpenAiResponses, Dialect::Generic] {
        let t = transcript(Framing::Sse, dialect, b"data: {\"x\":1}\n\n");
        assert_eq!(t.not_continuable(), Some(NotContinuable::Dialect));
    }
}

#[test]
fn an_event_split_over_several_data_lines_is_unreadable() {
    let t = chat("data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"a\"}}]}\n\n");
    assert_eq!(t.not_continuable(), Some(NotContinuable::Unreadable));
}

#[test]
fn a_withheld_frame_is_taken_back_whole() {
    let mut t = Transcript::new(Dialect::OpenAiChat);
    t.begin_frame();
    assert!(
        t.event(
            b"",
            br#"{"id":"a","choices":[{"index":0,"delta":{"role":"assistant","content":"one "}}]}"#
        )
        .well_formed
    );
    t.set_position(10, 10);
    t.begin_frame();
    assert!(t.event(b"", br#"{"model":"m","choices":[{"index":0,"delta":{"content":"two"},"finish_reason":"stop"}]}"#).well_formed);
    t.block(NotContinuable::Logprobs);
    t.withhold_frame();
    assert_eq!(t.text(), "one ");
    assert_eq!((t.id(), t.model()), (Some("a"), None));
    assert!(!t.finished() && t.finish_reason().is_none());
    assert!(t.is_continuable());
    assert_eq!(t.bytes(), 10);
}

#[test]
fn an_event_that_is_not_json_adds_no_text() {
    let mut t = Transcript::new(Dialect::OpenAiChat);
    assert!(
        !t.event(
            b"",
            br#"{"choices":[{"index":0,"delta":{"content":"lost"}}] "x"}"#
        )
        .well_formed
    );
    assert_eq!(t.text(), "");
}
