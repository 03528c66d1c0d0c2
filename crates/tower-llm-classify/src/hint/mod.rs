//! Server hints: how long the provider asks us to wait, and whether to retry.
//!
//! Every parser here takes untrusted bytes. Malformed, negative, NaN or
//! infinite values never panic and never produce a delay: they are ignored,
//! so the caller falls back to its own backoff, as is an HTTP-date that has
//! already passed (the SDKs do the same: openai-python uses a `retry-after`
//! only when it is above zero). A well-formed wait longer than [`MAX_HINT`]
//! is *too long*, not absent: it comes back as exactly `MAX_HINT`, so the
//! retry layer gives up at once and fallback moves on instead of retrying
//! within seconds a server that asked for days.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use tower_llm_classify::hint::{hinted_delay, HintSource};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "2".parse().unwrap());
//! headers.insert("retry-after-ms", "1500".parse().unwrap());
//! let hint = hinted_delay(&headers, SystemTime::now()).unwrap();
//! // Stainless SDKs read retry-after-ms first (openai-python _base_client.py).
//! assert_eq!(hint.delay, Duration::from_millis(1500));
//! assert_eq!(hint.source, HintSource::RetryAfterMs);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

mod budget;
mod write;

pub use budget::{RateLimitBucket, RateLimitHeaders};
pub use write::{format_go_duration, format_rfc3339};

/// The longest delay a hint may carry; a longer wait is reported as this.
///
/// Two days: long enough for Azure's daily-quota `retry after 86400 seconds`
/// (Microsoft Q&A, answers/1938028), which must reach the retry and
/// fallback layers so that they route elsewhere instead of sleeping.
pub const MAX_HINT: Duration = Duration::from_secs(2 * 24 * 60 * 60);

/// A delay the server asked for, and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hint {
    /// How long to wait before the next attempt (never above [`MAX_HINT`]).
    pub delay: Duration,
    /// Which header or body field said so.
    pub source: HintSource,
}

/// Where a [`Hint`] came from, most authoritative first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HintSource {
    /// `retry-after-ms` (OpenAI, Azure).
    RetryAfterMs,
    /// `x-ms-retry-after-ms` (Azure; read by Portkey).
    MsRetryAfterMs,
    /// `retry-after`, seconds (possibly fractional) or an HTTP-date.
    RetryAfter,
    /// gRPC `grpc-retry-pushback-ms`.
    GrpcPushback,
    /// The error body: Gemini `RetryInfo.retryDelay`, or a message such as
    /// Azure's "Please retry after N seconds".
    Body,
    /// Rate-limit reset headers of an exhausted bucket (`x-ratelimit-reset-*`,
    /// `anthropic-ratelimit-*-reset`, IETF `RateLimit`).
    RateLimitReset,
}

impl HintSource {
    /// A stable name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            HintSource::RetryAfterMs => "retry-after-ms",
            HintSource::MsRetryAfterMs => "x-ms-retry-after-ms",
            HintSource::RetryAfter => "retry-after",
            HintSource::GrpcPushback => "grpc-retry-pushback-ms",
            HintSource::Body => "body",
            HintSource::RateLimitReset => "rate-limit-reset",
        }
    }
}

/// The delay the response headers ask for, measured against `now`.
///
/// Sources in order (the first valid one wins): `retry-after-ms`,
/// `x-ms-retry-after-ms`, `retry-after`, `grpc-retry-pushback-ms`, then the
/// reset headers of an exhausted rate-limit bucket ([`rate_limit_reset`]).
/// Body hints are not read here; [`classify_response`](crate::classify_response)
/// adds them. Pass a fixed `now` in tests to pin HTTP-dates and RFC 3339
/// timestamps.
pub fn hinted_delay(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    direct_hint(headers, now).or_else(|| rate_limit_reset(headers, now))
}

/// The explicit retry headers alone, without the rate-limit reset headers.
pub(crate) fn direct_hint(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    let read = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hint = |delay, source| Some(Hint { delay, source });
    if let Some(delay) = read("retry-after-ms").and_then(parse_milliseconds) {
        return hint(delay, HintSource::RetryAfterMs);
    }
    if let Some(delay) = read("x-ms-retry-after-ms").and_then(parse_milliseconds) {
        return hint(delay, HintSource::MsRetryAfterMs);
    }
    if let Some(delay) = read("retry-after").and_then(|v| parse_retry_after(v, now)) {
        return hint(delay, HintSource::RetryAfter);
    }
    if let Some(delay) = read("grpc-retry-pushback-ms").and_then(parse_milliseconds) {
        return hint(delay, HintSource::GrpcPushback);
    }
    None
}

