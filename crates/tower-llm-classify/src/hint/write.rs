//! The writers of the formats the parsers beside them read: what a server
//! (the gateway answering its own rate limits, the testkit's simulated
//! providers) sends so that every client's parser reads it back.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `d` as Go's `time.Duration.String()` prints it, to the millisecond: the
/// form of OpenAI's `x-ratelimit-reset-*` headers (`0s`, `12ms`, `1.5s`,
/// `6m0s`, `1h2m3s`). [`parse_go_duration`](super::parse_go_duration)
/// reads it back.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_classify::hint::format_go_duration;
///
/// assert_eq!(format_go_duration(Duration::from_millis(90_250)), "1m30.25s");
/// ```
pub fn format_go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_secs = d.as_secs();
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let frac = d.subsec_millis();
    let mut out = String::with_capacity(12);
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let digits = format!("{frac:03}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// `at` as an RFC 3339 UTC timestamp with `fraction_digits` (0–9, more are
/// taken as 9) digits after the second, truncated: Anthropic's
/// `anthropic-ratelimit-*-reset` headers use 0, Ollama's `created_at` 9.
/// [`parse_rfc3339`](super::parse_rfc3339) reads it back.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_llm_classify::hint::format_rfc3339;
///
/// let at = UNIX_EPOCH + Duration::from_millis(951_782_400_005);
/// assert_eq!(format_rfc3339(at, 0), "2000-02-29T00:00:00Z");
/// assert_eq!(format_rfc3339(at, 3), "2000-02-29T00:00:00.005Z");
/// ```
pub fn format_rfc3339(at: SystemTime, fraction_digits: u32) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    let digits = fraction_digits.min(9);
    if digits > 0 {
        let frac = since.subsec_nanos() / 10u32.pow(9 - digits);
        let _ = write!(out, ".{frac:0width$}", width = digits as usize);
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms"); the
/// inverse of the parser's `days_from_civil`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::super::{parse_go_duration, parse_rfc3339};
    use super::*;

    #[test]
    fn go_durations_are_written_as_openai_sends_them() {
        let cases = [
            (0, "0s"),
            (12, "12ms"),
            (1_000, "1s"),
            (1_500, "1.5s"),
            (7_660, "7.66s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (179_560, "2m59.56s"),
            (3_723_000, "1h2m3s"),
        ];
        for (ms, text) in cases {
            assert_eq!(
                format_go_duration(Duration::from_millis(ms)),
                text,
                "{ms} ms"
            );
        }
    }

    #[test]
    fn written_go_durations_parse_back_to_the_millisecond() {
        for ms in [1, 999, 1_000, 1_001, 59_999, 60_000, 3_599_999, 86_400_123] {
            let d = Duration::from_millis(ms);
            assert_eq!(
                parse_go_duration(&format_go_duration(d)),
                Some(d),
                "{ms} ms"
            );
        }
    }

    #[test]
    fn rfc3339_timestamps_are_utc_and_parse_back() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_435_240) + Duration::from_millis(5);
        assert_eq!(format_rfc3339(at, 0), "2026-11-23T12:00:40Z");
        assert_eq!(format_rfc3339(at, 3), "2026-11-23T12:00:40.005Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH, 0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(at, 3)), Some(at));
        assert_eq!(
            parse_rfc3339(&format_rfc3339(at, 0)),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_435_240))
        );
    }
}
