#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins, for arbitrary input, that the hint parsers and `classify_response`
//! never panic; that no hint exceeds `hint::MAX_HINT`; and that
//! well-formed hints (milliseconds, seconds, Go and protobuf durations,
//! RFC 3339 instants, HTTP-dates, message phrases) parse to exactly what they
//! say. The scanner's properties are in `proptest_scanner.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::Value;
use tower_llm_classify::hint::{
    self, MAX_HINT, hinted_delay, parse_go_duration, parse_message_hint, parse_milliseconds,
    parse_proto_duration, parse_retry_after, parse_rfc3339, parse_seconds, rate_limit_reset,
    should_retry,
};
use tower_llm_classify::{Phase, Provider, classify_response};

/// 2100-01-01T00:00:00Z.
const YEAR_2100: u64 = 4_102_444_800;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn within_ceiling(delay: Option<Duration>) -> Result<(), TestCaseError> {
    if let Some(delay) = delay {
        prop_assert!(delay <= MAX_HINT, "{delay:?} is above MAX_HINT");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

/// Go-style duration components: hours, minutes, seconds (with an optional
/// two-digit fraction), milliseconds, microseconds.
type GoParts = (
    Option<u64>,
    Option<u64>,
    Option<(u64, Option<u64>)>,
    Option<u64>,
    Option<u64>,
);

fn go_parts() -> impl Strategy<Value = GoParts> {
    (
        proptest::option::of(0_u64..60),
        proptest::option::of(0_u64..200),
        proptest::option::of((0_u64..200, proptest::option::of(0_u64..100))),
        proptest::option::of(0_u64..5000),
        proptest::option::of(0_u64..5000),
    )
        .prop_filter("at least one component", |p| {
            p.0.is_some() || p.1.is_some() || p.2.is_some() || p.3.is_some() || p.4.is_some()
        })
}

/// The Go duration string of `parts`, and the duration it stands for.
fn go_duration((h, m, s, ms, us): GoParts) -> (String, Duration) {
    let mut text = String::new();
    let mut total = Duration::ZERO;
    if let Some(h) = h {
        text += &format!("{h}h");
        total += Duration::from_secs(h * 3600);
    }
    if let Some(m) = m {
        text += &format!("{m}m");
        total += Duration::from_secs(m * 60);
    }
    if let Some((s, fraction)) = s {
        match fraction {
            Some(f) => text += &format!("{s}.{f:02}s"),
            None => text += &format!("{s}s"),
        }
        total += Duration::from_secs(s) + Duration::from_millis(fraction.unwrap_or(0) * 10);
    }
    if let Some(ms) = ms {
        text += &format!("{ms}ms");
        total += Duration::from_millis(ms);
    }
    if let Some(us) = us {
        text += &format!("{us}us");
        total += Duration::from_micros(us);
    }
    (text, total)
}

/// What a parser should return for `delay`: itself, or the ceiling when it
/// is longer (too long, not absent).
fn capped(delay: Duration) -> Option<Duration> {
    Some(delay.min(MAX_HINT))
}

/// Strings aimed at the parsers' edges, and anything at all.
fn parser_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ 0-9.+-]{0,40}",
        "[0-9.]{0,8}(h|m|s|ms|us|µs|ns|x)?[0-9.]{0,8}(h|m|s|ms|us|µs|ns)?",
        "[0-9]{0,5}-[0-9]{0,3}-[0-9]{0,3}[Tt ][0-9]{0,3}:[0-9]{0,3}:[0-9]{0,3}(\\.[0-9]{0,14})?([Zz]|[+-][0-9]{1,2}:[0-9]{1,2}|.)?",
        "(Mon|Sun|Fri), [0-9]{1,2} (Jan|Feb|Nov) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "(.{0,20})(retry after |try again in |retry in |try again after |RETRY AFTER )[0-9.]{0,12} ?(seconds|second|secs|minutes|milliseconds|ms|s|m|h|µs|[a-z]{0,6})(.{0,8})",
    ]
}

/// Header value bytes: anything (often invalid), printable, or plausible.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        select(
            &[
                "0",
                " 0 ",
                "1",
                "2",
                "-1",
                "1.5",
                "NaN",
                "inf",
                "1e3",
                "172800",
                "172801",
                "6m0s",
                "7.66s",
                "12ms",
                "true",
                "FALSE",
                "yes",
                "\"burst\";r=0;t=30",
                "\"a\";r=0;t=999999, \"b\";r=0;t=5",
                "2026-11-23T12:00:42Z",
                "2026-11-23T13:00:42.5+01:00",
                "Mon, 23 Nov 2026 12:00:30 GMT",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        go_parts().prop_map(|parts| go_duration(parts).0.into_bytes()),
        (0_u64..YEAR_2100).prop_map(|s| httpdate::fmt_http_date(at(s)).into_bytes()),
    ]
}

