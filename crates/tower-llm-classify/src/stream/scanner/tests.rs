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
