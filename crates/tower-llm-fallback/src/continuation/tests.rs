#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tower_llm_classify::Provider;
use tower_llm_classify::stream::Dialect;

use super::*;

const CHAT: &[u8] =
    br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Count to five"}]}"#;

fn sent(prefill: &Prefill) -> Value {
    serde_json::from_slice(&prefill.body).unwrap()
}

fn openai_chunk(id: &str, delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({
        "id": id, "object": "chat.completion.chunk", "created": 2, "model": "backup-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {chunk}\n\n")
}

/// The text content of an OpenAI stream, as an SDK concatenates it.
fn openai_text(stream: &[u8]) -> String {
    let text = std::str::from_utf8(stream).unwrap();
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| {
            let v: Value = serde_json::from_str(data).unwrap();
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

fn splice_all(splice: &mut Splice, rest: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in rest.chunks(chunk.max(1)) {
        splice.feed(piece, &mut out).unwrap();
    }
    splice.finish(&mut out).unwrap();
    out
}

#[test]
fn providers_that_accept_a_trailing_assistant_message_can_continue_and_openai_cannot() {
    assert_eq!(
        Continuation::for_provider(Provider::Anthropic),
        Continuation::TrailingAssistant
    );
    assert_eq!(
        Continuation::for_provider(Provider::DeepSeek),
        Continuation::PrefixFlag
    );
    assert_eq!(
        Continuation::for_provider(Provider::Vllm),
        Continuation::ContinueFinalMessage
    );
    assert!(!Continuation::for_provider(Provider::OpenAi).is_supported());
    assert!(!Continuation::for_provider(Provider::Unknown).is_supported());
}

#[test]
fn the_prefill_is_the_same_request_with_the_delivered_text_as_the_assistants_answer() {
    let prefill = prefill_request(
        CHAT,
        "1, 2, 3",
        Continuation::TrailingAssistant,
        Dialect::OpenAiChat,
    )
    .unwrap();
    let body = sent(&prefill);
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["content"], "Count to five");
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": "1, 2, 3"})
    );
    assert_eq!(prefill.trimmed, "");
}

#[test]
fn deepseek_and_mistral_mark_the_prefix_and_vllm_gets_its_template_flags() {
    let prefix =
        prefill_request(CHAT, "1, 2", Continuation::PrefixFlag, Dialect::OpenAiChat).unwrap();
    assert_eq!(sent(&prefix)["messages"][1]["prefix"], true);
    let vllm = prefill_request(
        CHAT,
        "1, 2",
        Continuation::ContinueFinalMessage,
        Dialect::OpenAiChat,
    )
    .unwrap();
    let body = sent(&vllm);
    assert_eq!(body["continue_final_message"], true);
    assert_eq!(body["add_generation_prompt"], false);
    assert!(body["messages"][1].get("prefix").is_none());
}

#[test]
fn anthropic_gets_a_prefill_without_trailing_white_space_and_the_splice_keeps_it_once() {
    let body = br#"{"model":"claude","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let prefill = prefill_request(
        body,
        "Hello,\n ",
        Continuation::TrailingAssistant,
        Dialect::Anthropic,
    )
    .unwrap();
    assert_eq!(sent(&prefill)["messages"][1]["content"], "Hello,");
    assert_eq!(prefill.trimmed, "\n ");

    // The model continues after "Hello," and repeats the white space.
    let envelope = Envelope {
        open_block: Some(0),
        blocks: 1,
        ..Envelope::default()
    };
    let mut splice = Splice::new(Dialect::Anthropic, envelope, prefill.trimmed).unwrap();
    let rest = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"model\":\"claude\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\n\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let out = String::from_utf8(splice_all(&mut splice, rest.as_bytes(), 7)).unwrap();
    assert!(!out.contains("message_start"), "{out}");
    assert!(!out.contains("content_block_start"), "{out}");
    let texts: Vec<String> = out
        .split("\n\n")
        .filter_map(|e| e.split_once("data: ").map(|(_, d)| d))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(texts, ["world"], "the repeated white space is dropped once");
    assert!(out.contains("event: message_stop"));
}

#[test]
fn a_caller_prefill_is_extended_not_repeated() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Dear"}]}"#;
    let prefill = prefill_request(
        body,
        " Sir",
        Continuation::TrailingAssistant,
        Dialect::OpenAiChat,
    )
    .unwrap();
    let sent = sent(&prefill);
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
    assert_eq!(sent["messages"][1]["content"], "Dear Sir");
}