/// Every header a hint or a classification is read from.
const HEADER_NAMES: &[&str] = &[
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "retry-after",
    "grpc-retry-pushback-ms",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "ratelimit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-should-retry",
    "x-request-id",
    "request-id",
    "apim-request-id",
    "x-amzn-requestid",
    "x-amzn-errortype",
    "grpc-status",
    "grpc-message",
    "content-type",
];

/// A header map of those names with arbitrary values (invalid ones dropped).
fn headers() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((select(HEADER_NAMES), header_bytes()), 0..16).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        map
    })
}

const JSON_KEYS: &[&str] = &[
    "error",
    "message",
    "Message",
    "detail",
    "code",
    "type",
    "status",
    "param",
    "details",
    "error_code",
    "reason",
    "retryDelay",
    "violations",
    "quotaId",
    "innererror",
    "inner_error",
    "errors",
    "metadata",
    "reasons",
    "flagged_input",
    "originalStatusCode",
    "__type",
    "Code",
    "request_id",
    "response",
];

const JSON_WORDS: &[&str] = &[
    "",
    "error",
    "rate_limit_exceeded",
    "insufficient_quota",
    "overloaded_error",
    "context_length_exceeded",
    "content_filter",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "MODEL_CAPACITY_EXHAUSTED",
    "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    "ThrottlingException:http://internal.amazon.com/coral/",
    "com.amazon.coral.service#ValidationException",
    "429",
    "503",
    "1300",
    "99999",
    "47s",
    "0.5s",
    "-3s",
    "1e9s",
    "Please retry after 20 seconds.",
    "Please try again in 6m0s.",
    "Please retry in 52.45s.",
    "prompt is too long: 210000 tokens > 200000 maximum",
    "Request too large for gpt-4o",
    "Incorrect API key provided: sk-proj-0123456789abcdef.",
    "Bearer abc.def",
    "rate - limit",
    "ééé",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0_u64..1000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(JSON_WORDS).prop_map(|s| Value::String(s.to_owned())),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((select(JSON_KEYS), inner), 0..6).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(key, value)| (key.to_owned(), value))
                        .collect(),
                )
            }),
        ]
    })
}

/// Error bodies: arbitrary bytes, provider-shaped JSON, and JSON cut short.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (json_value(), any::<Index>()).prop_map(|(v, cut)| {
            let bytes = serde_json::to_vec(&v).unwrap();
            let at = cut.index(bytes.len() + 1);
            bytes[..at].to_vec()
        }),
    ]
}

// ---------------------------------------------------------------------------
// Helpers for the round trips.
// ---------------------------------------------------------------------------

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), written independently of the crate's inverse.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 text of the UTC instant `seconds`, written in the zone
/// `offset_minutes` east of UTC.
fn rfc3339(
    seconds: u64,
    fraction: &str,
    offset_minutes: i64,
    separator: char,
    zulu: char,
) -> String {
    let local = seconds as i64 + offset_minutes * 60;
    let (year, month, day) = civil_from_days(local.div_euclid(86_400));
    let of_day = local.rem_euclid(86_400);
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction}")
    };
    let zone = if offset_minutes == 0 && zulu != '+' {
        zulu.to_string()
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let abs = offset_minutes.abs();
        format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
    };
    format!(
        "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
    )
}

