//! Arbitrary status, headers and body never panic the response classifier,
//! and a hinted delay never exceeds the documented ceiling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_llm_classify::{Provider, classify_response, hint};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = http::StatusCode::from_u16(400 + u16::from(data[0]) % 200)
        .unwrap_or(http::StatusCode::BAD_REQUEST);
    let provider = Provider::ALL[usize::from(data[1]) % Provider::ALL.len()];
    let split = usize::from(data[2]).min(data.len() - 3);
    let (header_bytes, body) = data[3..].split_at(split);
    let mut headers = http::HeaderMap::new();
    for (i, line) in header_bytes.split(|b| *b == b'\n').enumerate() {
        let names = ["retry-after", "retry-after-ms", "x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens", "anthropic-ratelimit-requests-reset", "x-should-retry", "x-amzn-errortype"];
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            headers.insert(names[i % names.len()], value);
        }
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_795_435_200);
    let c = classify_response(provider, status, &headers, body, now);
    if let Some(delay) = c.retry_after() {
        assert!(delay <= hint::MAX_HINT);
    }
    let _ = c.to_string();
    let _ = SystemTime::now();
});