/// The wait until an *exhausted* rate-limit bucket refills, from the reset
/// headers, or `None` when no bucket reports zero remaining.
///
/// - OpenAI, Groq, Together: `x-ratelimit-reset-{requests,tokens}` (Go-style
///   durations such as `6m0s`, `7.66s`, `12ms`; faraday-retry misread `6m0s`
///   as 6 s, crmne/ruby_llm PR #850) when the matching
///   `x-ratelimit-remaining-*` is `0`.
/// - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`
///   (RFC 3339 instants) when the matching `-remaining` is `0`.
/// - IETF draft: `RateLimit: "name";r=0;t=30`, or the older
///   `RateLimit-Remaining: 0` with `RateLimit-Reset: 30`.
///
/// When several buckets are exhausted, the longest wait wins. The reset time is
/// when the bucket is *fully* replenished (thoughtbot, "How to respect OpenAI's
/// rate limits"), so it is a safe upper estimate.
pub fn rate_limit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Hint> {
    let read = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let exhausted = |name: &str| read(name).is_some_and(|v| v.trim() == "0");
    let mut longest: Option<Duration> = None;
    let mut consider = |delay: Option<Duration>| {
        if let Some(delay) = delay {
            longest = Some(longest.map_or(delay, |d| d.max(delay)));
        }
    };
    for (remaining, reset) in [
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ] {
        if exhausted(remaining) {
            consider(read(reset).and_then(parse_go_duration));
        }
    }
    for (remaining, reset) in [
        (
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ),
        (
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ),
        (
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ),
        (
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ),
    ] {
        if exhausted(remaining) {
            consider(
                read(reset)
                    .and_then(parse_rfc3339)
                    .and_then(|at| until(at, now)),
            );
        }
    }
    if let Some(value) = read("ratelimit") {
        consider(parse_ietf_ratelimit(value));
    }
    if exhausted("ratelimit-remaining") {
        consider(read("ratelimit-reset").and_then(parse_seconds));
    }
    longest.map(|delay| Hint {
        delay,
        source: HintSource::RateLimitReset,
    })
}

/// `x-should-retry: true|false`, which overrides status-based decisions in
/// every Stainless SDK (openai-python, anthropic-python, openai-node, -go,
/// -java). Anything else is `None`.
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get("x-should-retry")?.to_str().ok()?.trim();
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Parses a `retry-after` value: delta seconds (integer or, as the SDKs
/// accept, fractional) or an HTTP-date, measured against `now`. A date that
/// is not in the future is no hint.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.as_bytes()[0].is_ascii_digit() || value.starts_with(['.', '-', '+']) {
        return parse_seconds(value);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    until(at, now)
}

/// Parses a non-negative decimal number of seconds (`"2"`, `"1.5"`).
pub fn parse_seconds(value: &str) -> Option<Duration> {
    parse_scaled(value, 1.0)
}

/// Parses a non-negative decimal number of milliseconds (`"1500"`, `"12.5"`).
pub fn parse_milliseconds(value: &str) -> Option<Duration> {
    parse_scaled(value, 1e-3)
}

fn parse_scaled(value: &str, seconds_per_unit: f64) -> Option<Duration> {
    let value = value.trim();
    // Only plain decimals: no "inf", "NaN", exponents or hex. Any length
    // (a header's is bounded by the server's head limit): a long one is a
    // long wait, capped below, not none.
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'+')
    {
        return None;
    }
    let number: f64 = value.parse().ok()?;
    checked_duration(number * seconds_per_unit)
}

fn checked_duration(seconds: f64) -> Option<Duration> {
    // Rounded to whole microseconds, so float noise ("7.66" s) stays exact in ms.
    let micros = (seconds * 1e6).round();
    if !micros.is_finite() || micros < 0.0 {
        return None;
    }
    if micros > MAX_HINT.as_micros() as f64 {
        return Some(MAX_HINT);
    }
    Some(Duration::from_micros(micros as u64))
}

