//! What a response says is left of its key's rate limits: remaining
//! requests and tokens, and when each bucket is full again.
//!
//! Providers send these on every answer, successes included, so a client
//! can slow down *before* the 429:
//!
//! - OpenAI, Azure OpenAI, Groq, Together: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`,
//!   the resets as Go-style durations (`"1s"`, `"6m0s"`, `"12ms"`;
//!   platform.openai.com/docs/guides/rate-limits, "Rate limits in headers").
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
//!   the resets as RFC 3339 instants (docs.claude.com/en/api/rate-limits,
//!   "Response headers").
//! - The IETF draft (draft-ietf-httpapi-ratelimit-headers):
//!   `RateLimit: "default";r=50;t=30` with `RateLimit-Policy: "default";q=100;w=60`,
//!   and the older `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`.
//!
//! The read is one pass over the response's header names: a response
//! without such headers costs a comparison of each name's first bytes.
//! Malformed values are ignored (that bucket is not reported), never a
//! panic.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use tower_llm_classify::hint::RateLimitHeaders;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-ratelimit-limit-requests", "500".parse().unwrap());
//! headers.insert("x-ratelimit-remaining-requests", "499".parse().unwrap());
//! headers.insert("x-ratelimit-reset-requests", "120ms".parse().unwrap());
//! let read = RateLimitHeaders::read(&headers, SystemTime::now()).unwrap();
//! let requests = read.requests.unwrap();
//! assert_eq!((requests.remaining, requests.limit), (499, Some(500)));
//! assert_eq!(requests.reset, Some(Duration::from_millis(120)));
//! assert!(read.tokens.is_none());
//! ```

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{MAX_HINT, parse_go_duration, parse_rfc3339, parse_seconds};

/// One rate-limit bucket as a response reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitBucket {
    /// What is left (requests, or tokens).
    pub remaining: u64,
    /// The bucket's size, when the response says.
    pub limit: Option<u64>,
    /// The time from the response until the bucket is *fully* replenished
    /// (OpenAI's and Anthropic's meaning), when the response says; zero
    /// when the reset instant has already passed. At most
    /// [`MAX_HINT`](super::MAX_HINT).
    pub reset: Option<Duration>,
}

/// Every rate-limit bucket a response reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitHeaders {
    /// Requests left.
    pub requests: Option<RateLimitBucket>,
    /// Tokens left. With Anthropic's separate input, output and combined
    /// token buckets, the one with the least left.
    pub tokens: Option<RateLimitBucket>,
}

