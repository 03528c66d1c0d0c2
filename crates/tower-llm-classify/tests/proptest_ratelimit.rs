#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins, for arbitrary input, that reading rate-limit headers
//! (`hint::RateLimitHeaders`) never panics and never reports a reset above
//! `hint::MAX_HINT`; and that well-formed OpenAI and Anthropic headers read
//! back exactly what they say.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::select;
use tower_llm_classify::hint::{MAX_HINT, RateLimitHeaders};

const NAMES: &[&str] = &[
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-request-id",
    "retry-after",
];

fn now() -> SystemTime {
    // 2026-11-23T12:00:00Z
    UNIX_EPOCH + Duration::from_secs(1_795_435_200)
}

proptest! {
    #[test]
    fn arbitrary_rate_limit_headers_never_panic_nor_exceed_the_ceiling(
        pairs in proptest::collection::vec((select(NAMES), "[ -~]{0,40}"), 0..12)
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        if let Some(read) = RateLimitHeaders::read(&headers, now()) {
            prop_assert!(read.requests.is_some() || read.tokens.is_some());
            for bucket in [read.requests, read.tokens].into_iter().flatten() {
                if let Some(reset) = bucket.reset {
                    prop_assert!(reset <= MAX_HINT, "{reset:?}");
                }
            }
        }
    }

    #[test]
    fn well_formed_openai_headers_read_back_exactly(
        limit in 1_u64..10_000_000,
        used in 0_u64..10_000_000,
        reset_ms in 0_u64..3_600_000,
    ) {
        let remaining = limit.saturating_sub(used);
        let reset = if reset_ms < 1000 {
            format!("{reset_ms}ms")
        } else {
            format!("{}m{}.{:03}s", reset_ms / 60_000, (reset_ms / 1000) % 60, reset_ms % 1000)
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-tokens", limit.into());
        headers.insert("x-ratelimit-remaining-tokens", remaining.into());
        headers.insert("x-ratelimit-reset-tokens", reset.parse().unwrap());
        let read = RateLimitHeaders::read(&headers, now()).unwrap();
        prop_assert!(read.requests.is_none());
        let tokens = read.tokens.unwrap();
        prop_assert_eq!(tokens.remaining, remaining);
        prop_assert_eq!(tokens.limit, Some(limit));
        prop_assert_eq!(tokens.reset, Some(Duration::from_millis(reset_ms)));
    }

    #[test]
    fn anthropic_resets_are_the_time_until_their_instant(
        ahead in 0_u64..86_400,
        remaining in 0_u64..1_000_000,
    ) {
        let at = now() + Duration::from_secs(ahead);
        let secs = at.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        // The same day or the next (at most 86 399 s ahead of noon).
        let day = if secs / 86_400 == 1_795_435_200 / 86_400 { 23 } else { 24 };
        let instant = format!("2026-11-{day:02}T{h:02}:{m:02}:{s:02}Z");
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-ratelimit-requests-remaining", remaining.into());
        headers.insert("anthropic-ratelimit-requests-reset", instant.parse().unwrap());
        let read = RateLimitHeaders::read(&headers, now()).unwrap();
        let requests = read.requests.unwrap();
        prop_assert_eq!(requests.remaining, remaining);
        prop_assert_eq!(requests.reset, Some(Duration::from_secs(ahead)));
    }
}