// ---------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn string_parsers_never_panic_and_stay_under_the_ceiling(
        input in parser_input(),
        now in 0_u64..YEAR_2100,
    ) {
        let now = at(now);
        within_ceiling(parse_retry_after(&input, now))?;
        within_ceiling(parse_seconds(&input))?;
        within_ceiling(parse_milliseconds(&input))?;
        within_ceiling(parse_go_duration(&input))?;
        within_ceiling(parse_proto_duration(&input))?;
        within_ceiling(parse_message_hint(&input))?;
        let _ = parse_rfc3339(&input);
    }

    #[test]
    fn header_parsers_never_panic_and_stay_under_the_ceiling(
        headers in headers(),
        now in 0_u64..YEAR_2100,
    ) {
        let now = at(now);
        within_ceiling(hinted_delay(&headers, now).map(|h| h.delay))?;
        within_ceiling(rate_limit_reset(&headers, now).map(|h| h.delay))?;
        if let Some(retry) = should_retry(&headers) {
            let value = headers["x-should-retry"].to_str().unwrap().trim().to_ascii_lowercase();
            prop_assert_eq!(value, retry.to_string());
        }
    }

    #[test]
    fn hinted_delay_prefers_retry_after_ms_whatever_else_is_there(
        mut headers in headers(),
        ms in 0_u32..=u32::MAX,
        now in 0_u64..YEAR_2100,
    ) {
        headers.insert("retry-after-ms", HeaderValue::from(ms));
        let hint = hinted_delay(&headers, at(now));
        prop_assert_eq!(hint.map(|h| h.delay), capped(Duration::from_millis(u64::from(ms))));
        prop_assert_eq!(hint.map(|h| h.source), Some(hint::HintSource::RetryAfterMs));
    }

    #[test]
    fn milliseconds_round_trip(ms in any::<u32>(), pad in "[ \t]{0,2}") {
        let expected = capped(Duration::from_millis(u64::from(ms)));
        prop_assert_eq!(parse_milliseconds(&format!("{pad}{ms}{pad}")), expected);
    }

    #[test]
    fn seconds_round_trip_with_a_millisecond_fraction(seconds in 0_u64..400_000, millis in 0_u64..1000) {
        let expected = capped(Duration::from_secs(seconds) + Duration::from_millis(millis));
        let text = format!("{seconds}.{millis:03}");
        prop_assert_eq!(parse_seconds(&text), expected);
        prop_assert_eq!(parse_retry_after(&text, UNIX_EPOCH), expected);
        prop_assert_eq!(parse_proto_duration(&format!("{text}s")), expected);
        prop_assert_eq!(parse_seconds(&seconds.to_string()), capped(Duration::from_secs(seconds)));
    }

    #[test]
    fn go_durations_parse_to_the_sum_of_their_components(parts in go_parts()) {
        let (text, total) = go_duration(parts);
        prop_assert_eq!(parse_go_duration(&text), capped(total), "{}", text);
    }

    #[test]
    fn message_hints_parse_what_the_phrase_says(
        parts in go_parts(),
        seconds in 0_u64..400_000,
        prefix in "[A-Za-z ,.]{0,30}",
    ) {
        let (go, total) = go_duration(parts);
        let message = format!("{prefix} Please try again in {go}. Visit the docs.");
        prop_assert_eq!(parse_message_hint(&message), capped(total), "{}", message);
        let message = format!("{prefix} Please retry after {seconds} seconds.");
        prop_assert_eq!(parse_message_hint(&message), capped(Duration::from_secs(seconds)));
    }

    #[test]
    fn rfc3339_instants_round_trip(
        seconds in 0_u64..YEAR_2100,
        fraction in "[0-9]{0,12}",
        offset_minutes in -(14 * 60_i64)..=14 * 60,
        separator in select(&['T', 't', ' '][..]),
        zulu in select(&['Z', 'z', '+'][..]),
    ) {
        let text = rfc3339(seconds, &fraction, offset_minutes, separator, zulu);
        // Nanoseconds: the first nine digits of the fraction.
        let digits: String = fraction.chars().take(9).collect();
        let nanos = if digits.is_empty() {
            0
        } else {
            format!("{digits:0<9}").parse::<u32>().unwrap()
        };
        let expected = UNIX_EPOCH + Duration::new(seconds, nanos);
        prop_assert_eq!(parse_rfc3339(&text), Some(expected), "{}", text);
    }

    #[test]
    fn http_dates_round_trip_as_retry_after(
        now in 0_u64..YEAR_2100,
        ahead in 0_u64..400_000,
        behind in 0_u64..YEAR_2100,
    ) {
        let date = httpdate::fmt_http_date(at(now + ahead));
        let expected = if ahead == 0 { None } else { capped(Duration::from_secs(ahead)) };
        prop_assert_eq!(parse_retry_after(&date, at(now)), expected, "{}", date);
        // A date that has passed is no hint: the caller's backoff decides.
        let past = httpdate::fmt_http_date(at(now.saturating_sub(behind)));
        prop_assert_eq!(parse_retry_after(&past, at(now)), None);
    }

    #[test]
    fn classify_response_never_panics(
        status in 100_u16..=999,
        headers in headers(),
        body in error_body(),
        provider in select(&Provider::ALL[..]),
        now in 0_u64..YEAR_2100,
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        let c = classify_response(provider, status, &headers, &body, at(now));
        prop_assert_eq!(c.status(), Some(status));
        prop_assert_eq!(c.phase(), Phase::AfterHeaders);
        prop_assert_eq!(c.provider(), provider);
        within_ceiling(c.retry_after())?;
        let _ = c.to_string();
    }
}
