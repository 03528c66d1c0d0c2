use super::*;

// Mon, 23 Nov 2026 12:00:00 GMT
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_435_200)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[test]
fn the_fixed_now_is_the_date_it_claims() {
    assert_eq!(
        httpdate::fmt_http_date(now()),
        "Mon, 23 Nov 2026 12:00:00 GMT"
    );
    assert_eq!(parse_rfc3339("2026-11-23T12:00:00Z"), Some(now()));
}

#[test]
fn retry_after_ms_wins_over_retry_after() {
    let hint = hinted_delay(
        &headers(&[("retry-after", "9"), ("retry-after-ms", "250")]),
        now(),
    );
    assert_eq!(hint.map(|h| h.delay), Some(Duration::from_millis(250)));
}

#[test]
fn retry_after_accepts_fractional_seconds_and_http_dates() {
    assert_eq!(
        parse_retry_after("1.5", now()),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now()),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now()),
        None
    );
}

#[test]
fn malformed_retry_after_values_are_ignored() {
    for bad in ["soon", "-5", "NaN", "inf", "1e3", "", " ", "0x10", "1.2.3"] {
        assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
    }
}

#[test]
fn a_malformed_header_falls_through_to_the_next_source() {
    let hint = hinted_delay(
        &headers(&[("retry-after-ms", "NaN"), ("retry-after", "3")]),
        now(),
    );
    assert_eq!(
        hint,
        Some(Hint {
            delay: Duration::from_secs(3),
            source: HintSource::RetryAfter
        })
    );
}

#[test]
fn go_durations_parse_as_openai_sends_them() {
    assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
    assert_eq!(
        parse_go_duration("7.66s"),
        Some(Duration::from_millis(7660))
    );
    assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
    assert_eq!(
        parse_go_duration("2m59.56s"),
        Some(Duration::from_millis(179_560))
    );
    assert_eq!(
        parse_go_duration("1h2m3.5s"),
        Some(Duration::from_millis(3_723_500))
    );
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    for bad in ["", "6", "s", "6x", "-1s", "1h-1s"] {
        assert_eq!(parse_go_duration(bad), None, "{bad:?}");
    }
    assert_eq!(parse_go_duration("9999999h"), Some(MAX_HINT), "too long");
}

#[test]
fn openai_reset_headers_count_only_when_the_bucket_is_empty() {
    let full = headers(&[
        ("x-ratelimit-remaining-requests", "12"),
        ("x-ratelimit-reset-requests", "6m0s"),
    ]);
    assert_eq!(rate_limit_reset(&full, now()), None);
    let empty = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "6m0s"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "7.66s"),
    ]);
    assert_eq!(
        rate_limit_reset(&empty, now()).map(|h| h.delay),
        Some(Duration::from_secs(360))
    );
}

#[test]
fn anthropic_reset_headers_are_rfc3339_instants() {
    let map = headers(&[
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2026-11-23T12:00:42Z"),
    ]);
    assert_eq!(
        hinted_delay(&map, now()),
        Some(Hint {
            delay: Duration::from_secs(42),
            source: HintSource::RateLimitReset
        })
    );
    assert_eq!(
        parse_rfc3339("2026-11-23T13:00:42.5+01:00"),
        Some(now() + Duration::from_millis(42_500))
    );
    for bad in [
        "2026-13-01T00:00:00Z",
        "2026-11-23 12:00",
        "yesterday",
        "2026-11-23T12:00:00",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
    }
}

#[test]
fn ietf_ratelimit_fields_are_read_opportunistically() {
    let map = headers(&[("ratelimit", "\"burst\";r=0;t=30, \"daily\";r=10;t=3600")]);
    assert_eq!(
        rate_limit_reset(&map, now()).map(|h| h.delay),
        Some(Duration::from_secs(30))
    );
    let old = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "7")]);
    assert_eq!(
        rate_limit_reset(&old, now()).map(|h| h.delay),
        Some(Duration::from_secs(7))
    );
}

#[test]
fn message_hints_cover_azure_openai_and_gemini_wording() {
    assert_eq!(
        parse_message_hint("... pricing tier. Please retry after 20 seconds. Please go here"),
        Some(Duration::from_secs(20))
    );
    assert_eq!(
        parse_message_hint("Rate limit reached for gpt-4o. Please try again in 6m0s. Visit"),
        Some(Duration::from_secs(360))
    );
    assert_eq!(
        parse_message_hint("Quota exceeded. Please retry in 52.45s."),
        Some(Duration::from_millis(52_450))
    );
    assert_eq!(
        parse_message_hint("Please try again in 12ms."),
        Some(Duration::from_millis(12))
    );
    assert_eq!(parse_message_hint("please retry later"), None);
}

#[test]
fn x_should_retry_is_a_strict_boolean() {
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "true")])),
        Some(true)
    );
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "FALSE")])),
        Some(false)
    );
    assert_eq!(should_retry(&headers(&[("x-should-retry", "yes")])), None);
    assert_eq!(should_retry(&HeaderMap::new()), None);
}

#[test]
fn hints_above_the_ceiling_are_too_long_not_absent() {
    assert_eq!(parse_seconds("172800"), Some(MAX_HINT));
    assert_eq!(parse_seconds("172801"), Some(MAX_HINT));
    assert_eq!(parse_seconds("99999999999"), Some(MAX_HINT));
    // However long it is written: 33 digits, and a second with 40 zeros.
    assert_eq!(parse_seconds(&"9".repeat(33)), Some(MAX_HINT));
    assert_eq!(
        parse_seconds(&format!("1.{}", "0".repeat(40))),
        Some(Duration::from_secs(1))
    );
    assert_eq!(parse_milliseconds("1e400"), None, "not a plain decimal");
    assert_eq!(
        parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now()),
        Some(MAX_HINT)
    );
}

#[test]
fn a_message_hint_is_searched_in_the_first_four_kib_only_even_mid_character() {
    let tail = " Please retry after 20 seconds.";
    // 4095 ASCII bytes, then a two-byte character across the 4 KiB mark.
    let message = format!("{}é{tail}", "a".repeat(4095));
    assert_eq!(parse_message_hint(&message), None);
    assert_eq!(
        parse_message_hint(&format!("é{tail}")),
        Some(Duration::from_secs(20))
    );
}

#[test]
fn an_http_date_in_the_past_is_no_hint() {
    // now() is Mon, 23 Nov 2026 12:00:00 GMT.
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 11:59:00 GMT", now()),
        None
    );
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 12:00:00 GMT", now()),
        None
    );
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now()),
        Some(Duration::from_secs(30))
    );
}
