//! The scanner on hand-written streams: splits, keep-alives, ends, errors.

use super::*;

fn scan(
    framing: Framing,
    dialect: Dialect,
    chunks: &[&[u8]],
) -> (EventScanner, Option<Classification>) {
    let mut scanner = EventScanner::new(framing, dialect, Provider::Unknown);
    for chunk in chunks {
        scanner.feed(chunk);
    }
    let end = scanner.finish();
    (scanner, end)
}

#[test]
fn openai_stream_split_anywhere_is_complete() {
    let stream = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
    for split in 0..stream.len() {
        let (scanner, end) = scan(
            Framing::Sse,
            Dialect::OpenAiChat,
            &[&stream[..split], &stream[split..]],
        );
        assert_eq!(end, None, "split at {split}");
        assert_eq!(scanner.content_events(), 1, "split at {split}");
    }
}

#[test]
fn role_only_delta_is_not_content() {
    let mut scanner = EventScanner::new(Framing::Sse, Dialect::OpenAiChat, Provider::OpenAi);
    let event = scanner
        .feed(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
    assert!(!event.content && event.keep_alive);
}

#[test]
fn missing_done_is_incomplete_after_content() {
    let (_, end) = scan(
        Framing::Sse,
        Dialect::OpenAiChat,
        &[b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"],
    );
    let end = end.unwrap();
    assert_eq!(
        (end.kind(), end.phase()),
        (ErrorKind::StreamIncomplete, Phase::MidStream)
    );
    assert!(!end.retryable());
}

#[test]
fn escaped_error_text_in_content_is_not_an_error() {
    let chunk = b"data: {\"choices\":[{\"delta\":{\"content\":\"the \\\"error\\\": field\"}}]}\n\ndata: [DONE]\n\n";
    let (scanner, end) = scan(Framing::Sse, Dialect::OpenAiChat, &[chunk]);
    assert_eq!(end, None);
    assert!(scanner.content_seen());
}

#[test]
fn comments_and_pings_are_keep_alives() {
    let mut scanner = EventScanner::new(Framing::Sse, Dialect::Anthropic, Provider::Anthropic);
    let event =
        scanner.feed(b": OPENROUTER PROCESSING\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n");
    assert!(event.keep_alive && !event.content);
}

#[test]
fn ollama_error_line_after_content_is_mid_stream() {
    let (scanner, end) = scan(
        Framing::Ndjson,
        Dialect::OllamaNdjson,
        &[b"{\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n{\"error\":\"an error was encountered while running the model\"}\n"],
    );
    let end = end.unwrap();
    assert!(scanner.content_seen());
    assert_eq!(end.phase(), Phase::MidStream);
    assert!(!end.retryable());
}

#[test]
fn a_final_line_without_newline_is_scanned() {
    let (_, end) = scan(
        Framing::Ndjson,
        Dialect::OllamaNdjson,
        &[b"{\"message\":{\"content\":\"x\"},\"done\":false}\n{\"done\":true}"],
    );
    assert_eq!(end, None);
}

#[test]
fn overlong_lines_are_skipped_not_buffered() {
    let mut scanner = EventScanner::new(Framing::Sse, Dialect::Generic, Provider::Unknown);
    let big = vec![b'a'; MAX_LINE + 10];
    scanner.feed(b"data: ");
    scanner.feed(&big);
    assert!(scanner.partial.capacity() <= MAX_LINE);
    scanner.feed(b"\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n");
    assert!(scanner.error().is_some());
}

fn captured(dialect: Dialect, events: &[String]) -> (EventScanner, crate::stream::Transcript) {
    let mut scanner =
        EventScanner::new(Framing::Sse, dialect, Provider::Unknown).capture_transcript();
    for event in events {
        scanner.feed(event.as_bytes());
    }
    let transcript = scanner.transcript().unwrap().snapshot();
    (scanner, transcript)
}

fn chunk(text: &str) -> String {
    format!(
        "data: {{\"id\":\"c\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
    )
}

#[test]
fn events_that_differ_only_by_their_text_read_as_if_read_whole() {
    let texts = ["a", "", "b\\\"c", "\\u00e9 ", "", "d"];
    let events: Vec<String> = texts.iter().map(|t| chunk(t)).collect();
    let (scanner, transcript) = captured(Dialect::OpenAiChat, &events);
    assert_eq!(transcript.text(), "ab\"cé d");
    // Empty deltas are keep-alives, as without a transcript.
    assert_eq!(scanner.content_events(), 4);
}

#[test]
fn the_same_bytes_around_something_other_than_one_string_are_read_whole() {
    let events = [
        chunk("a"),
        chunk("x\",\"role\":\"y"),
        chunk("z\"},\"logprobs\":{\"content\":[]},\"x\":{\"a\":\""),
    ];
    let (_, transcript) = captured(Dialect::OpenAiChat, &events);
    assert_eq!(transcript.text(), "axz");
    assert!(transcript.role_sent());
    assert_eq!(
        transcript.not_continuable(),
        Some(crate::stream::NotContinuable::Logprobs)
    );
}

#[test]
fn a_second_choice_or_a_block_start_is_never_a_template() {
    let other = |text: &str| {
        format!("data: {{\"choices\":[{{\"index\":1,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
    };
    let (_, transcript) = captured(Dialect::OpenAiChat, &[other("x"), other("y")]);
    assert_eq!(transcript.text(), "");

    let start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned();
    let (_, transcript) = captured(Dialect::Anthropic, &[start.clone(), start]);
    assert_eq!(transcript.blocks(), 2);
    assert_eq!(
        transcript.not_continuable(),
        Some(crate::stream::NotContinuable::NonText)
    );
}

#[test]
fn an_error_event_after_a_template_is_still_an_error() {
    let error = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n".to_owned();
    let (scanner, _) = captured(Dialect::OpenAiChat, &[chunk("a"), chunk("b"), error]);
    assert_eq!(scanner.error().unwrap().kind(), ErrorKind::ServerError);
}

#[test]
fn an_error_payload_is_found_by_its_error_key_or_type_in_every_dialect_that_carries_one() {
    use keys::is_error_payload;
    let all = [
        Dialect::OpenAiChat,
        Dialect::OpenAiResponses,
        Dialect::Anthropic,
        Dialect::OllamaNdjson,
        Dialect::Generic,
    ];
    for dialect in all {
        for error in [
            &br#"{"error":{"message":"boom"}}"#[..],
            br#"{"id":"x","error" : "boom","choices":[]}"#,
            br#"{"type": "error", "error": {"type": "overloaded_error"}}"#,
            br#"{"type":"error"}"#,
        ] {
            assert!(is_error_payload(error, dialect), "{dialect:?}");
        }
        for healthy in [
            &br#"{"choices":[{"delta":{"content":"an \"error\" here"}}]}"#[..],
            br#"{"error":null,"choices":[]}"#,
            br#"{"type":"message","content":[{"type":"error"}]}"#,
            br#"{"type":"content_block_delta","delta":{"text":"error"}}"#,
        ] {
            assert!(!is_error_payload(healthy, dialect), "{dialect:?}");
        }
    }
    // Only dialects whose events carry their type read `response.failed`.
    let failed = br#"{"type":"response.failed","response":{"status":"failed"}}"#;
    for (dialect, typed) in [
        (Dialect::OpenAiResponses, true),
        (Dialect::Generic, true),
        (Dialect::Anthropic, true),
        (Dialect::OpenAiChat, false),
        (Dialect::OllamaNdjson, false),
    ] {
        assert_eq!(is_error_payload(failed, dialect), typed, "{dialect:?}");
    }
}

#[test]
fn the_blank_line_shortcut_finds_the_newline_memchr_finds() {
    for rest in [
        &b""[..],
        b"\n",
        b"\r\n",
        b"\r",
        b"\rx\n",
        b"\n\n",
        b"data: {}\n\n",
        b"data: {}",
        b"\r\r\n",
    ] {
        assert_eq!(next_newline(rest), memchr::memchr(b'\n', rest), "{rest:?}");
    }
}

#[test]
fn an_error_key_nested_in_a_tool_calls_arguments_does_not_fail_the_stream() {
    // An Ollama tool call's arguments are an object the caller's tool
    // schema shapes: its `error` is content, not a failure.
    let tool_call = b"{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"report\",\"arguments\":{\"error\":\"disk full\",\"type\":\"error\"}}}]},\"done\":false}\n";
    let done = b"{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\"}\n";
    let (_, end) = scan(Framing::Ndjson, Dialect::OllamaNdjson, &[tool_call, done]);
    assert_eq!(end, None);
    // The payload's own `error` still fails it.
    let failed = b"{\"error\":\"model requires more system memory\"}\n";
    let (_, end) = scan(Framing::Ndjson, Dialect::OllamaNdjson, &[failed]);
    assert!(end.is_some());
}

#[test]
fn a_valid_event_the_transcript_cannot_represent_stops_continuation_not_the_stream() {
    // Content as an array of parts, and a lone surrogate escape: JSON that
    // SDKs parse, that a transcript cannot hold.
    for odd in [
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud83d\"}}]}\n\n",
    ] {
        let events = [
            chunk("a"),
            odd.to_owned(),
            chunk("b"),
            "data: [DONE]\n\n".to_owned(),
        ];
        let (mut scanner, transcript) = captured(Dialect::OpenAiChat, &events);
        assert_eq!(scanner.finish(), None, "{odd}");
        assert_eq!(
            transcript.not_continuable(),
            Some(NotContinuable::Unreadable),
            "{odd}"
        );
    }
    // Data that is not a JSON object still fails it.
    let events = [chunk("a"), "data: {\"choices\":[\n\n".to_owned()];
    let (scanner, _) = captured(Dialect::OpenAiChat, &events);
    assert!(scanner.error().is_some());
}

#[test]
fn a_transcript_keeps_no_more_than_its_limit_of_an_endless_stream() {
    let piece = "x".repeat(64 * 1024);
    let mut events: Vec<String> = (0..80).map(|_| chunk(&piece)).collect();
    events.push("data: [DONE]\n\n".to_owned());
    let (mut scanner, transcript) = captured(Dialect::OpenAiChat, &events);
    assert_eq!(scanner.finish(), None, "the stream itself is fine");
    assert_eq!(transcript.not_continuable(), Some(NotContinuable::TooLong));
    assert_eq!(transcript.text(), "");
    let held = scanner.transcript().unwrap().snapshot();
    assert!(held.text().is_empty());
}