#[test]
fn what_cannot_be_continued_is_refused_before_anything_is_sent() {
    assert_eq!(
        prefill_request(CHAT, "x", Continuation::Unsupported, Dialect::OpenAiChat),
        Err(PrefillError::Unsupported)
    );
    assert_eq!(
        prefill_request(
            CHAT,
            "x",
            Continuation::TrailingAssistant,
            Dialect::OpenAiResponses
        ),
        Err(PrefillError::Dialect)
    );
    assert_eq!(
        prefill_request(
            br#"{"prompt":"x"}"#,
            "x",
            Continuation::TrailingAssistant,
            Dialect::OpenAiChat
        ),
        Err(PrefillError::NotAChatRequest)
    );
    assert_eq!(
        prefill_request(
            CHAT,
            "",
            Continuation::TrailingAssistant,
            Dialect::OpenAiChat
        ),
        Err(PrefillError::NothingDelivered)
    );
    assert_eq!(
        prefill_request(
            CHAT,
            "  ",
            Continuation::TrailingAssistant,
            Dialect::Anthropic
        ),
        Err(PrefillError::NothingDelivered)
    );
}

#[test]
fn the_rest_of_an_openai_stream_keeps_the_callers_envelope_and_sends_no_second_role() {
    let envelope = Envelope {
        id: Some("chatcmpl-first".into()),
        created: Some(1),
        model: Some("gpt-4o".into()),
        ..Envelope::default()
    };
    let rest = [
        openai_chunk(
            "chatcmpl-second",
            json!({"role": "assistant", "content": ""}),
            None,
        ),
        openai_chunk("chatcmpl-second", json!({"content": " 4, 5"}), None),
        openai_chunk("chatcmpl-second", json!({}), Some("stop")),
        ": keep-alive\n\n".to_owned(),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    for chunk in [1, 3, 17, rest.len()] {
        let mut splice = Splice::new(Dialect::OpenAiChat, envelope.clone(), String::new()).unwrap();
        let out = splice_all(&mut splice, rest.as_bytes(), chunk);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains("role"), "{text}");
        assert!(!text.contains("chatcmpl-second") && !text.contains("backup-model"));
        assert_eq!(text.matches("chatcmpl-first").count(), 2, "{text}");
        assert_eq!(openai_text(&out), " 4, 5");
        assert!(text.contains("\"finish_reason\":\"stop\""));
        assert!(text.contains(": keep-alive\n\n"));
        assert_eq!(text.matches("data: [DONE]").count(), 1);
    }
}

#[test]
fn delivered_text_and_its_rest_make_the_whole_answer_at_every_cut() {
    // What the provider would have sent uncut, and a continuation that
    // sends exactly the rest: the caller reads the whole answer once.
    let answer = "One, two,  three — four. ";
    for cut in answer.char_indices().map(|(i, _)| i).skip(1) {
        let (delivered, rest) = answer.split_at(cut);
        for dialect in [Dialect::OpenAiChat, Dialect::Anthropic] {
            let body =
                br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"go"}]}"#;
            let Ok(prefill) =
                prefill_request(body, delivered, Continuation::TrailingAssistant, dialect)
            else {
                assert!(delivered.trim().is_empty());
                continue;
            };
            let prefix = sent(&prefill)["messages"][1]["content"]
                .as_str()
                .unwrap()
                .to_owned();
            // The model continues after the prefill it was sent.
            let continued = &answer[prefix.len()..];
            let stream = match dialect {
                Dialect::Anthropic => format!(
                    "event: content_block_delta\ndata: {}\n\n",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": continued}})
                ),
                _ => openai_chunk("x", json!({"content": continued}), None),
            };
            let envelope = Envelope {
                open_block: Some(0),
                blocks: 1,
                ..Envelope::default()
            };
            let mut splice = Splice::new(dialect, envelope, prefill.trimmed).unwrap();
            let out = splice_all(&mut splice, stream.as_bytes(), 5);
            let seen: String = String::from_utf8(out)
                .unwrap()
                .split("\n\n")
                .filter_map(|e| e.split_once("data: ").map(|(_, d)| d))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| {
                    v.pointer("/delta/text")
                        .or_else(|| v.pointer("/choices/0/delta/content"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            assert_eq!(
                format!("{delivered}{seen}"),
                answer,
                "cut at {cut}, {dialect:?}"
            );
            assert_eq!(seen, rest);
        }
    }
}

#[test]
fn a_tool_call_or_a_second_choice_in_the_rest_cannot_be_spliced() {
    let mut splice = Splice::new(Dialect::OpenAiChat, Envelope::default(), String::new()).unwrap();
    let tool = openai_chunk(
        "x",
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
        None,
    );
    assert_eq!(
        splice.feed(tool.as_bytes(), &mut Vec::new()),
        Err(SpliceError::NotContinuable("a tool call"))
    );
    let second = "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"}}]}\n\n";
    let mut splice = Splice::new(Dialect::OpenAiChat, Envelope::default(), String::new()).unwrap();
    assert_eq!(
        splice.feed(second.as_bytes(), &mut Vec::new()),
        Err(SpliceError::NotContinuable("several choices"))
    );
}

