#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins, for arbitrary streams, that `EventScanner` never panics, that its
//! verdict does not depend on how the stream is split into chunks (but for
//! what the chunk that completes a malformed event withholds with it), and
//! that keeping a transcript changes no verdict (but for the malformed
//! events only a transcript's reading of every event finds).

use proptest::prelude::*;
use proptest::sample::{Index, select};
use tower_llm_classify::stream::{Dialect, EventScanner, Framing, ScanEvent};
use tower_llm_classify::{Classification, Provider};

/// Pieces of SSE and NDJSON streams, so that random concatenations mean
/// something to the scanner.
const STREAM_TOKENS: &[&str] = &[
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    ":",
    " ",
    ": keep-alive\n\n",
    "data: ",
    "data:",
    "event: ",
    "error: ",
    "error",
    "ping",
    "message_start",
    "message_stop",
    "content_block_delta",
    "response.output_text.delta",
    "response.completed",
    "response.failed",
    "[DONE]",
    "{\"type\":\"ping\"}",
    "{\"type\":\"message_stop\"}",
    "{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}",
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
    "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}",
    "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
    "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}",
    "{\"error\":null}",
    "{\"message\":{\"content\":\"x\"},\"done\":false}",
    "{\"done\":true}",
    "{\"error\":\"model crashed\"}",
    "\\\"error\\\": ",
    "é",
];

fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(select(STREAM_TOKENS), 0..40)
            .prop_map(|tokens| tokens.concat().into_bytes()),
    ]
}

const DIALECTS: &[Dialect] = &[
    Dialect::OpenAiChat,
    Dialect::OpenAiResponses,
    Dialect::Anthropic,
    Dialect::OllamaNdjson,
    Dialect::Generic,
];

fn flags(event: ScanEvent) -> (bool, bool, bool) {
    (event.content, event.keep_alive, event.failed)
}

fn or(a: (bool, bool, bool), b: (bool, bool, bool)) -> (bool, bool, bool) {
    (a.0 || b.0, a.1 || b.1, a.2 || b.2)
}

/// Everything a scanner says: the union of its per-chunk flags, its error,
/// its counters before the end, what `finish` says, its final count.
type Verdict = (
    (bool, bool, bool),
    Option<Classification>,
    (u64, bool, bool),
    Option<Classification>,
    u64,
);

fn is_malformed(error: &Option<Classification>) -> bool {
    error
        .as_ref()
        .and_then(Classification::message)
        .is_some_and(|m| m.starts_with("a malformed event"))
}

/// What a scanner says after `chunks` and its end.
fn scan(framing: Framing, dialect: Dialect, provider: Provider, chunks: &[&[u8]]) -> Verdict {
    scan_with(EventScanner::new(framing, dialect, provider), chunks)
}

/// What `scanner` says after `chunks` and its end.
fn scan_with(mut scanner: EventScanner, chunks: &[&[u8]]) -> Verdict {
    let mut seen = (false, false, false);
    for chunk in chunks {
        seen = or(seen, flags(scanner.feed(chunk)));
    }
    let error = scanner.error().cloned();
    let before_end = (
        scanner.content_events(),
        scanner.content_seen(),
        scanner.is_terminated(),
    );
    let end = scanner.finish();
    (seen, error, before_end, end, scanner.content_events())
}

proptest! {
    #[test]
    fn event_scanner_verdict_does_not_depend_on_chunking(
        stream in stream_bytes(),
        cuts in proptest::collection::vec(any::<Index>(), 1..4),
        framing in select(&[Framing::Sse, Framing::Ndjson][..]),
        dialect in select(DIALECTS),
        provider in select(&[Provider::OpenAi, Provider::Anthropic, Provider::Ollama, Provider::Unknown][..]),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut from = 0;
        for cut in cuts {
            chunks.push(&stream[from..cut]);
            from = cut;
        }
        chunks.push(&stream[from..]);

        let whole = scan(framing, dialect, provider, &[&stream]);
        let split = scan(framing, dialect, provider, &chunks);
        if is_malformed(&whole.1) {
            // The chunk that completes a malformed event is withheld, and
            // what it carried with it: which chunk that is depends on the
            // chunking; that the stream fails there does not.
            prop_assert_eq!(&whole.1, &split.1.as_ref().map(|c| c.clone().with_phase(whole.1.as_ref().unwrap().phase())));
            prop_assert!(split.2.0 >= whole.2.0);
        } else {
            prop_assert_eq!(whole, split);
        }
    }

    #[test]
    fn keeping_a_transcript_changes_no_verdict(
        stream in stream_bytes(),
        cuts in proptest::collection::vec(any::<Index>(), 0..6),
        framing in select(&[Framing::Sse, Framing::Ndjson][..]),
        dialect in select(DIALECTS),
        provider in select(&[Provider::OpenAi, Provider::Anthropic, Provider::Ollama, Provider::Unknown][..]),
    ) {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut from = 0;
        for to in at {
            chunks.push(&stream[from..to]);
            from = to;
        }
        chunks.push(&stream[from..]);

        let plain = scan_with(EventScanner::new(framing, dialect, provider), &chunks);
        let kept = scan_with(
            EventScanner::new(framing, dialect, provider).capture_transcript(),
            &chunks,
        );
        if is_malformed(&kept.1) {
            // The transcript's walk finds more malformed events (an
            // object that does not close where it should), so a scan that
            // keeps one may fail earlier than one that does not: never
            // later, never with more content.
            prop_assert!(kept.4 <= plain.4);
        } else {
            prop_assert_eq!(plain, kept);
        }
    }
}
