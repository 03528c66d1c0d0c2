//! Arbitrary bytes, split anywhere, never panic the stream scanner, and the
//! split does not change what it finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_llm_classify::Provider;
use tower_llm_classify::stream::{Dialect, EventScanner, Framing};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let framing = if data[0] & 1 == 0 { Framing::Sse } else { Framing::Ndjson };
    let dialect = [Dialect::OpenAiChat, Dialect::OpenAiResponses, Dialect::Anthropic, Dialect::OllamaNdjson, Dialect::Generic][usize::from(data[0] >> 1) % 5];
    let body = &data[1..];
    let split = if body.is_empty() { 0 } else { usize::from(data[0]) % body.len() };

    let mut whole = EventScanner::new(framing, dialect, Provider::Unknown);
    whole.feed(body);
    let whole_end = whole.finish().map(|c| c.kind());

    let mut parts = EventScanner::new(framing, dialect, Provider::Unknown);
    parts.feed(&body[..split]);
    parts.feed(&body[split..]);
    let parts_end = parts.finish().map(|c| c.kind());

    assert_eq!(whole.content_events(), parts.content_events());
    assert_eq!(whole_end, parts_end);
});
