//! Small formatting helpers for what goes on the wire: JSON strings,
//! durations and timestamps in the forms the providers use.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_json_escaped(out, s);
    out.push('"');
}

/// Appends `s` to `out` escaped for the inside of a JSON string.
pub(crate) fn push_json_escaped(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
}

// The testkit writes providers' formats with its own code, not classify's
// writers (`hint::format_go_duration`, `hint::format_rfc3339`): it is the
// oracle the parsers are tested against, so it shares no code with them.

/// A duration as Go's `time.Duration.String()` prints it, the form OpenAI's
/// `x-ratelimit-reset-*` headers use: `12ms`, `1.5s`, `6m0s`, `1h2m3s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_secs = d.as_secs();
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let frac = d.subsec_millis();
    let mut out = String::new();
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

/// `at` as an RFC 3339 UTC timestamp with `fraction_digits` (0–9) digits
/// after the second: Anthropic's reset headers use 0, Ollama's
/// `created_at` uses 9.
pub(crate) fn rfc3339(at: SystemTime, fraction_digits: u32) -> String {
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

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms").
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

/// Seconds, rounded up, as `retry-after` carries them.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn go_durations_match_what_openai_sends() {
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(7660)), "7.66s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(179_560)), "2m59.56s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn rfc3339_timestamps_are_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_435_240) + Duration::from_millis(5);
        assert_eq!(rfc3339(at, 0), "2026-11-23T12:00:40Z");
        assert_eq!(rfc3339(at, 3), "2026-11-23T12:00:40.005Z");
        assert_eq!(rfc3339(UNIX_EPOCH, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400), 0),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