/// The raw values found in the one pass, parsed afterwards.
#[derive(Default)]
struct Raw<'a> {
    /// Per bucket: limit, remaining, reset.
    openai_requests: [Option<&'a str>; 3],
    openai_tokens: [Option<&'a str>; 3],
    anthropic_requests: [Option<&'a str>; 3],
    /// Combined, input, output.
    anthropic_tokens: [[Option<&'a str>; 3]; 3],
    ietf: Option<&'a str>,
    ietf_policy: Option<&'a str>,
    /// Older drafts' separate fields.
    ietf_old: [Option<&'a str>; 3],
}

impl RateLimitHeaders {
    /// Reads the rate-limit headers of a response received at `now` (the
    /// wall clock, for Anthropic's RFC 3339 resets). `None` when it has
    /// none that parse.
    pub fn read(headers: &HeaderMap, now: SystemTime) -> Option<RateLimitHeaders> {
        Self::read_with(headers, || now)
    }

    /// As [`read`](Self::read), reading the wall clock only when the
    /// response has rate-limit headers (a layer that reads every response
    /// passes `SystemTime::now`).
    pub fn read_with(
        headers: &HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> Option<RateLimitHeaders> {
        let mut raw = Raw::default();
        let mut seen = false;
        for (name, value) in headers {
            let name = name.as_str();
            // Header names are lower case; most responses have none of
            // these, and the first byte tells most names apart.
            let Some(first) = name.as_bytes().first() else {
                continue;
            };
            if !matches!(first, b'x' | b'a' | b'r') {
                continue;
            }
            seen |= raw.note(name, value);
        }
        if !seen {
            return None;
        }
        let read = raw.parse(now());
        (read.requests.is_some() || read.tokens.is_some()).then_some(read)
    }
}

impl<'a> Raw<'a> {
    /// Files `value` under `name` if it is a rate-limit header (and
    /// visible ASCII: checked only for the names that are).
    fn note(&mut self, name: &str, value: &'a http::HeaderValue) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        match value.to_str() {
            Ok(value) => {
                *slot = Some(value);
                true
            }
            Err(_) => false,
        }
    }

    /// Where a rate-limit header named `name` is filed; `None` for any
    /// other name. One `match` over the names (compared by length first,
    /// then bytes): splitting each name into prefix, field and bucket cost
    /// several times more, for the dozen headers of every answer.
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'a str>> {
        let (limit, remaining, reset) = (0, 1, 2);
        Some(match name {
            "x-ratelimit-limit-requests" => &mut self.openai_requests[limit],
            "x-ratelimit-remaining-requests" => &mut self.openai_requests[remaining],
            "x-ratelimit-reset-requests" => &mut self.openai_requests[reset],
            "x-ratelimit-limit-tokens" => &mut self.openai_tokens[limit],
            "x-ratelimit-remaining-tokens" => &mut self.openai_tokens[remaining],
            "x-ratelimit-reset-tokens" => &mut self.openai_tokens[reset],
            "anthropic-ratelimit-requests-limit" => &mut self.anthropic_requests[limit],
            "anthropic-ratelimit-requests-remaining" => &mut self.anthropic_requests[remaining],
            "anthropic-ratelimit-requests-reset" => &mut self.anthropic_requests[reset],
            "anthropic-ratelimit-tokens-limit" => &mut self.anthropic_tokens[0][limit],
            "anthropic-ratelimit-tokens-remaining" => &mut self.anthropic_tokens[0][remaining],
            "anthropic-ratelimit-tokens-reset" => &mut self.anthropic_tokens[0][reset],
            "anthropic-ratelimit-input-tokens-limit" => &mut self.anthropic_tokens[1][limit],
            "anthropic-ratelimit-input-tokens-remaining" => {
                &mut self.anthropic_tokens[1][remaining]
            }
            "anthropic-ratelimit-input-tokens-reset" => &mut self.anthropic_tokens[1][reset],
            "anthropic-ratelimit-output-tokens-limit" => &mut self.anthropic_tokens[2][limit],
            "anthropic-ratelimit-output-tokens-remaining" => {
                &mut self.anthropic_tokens[2][remaining]
            }
            "anthropic-ratelimit-output-tokens-reset" => &mut self.anthropic_tokens[2][reset],
            "ratelimit" => &mut self.ietf,
            "ratelimit-policy" => &mut self.ietf_policy,
            "ratelimit-limit" => &mut self.ietf_old[limit],
            "ratelimit-remaining" => &mut self.ietf_old[remaining],
            "ratelimit-reset" => &mut self.ietf_old[reset],
            _ => return None,
        })
    }

    fn parse(&self, now: SystemTime) -> RateLimitHeaders {
        let go = |[limit, remaining, reset]: [Option<&str>; 3]| {
            bucket(limit, remaining, reset.map(parse_go_duration))
        };
        let rfc = |[limit, remaining, reset]: [Option<&str>; 3]| {
            bucket(limit, remaining, reset.map(|r| until(r, now)))
        };
        let seconds = |[limit, remaining, reset]: [Option<&str>; 3]| {
            bucket(limit, remaining, reset.map(parse_seconds))
        };
        let requests = go(self.openai_requests)
            .or_else(|| rfc(self.anthropic_requests))
            .or_else(|| self.ietf.and_then(|v| ietf(v, self.ietf_policy)))
            .or_else(|| seconds(self.ietf_old));
        let tokens = go(self.openai_tokens).or_else(|| {
            self.anthropic_tokens
                .iter()
                .filter_map(|fields| rfc(*fields))
                .min_by_key(|b| b.remaining)
        });
        RateLimitHeaders { requests, tokens }
    }
}

/// A bucket from its fields: none without a well-formed `remaining`; a
/// malformed limit or reset is left out.
fn bucket(
    limit: Option<&str>,
    remaining: Option<&str>,
    reset: Option<Option<Duration>>,
) -> Option<RateLimitBucket> {
    Some(RateLimitBucket {
        remaining: count(remaining?)?,
        limit: limit.and_then(count),
        reset: reset.flatten(),
    })
}

/// A non-negative integer of at most 19 digits (which always fits a
/// `u64`), spaces around it allowed. Read byte by byte: `str::trim`
/// and `parse` cost more than the rest of a bucket.
fn count(value: &str) -> Option<u64> {
    let digits = value.as_bytes().trim_ascii();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// The time from `now` until the RFC 3339 instant `value`: zero when it
/// has passed, at most [`MAX_HINT`].
fn until(value: &str, now: SystemTime) -> Option<Duration> {
    let at = parse_rfc3339(value)?;
    Some(at.duration_since(now).unwrap_or_default().min(MAX_HINT))
}

/// The IETF draft's `RateLimit: "name";r=R;t=T` (several policies
/// separated by commas): the policy with the least remaining; its quota
/// from `RateLimit-Policy`'s `q` of the same name, when given. Only
/// request quotas are read (a policy whose `qu` is another unit is
/// skipped).
fn ietf(value: &str, policy: Option<&str>) -> Option<RateLimitBucket> {
    let mut least: Option<(RateLimitBucket, &str)> = None;
    for item in value.split(',') {
        let mut params = item.split(';');
        let name = params.next().unwrap_or_default().trim();
        let (mut remaining, mut reset) = (None, None);
        for param in params {
            match param.trim().split_once('=') {
                Some(("r", v)) => remaining = count(v),
                Some(("t", v)) => reset = parse_seconds(v),
                _ => {}
            }
        }
        let Some(remaining) = remaining else {
            continue;
        };
        let Some(quota) = policy_quota(policy, name) else {
            continue;
        };
        if least.is_none_or(|(b, _)| remaining < b.remaining) {
            let bucket = RateLimitBucket {
                remaining,
                limit: quota,
                reset,
            };
            least = Some((bucket, name));
        }
    }
    least.map(|(bucket, _)| bucket)
}

/// `Some(q)` of the policy named `name` (`Some(None)` when there is no
/// policy field or it does not name it); `None` when that policy counts
/// something other than requests.
fn policy_quota(policy: Option<&str>, name: &str) -> Option<Option<u64>> {
    let Some(policy) = policy else {
        return Some(None);
    };
    for item in policy.split(',') {
        let mut params = item.split(';');
        if params.next().unwrap_or_default().trim() != name {
            continue;
        }
        let mut quota = None;
        for param in params {
            match param.trim().split_once('=') {
                Some(("q", v)) => quota = count(v),
                Some(("qu", unit)) if unit.trim() != "\"requests\"" => return None,
                _ => {}
            }
        }
        return Some(quota);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #[test]
        fn a_count_is_what_trimmed_digits_parse_to(
            value in "[ \t]{0,2}[0-9+a-]{0,22}[ \t]{0,2}"
        ) {
            let trimmed = value.trim();
            let expected = (!trimmed.is_empty()
                && trimmed.len() <= 19
                && trimmed.bytes().all(|b| b.is_ascii_digit()))
            .then(|| trimmed.parse::<u64>().ok())
            .flatten();
            proptest::prop_assert_eq!(count(&value), expected);
        }
    }

    use super::*;
    use std::time::UNIX_EPOCH;

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

    fn read(pairs: &[(&str, &str)]) -> Option<RateLimitHeaders> {
        RateLimitHeaders::read(&headers(pairs), now())
    }

    #[test]
    fn openai_buckets_are_read_with_go_durations() {
        let read = read(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "29000"),
            ("x-ratelimit-reset-tokens", "7.66s"),
            ("content-type", "application/json"),
        ])
        .unwrap();
        let requests = read.requests.unwrap();
        assert_eq!(requests.remaining, 0);
        assert_eq!(requests.limit, Some(500));
        assert_eq!(requests.reset, Some(Duration::from_secs(360)));
        let tokens = read.tokens.unwrap();
        assert_eq!(tokens.remaining, 29_000);
        assert_eq!(tokens.reset, Some(Duration::from_millis(7660)));
    }

    #[test]
    fn anthropic_buckets_are_read_with_rfc3339_instants_and_the_tightest_token_bucket() {
        let read = read(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2026-11-23T12:00:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "9000"),
            ("anthropic-ratelimit-tokens-reset", "2026-11-23T12:00:10Z"),
            ("anthropic-ratelimit-output-tokens-remaining", "100"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2026-11-23T12:00:20Z",
            ),
        ])
        .unwrap();
        let requests = read.requests.unwrap();
        assert_eq!((requests.remaining, requests.limit), (49, Some(50)));
        assert_eq!(requests.reset, Some(Duration::from_secs(30)));
        let tokens = read.tokens.unwrap();
        assert_eq!(tokens.remaining, 100);
        assert_eq!(tokens.reset, Some(Duration::from_secs(20)));
    }

    #[test]
    fn a_reset_instant_in_the_past_is_a_reset_now() {
        let read = read(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-11-23T11:59:00Z"),
        ])
        .unwrap();
        assert_eq!(read.requests.unwrap().reset, Some(Duration::ZERO));
    }

    #[test]
    fn ietf_fields_are_read_current_and_older_drafts() {
        let read = read(&[
            ("ratelimit", "\"burst\";r=7;t=5, \"daily\";r=900;t=3600"),
            (
                "ratelimit-policy",
                "\"burst\";q=10;w=60,\"daily\";q=1000;w=86400",
            ),
        ])
        .unwrap();
        let requests = read.requests.unwrap();
        assert_eq!((requests.remaining, requests.limit), (7, Some(10)));
        assert_eq!(requests.reset, Some(Duration::from_secs(5)));

        let read = super::tests::read(&[
            ("ratelimit-limit", "100"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "30"),
        ])
        .unwrap();
        let requests = read.requests.unwrap();
        assert_eq!((requests.remaining, requests.limit), (0, Some(100)));
        assert_eq!(requests.reset, Some(Duration::from_secs(30)));
    }

    #[test]
    fn an_ietf_policy_of_another_unit_is_not_a_request_budget() {
        let read = read(&[
            ("ratelimit", "\"bytes\";r=0;t=5"),
            ("ratelimit-policy", "\"bytes\";q=1000;qu=\"content-bytes\""),
        ]);
        assert_eq!(read, None);
    }

    #[test]
    fn malformed_values_are_ignored_and_never_panic() {
        for value in [
            "",
            "-1",
            "1e9",
            "NaN",
            "inf",
            "0x10",
            " ",
            "99999999999999999999999",
            "1.5",
        ] {
            let read = read(&[
                ("x-ratelimit-remaining-requests", value),
                ("x-ratelimit-reset-requests", value),
                ("anthropic-ratelimit-tokens-remaining", value),
                ("anthropic-ratelimit-tokens-reset", value),
                ("ratelimit", value),
                ("ratelimit-remaining", value),
            ]);
            assert_eq!(read, None, "{value:?}");
        }
        // A well-formed remaining with a malformed reset: the bucket,
        // without its reset.
        let read = read(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "soon"),
        ])
        .unwrap();
        assert_eq!(read.requests.unwrap().reset, None);
    }

    #[test]
    fn a_response_without_rate_limit_headers_reads_none() {
        let read = read(&[
            ("content-type", "application/json"),
            ("x-request-id", "req_1"),
            ("retry-after", "3"),
            ("anthropic-organization-id", "org"),
        ]);
        assert_eq!(read, None);
    }
}