#[test]
fn an_event_that_is_not_json_is_dropped_not_handed_to_the_callers_sdk() {
    let mut splice = Splice::new(Dialect::OpenAiChat, Envelope::default(), String::new()).unwrap();
    let rest = format!(
        "data: {{not json\n\n{}",
        openai_chunk("x", json!({"content": "ok"}), None)
    );
    let out = splice_all(&mut splice, rest.as_bytes(), 4);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("not json"));
    assert_eq!(openai_text(text.as_bytes()), "ok");
}

#[test]
fn an_ollama_rest_keeps_the_callers_model_and_its_done_line() {
    let envelope = Envelope {
        model: Some("llama3.2".into()),
        ..Envelope::default()
    };
    let mut splice = Splice::new(Dialect::OllamaNdjson, envelope, String::new()).unwrap();
    let rest = concat!(
        "{\"model\":\"other\",\"message\":{\"role\":\"assistant\",\"content\":\" there\"},\"done\":false}\n",
        "{\"model\":\"other\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":false}\n",
        "{\"model\":\"other\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\"}\n",
    );
    let out = String::from_utf8(splice_all(&mut splice, rest.as_bytes(), 9)).unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "the empty line between is dropped: {out}");
    assert!(lines.iter().all(|l| l["model"] == "llama3.2"));
    assert_eq!(lines[0]["message"]["content"], " there");
    assert_eq!(lines[1]["done"], true);
}

#[test]
fn an_anthropic_rest_after_a_closed_block_opens_the_next_index() {
    let envelope = Envelope {
        open_block: None,
        blocks: 2,
        ..Envelope::default()
    };
    let mut splice = Splice::new(Dialect::Anthropic, envelope, String::new()).unwrap();
    let rest = concat!(
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"More.\"}}\n\n",
    );
    let out = String::from_utf8(splice_all(&mut splice, rest.as_bytes(), 11)).unwrap();
    assert_eq!(out.matches("\"index\":2").count(), 2, "{out}");
}

#[test]
fn dialects_without_messages_cannot_be_spliced() {
    assert_eq!(
        Splice::new(Dialect::OpenAiResponses, Envelope::default(), String::new()).unwrap_err(),
        SpliceError::Dialect
    );
}

#[test]
fn the_callers_last_usage_block_counts_every_segment_as_far_as_known() {
    let earlier = splice::Usage {
        input: 100,
        output: 7,
    };
    // OpenAI: the rest's usage chunk (stream_options.include_usage).
    let mut openai = Splice::new(Dialect::OpenAiChat, Envelope::default(), String::new())
        .unwrap()
        .after(earlier);
    let usage = r#"data: {"id":"x","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150}}"#;
    let out = String::from_utf8(splice_all(
        &mut openai,
        format!("{usage}\n\n").as_bytes(),
        7,
    ))
    .unwrap();
    let chunk: Value = serde_json::from_str(out.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        chunk["usage"],
        json!({"prompt_tokens": 220, "completion_tokens": 37, "total_tokens": 257})
    );
    assert_eq!(
        openai.usage(),
        splice::Usage {
            input: 220,
            output: 37
        }
    );

    // Anthropic: the dropped message_start's input is counted, and the
    // message_delta says the whole answer's.
    let mut anthropic = Splice::new(
        Dialect::Anthropic,
        Envelope {
            open_block: Some(0),
            blocks: 1,
            ..Envelope::default()
        },
        String::new(),
    )
    .unwrap()
    .after(earlier);
    let rest = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":120,\"output_tokens\":1}}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":30}}\n\n",
    );
    let out = String::from_utf8(splice_all(&mut anthropic, rest.as_bytes(), 13)).unwrap();
    assert!(!out.contains("message_start"), "{out}");
    let delta: Value =
        serde_json::from_str(out.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 220, "output_tokens": 37})
    );

    // Ollama: the done line's counts.
    let mut ollama = Splice::new(Dialect::OllamaNdjson, Envelope::default(), String::new())
        .unwrap()
        .after(earlier);
    let done = "{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"prompt_eval_count\":120,\"eval_count\":30}\n";
    let out = String::from_utf8(splice_all(&mut ollama, done.as_bytes(), 5)).unwrap();
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            line["prompt_eval_count"].as_u64(),
            line["eval_count"].as_u64()
        ),
        (Some(220), Some(37))
    );

    // A rest that broke before its usage adds nothing it did not say.
    let silent = Splice::new(Dialect::OpenAiChat, Envelope::default(), String::new())
        .unwrap()
        .after(earlier);
    assert_eq!(silent.usage(), earlier);
}