/// Parses a Go-style duration as OpenAI's `x-ratelimit-reset-*` headers send
/// them: a sequence of decimal numbers with units `h`, `m`, `s`, `ms`, `us`
/// (or `µs`), `ns` (`"6m0s"`, `"7.66s"`, `"12ms"`, `"1h2m3.5s"`). A bare `"0"`
/// is zero.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = value;
    let mut total = 0.0_f64;
    if rest.is_empty() || rest.len() > 64 {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let (unit, len) = if rest.starts_with("ms") {
            (1e-3, 2)
        } else if rest.starts_with("us") {
            (1e-6, 2)
        } else if rest.starts_with("µs") {
            (1e-6, "µs".len())
        } else if rest.starts_with("ns") {
            (1e-9, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += number * unit;
    }
    checked_duration(total)
}

/// Parses a protobuf `Duration` in its JSON form (`"47s"`, `"0.5s"`,
/// `"1.000340s"`), as Gemini's `RetryInfo.retryDelay` carries it.
pub fn parse_proto_duration(value: &str) -> Option<Duration> {
    parse_seconds(value.trim().strip_suffix('s')?)
}

/// Parses an RFC 3339 timestamp (`2025-08-21T12:40:59Z`,
/// `2025-08-21T12:40:59.123+02:00`) as Anthropic's reset headers send it.
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let b = value.trim().as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0_i64, |acc, d| Some(acc * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0_u32;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos = nanos.saturating_mul(10);
        }
    }
    let offset_seconds = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let field = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let offset = field(*h1, *h2)? * 3600 + field(*m1, *m2)? * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The IETF draft's `RateLimit: "default";r=0;t=30` (several policies
/// separated by commas): the longest `t` of a policy with `r=0`.
fn parse_ietf_ratelimit(value: &str) -> Option<Duration> {
    let mut longest: Option<Duration> = None;
    for item in value.split(',') {
        let mut remaining = None;
        let mut reset = None;
        for param in item.split(';').skip(1) {
            match param.trim().split_once('=') {
                Some(("r", v)) => remaining = Some(v.trim()),
                Some(("t", v)) => reset = parse_seconds(v),
                _ => {}
            }
        }
        if remaining == Some("0")
            && let Some(reset) = reset
        {
            longest = Some(longest.map_or(reset, |d| d.max(reset)));
        }
    }
    longest
}

/// A wait hint stated in an error message: "Please retry after 20 seconds"
/// (Azure), "Please try again in 6m0s" / "in 7.66s" / "in 12ms" (OpenAI),
/// "Please retry in 52.45s" (Gemini).
pub fn parse_message_hint(message: &str) -> Option<Duration> {
    const MARKERS: [&str; 4] = [
        "retry after ",
        "try again in ",
        "retry in ",
        "try again after ",
    ];
    // Only the first 4 KiB are searched (cut at a character boundary).
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message[..end];
    for marker in MARKERS {
        let Some(at) = find_ascii_case_insensitive(message, marker) else {
            continue;
        };
        let rest = &message[at + marker.len()..];
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if number_len == 0 {
            continue;
        }
        let (number, tail) = rest.split_at(number_len);
        let word: String = tail
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_lowercase();
        let delay = match word.as_str() {
            "second" | "seconds" | "sec" | "secs" => parse_seconds(number),
            "millisecond" | "milliseconds" => parse_milliseconds(number),
            "minute" | "minutes" => {
                parse_seconds(number).and_then(|d| checked_duration(d.as_secs_f64() * 60.0))
            }
            _ => {
                // Go-style compact form directly after the number: "6m0s", "7.66s".
                let compact_len = rest
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'.')
                    .count();
                parse_go_duration(rest[..compact_len].trim_end_matches('.'))
            }
        };
        if delay.is_some() {
            return delay;
        }
    }
    None
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.len() > h.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// The time from `now` until `at`: `None` when `at` is not in the future,
/// at most [`MAX_HINT`].
fn until(at: SystemTime, now: SystemTime) -> Option<Duration> {
    let delay = at.duration_since(now).ok().filter(|d| !d.is_zero())?;
    Some(delay.min(MAX_HINT))
}

#[cfg(test)]
mod tests;
