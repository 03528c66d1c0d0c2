//! A simulated provider's rate limits: requests and tokens per sliding
//! window, reported on every answer in the provider's own headers, and a
//! 429 with `retry-after` for a request over the limit.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::api::Family;
use crate::wire::{go_duration, rfc3339};

/// The rate limits of a simulated provider's key: at most `rpm` requests
/// and `tpm` tokens in any sliding window (a minute unless set).
///
/// A request costs its prompt's tokens (a token per 4 bytes of body,
/// rounded up) plus the output it asks for (`max_tokens`,
/// `max_completion_tokens` or `max_output_tokens`): OpenAI counts a
/// request's `max_tokens` against its tokens-per-minute limit when it is
/// made (platform.openai.com/docs/guides/rate-limits). A request the
/// window cannot take is refused with the API's 429 and a `retry-after`
/// (whole seconds, rounded up) saying when it would fit; a request larger
/// than the whole token limit gets the 429 without one, as it never fits.
/// Refused requests do not count against the window.
///
/// Every answer of an admitted request (success or scripted failure) and
/// every 429 carries the limits in the API's headers:
/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on the OpenAI
/// APIs, resets as Go durations rounded up to the millisecond;
/// `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` on
/// Anthropic's, resets as RFC 3339 instants rounded up to the second.
/// A reset is the time until the window holds nothing, the providers'
/// meaning ("the time until the rate limit resets to its initial state").
/// Ollama sends no such headers, and neither does the simulator there;
/// its limits are still enforced.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower_llm_testkit::{Api, ProviderLimits, Simulator};
///
/// let sim = Simulator::builder()
///     .rate_limits(ProviderLimits::rpm(2))
///     .start()
///     .await?;
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
/// let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// let request = || http::Request::post(sim.url(Api::OpenAiChat)).body(Full::from(body));
///
/// let first = client.request(request()?).await?;
/// assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
/// client.request(request()?).await?;
/// let third = client.request(request()?).await?;
/// assert_eq!(third.status(), 429);
/// assert_eq!(third.headers()["x-ratelimit-remaining-requests"], "0");
/// assert!(third.headers().contains_key("retry-after"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderLimits {
    rpm: Option<u64>,
    tpm: Option<u64>,
    window: Duration,
    token_bucket: bool,
}

impl ProviderLimits {
    /// At most `rpm` requests per window.
    pub fn rpm(rpm: u64) -> Self {
        ProviderLimits {
            rpm: Some(rpm),
            tpm: None,
            window: MINUTE,
            token_bucket: false,
        }
    }

    /// At most `tpm` tokens per window.
    pub fn tpm(tpm: u64) -> Self {
        ProviderLimits {
            rpm: None,
            tpm: Some(tpm),
            window: MINUTE,
            token_bucket: false,
        }
    }

    /// These limits, and at most `rpm` requests per window.
    pub fn with_rpm(mut self, rpm: u64) -> Self {
        self.rpm = Some(rpm);
        self
    }

    /// These limits, and at most `tpm` tokens per window.
    pub fn with_tpm(mut self, tpm: u64) -> Self {
        self.tpm = Some(tpm);
        self
    }

    /// The sliding window's length (a minute by default; a zero window is
    /// taken as a millisecond).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(1));
        self
    }

    /// Counts with token buckets instead of a sliding window, as OpenAI
    /// and Anthropic do ("your capacity is continuously replenished up to
    /// your maximum limit", docs.claude.com/en/api/rate-limits): each
    /// bucket holds up to its limit, starts full and refills at the limit
    /// per window, evenly; a request takes one request and its tokens. A
    /// reset is then the time until the bucket is full again, and a
    /// 429's `retry-after` the time until it holds enough.
    pub fn token_bucket(mut self) -> Self {
        self.token_bucket = true;
        self
    }

    /// Requests per window, if limited.
    pub fn requests(&self) -> Option<u64> {
        self.rpm
    }

    /// Tokens per window, if limited.
    pub fn tokens(&self) -> Option<u64> {
        self.tpm
    }

    /// The window's length.
    pub fn window_length(&self) -> Duration {
        self.window
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// The requests a window holds: when each was admitted, and its tokens.
#[derive(Debug)]
pub(crate) struct RateWindow {
    limits: ProviderLimits,
    admitted: Mutex<VecDeque<(Instant, u64)>>,
    /// With token buckets: what each holds (requests, tokens) and when.
    levels: Mutex<Option<(f64, f64, Instant)>>,
}

/// What is left of a window at one instant, as the headers say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    limits: ProviderLimits,
    requests_left: u64,
    tokens_left: u64,
    /// Until the window holds nothing (with token buckets, until the
    /// requests' bucket is full).
    reset: Duration,
    /// Until the tokens' bucket is full (the window: `reset`).
    tokens_reset: Duration,
}

/// A request's fate at the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Counted; the window after it.
    Admitted(Usage),
    /// Over the limit: the window as it is, and when the request would fit
    /// (`None`: never, it is larger than the token limit).
    Refused(Usage, Option<Duration>),
}

impl RateWindow {
    pub(crate) fn new(limits: ProviderLimits) -> Self {
        RateWindow {
            limits,
            admitted: Mutex::new(VecDeque::new()),
            levels: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(Instant, u64)>> {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a request costing `tokens` at `now`, or refuses it.
    pub(crate) fn admit(&self, now: Instant, tokens: u64) -> Admission {
        if self.limits.token_bucket {
            return self.admit_to_buckets(now, tokens);
        }
        let window = self.limits.window;
        let mut admitted = self.lock();
        while admitted.front().is_some_and(|(at, _)| *at + window <= now) {
            admitted.pop_front();
        }
        let count = admitted.len() as u64;
        let used: u64 = admitted.iter().map(|(_, t)| *t).sum();
        // When the entry at `index` (oldest first) leaves the window.
        let leaves = |index: usize| {
            admitted
                .get(index)
                .map_or(Duration::ZERO, |(at, _)| (*at + window).duration_since(now))
        };
        let mut refused = false;
        let mut wait = Some(Duration::ZERO);
        if let Some(rpm) = self.limits.rpm
            && count >= rpm
        {
            refused = true;
            // Room for one more once all but `rpm - 1` have left: the
            // last of those to leave is at `count - rpm`.
            wait = match rpm {
                0 => None,
                _ => wait.map(|w| w.max(leaves((count - rpm) as usize))),
            };
        }
        if let Some(tpm) = self.limits.tpm
            && used.saturating_add(tokens) > tpm
        {
            refused = true;
            if tokens > tpm {
                wait = None;
            } else {
                let needed = used.saturating_add(tokens) - tpm;
                let (mut freed, mut index) = (0_u64, 0_usize);
                for (at, (_, t)) in admitted.iter().enumerate() {
                    freed = freed.saturating_add(*t);
                    index = at;
                    if freed >= needed {
                        break;
                    }
                }
                wait = wait.map(|w| w.max(leaves(index)));
            }
        }
        if refused {
            let usage = self.usage(&admitted, now);
            return Admission::Refused(usage, wait);
        }
        admitted.push_back((now, tokens));
        Admission::Admitted(self.usage(&admitted, now))
    }

    fn usage(&self, admitted: &VecDeque<(Instant, u64)>, now: Instant) -> Usage {
        let count = admitted.len() as u64;
        let used: u64 = admitted.iter().map(|(_, t)| *t).sum();
        let reset = admitted.back().map_or(Duration::ZERO, |(at, _)| {
            (*at + self.limits.window).duration_since(now)
        });
        Usage {
            limits: self.limits,
            requests_left: self.limits.rpm.map_or(0, |rpm| rpm.saturating_sub(count)),
            tokens_left: self.limits.tpm.map_or(0, |tpm| tpm.saturating_sub(used)),
            reset,
            tokens_reset: reset,
        }
    }

    /// [`admit`](Self::admit) with token buckets.
    fn admit_to_buckets(&self, now: Instant, tokens: u64) -> Admission {
        let limits = self.limits;
        let window = limits.window.as_secs_f64();
        // A bucket's size and its refill per second (unlimited: none).
        let sizes = [limits.rpm, limits.tpm].map(|l| l.map(|l| (l as f64, l as f64 / window)));
        let mut levels = self.levels.lock().unwrap_or_else(|p| p.into_inner());
        let (requests, tokens_level, then) = levels.unwrap_or((
            sizes[0].map_or(0.0, |s| s.0),
            sizes[1].map_or(0.0, |s| s.0),
            now,
        ));
        let elapsed = now.saturating_duration_since(then).as_secs_f64();
        let refill = |level: f64, size: Option<(f64, f64)>| {
            size.map_or(0.0, |(size, rate)| (level + rate * elapsed).min(size))
        };
        let mut held = [refill(requests, sizes[0]), refill(tokens_level, sizes[1])];
        let asks = [1.0, tokens as f64];
        let mut refused = false;
        let mut wait = Some(Duration::ZERO);
        for ((level, size), ask) in held.iter().zip(sizes).zip(asks) {
            let Some((size, rate)) = size else { continue };
            if *level >= ask {
                continue;
            }
            refused = true;
            wait = if ask > size {
                None
            } else {
                wait.map(|w| w.max(Duration::from_secs_f64((ask - level) / rate)))
            };
        }
        if !refused {
            for ((level, size), ask) in held.iter_mut().zip(sizes).zip(asks) {
                if size.is_some() {
                    *level -= ask;
                }
            }
        }
        *levels = Some((held[0], held[1], now));
        let until_full = |level: f64, size: Option<(f64, f64)>| {
            size.map_or(Duration::ZERO, |(size, rate)| {
                Duration::from_secs_f64(((size - level) / rate).max(0.0))
            })
        };
        let usage = Usage {
            limits,
            requests_left: held[0].max(0.0) as u64,
            tokens_left: held[1].max(0.0) as u64,
            reset: until_full(held[0], sizes[0]),
            tokens_reset: until_full(held[1], sizes[1]),
        };
        if refused {
            Admission::Refused(usage, wait)
        } else {
            Admission::Admitted(usage)
        }
    }
}

impl Usage {
    /// Writes the window's headers in `family`'s form (replacing any the
    /// answer had); `now` is the wall clock, for Anthropic's instants.
    pub(crate) fn write(&self, family: Family, headers: &mut HeaderMap, now: SystemTime) {
        let limits = self.limits;
        let buckets = [
            ("requests", limits.rpm, self.requests_left, self.reset),
            ("tokens", limits.tpm, self.tokens_left, self.tokens_reset),
        ];
        for (bucket, limit, left, reset) in buckets {
            let Some(limit) = limit else { continue };
            match family {
                Family::OpenAi => {
                    // Rounded up to the millisecond: a reset is never early.
                    let reset = go_duration(Duration::from_millis(
                        reset.as_nanos().div_ceil(1_000_000) as u64,
                    ));
                    insert(headers, format!("x-ratelimit-limit-{bucket}"), limit);
                    insert(headers, format!("x-ratelimit-remaining-{bucket}"), left);
                    insert(headers, format!("x-ratelimit-reset-{bucket}"), &reset);
                }
                Family::Anthropic => {
                    // RFC 3339 at whole seconds, rounded up.
                    let at = rfc3339(now + reset + Duration::from_nanos(999_999_999), 0);
                    let name = |field| format!("anthropic-ratelimit-{bucket}-{field}");
                    insert(headers, name("limit"), limit);
                    insert(headers, name("remaining"), left);
                    insert(headers, name("reset"), &at);
                }
                Family::Ollama => {}
            }
        }
    }
}

fn insert(headers: &mut HeaderMap, name: String, value: impl ToString) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::try_from(name),
        HeaderValue::try_from(value.to_string()),
    ) {
        headers.insert(name, value);
    }
}

/// A request's cost against a token limit: its prompt (`prompt_tokens`)
/// and the output it asks for.
pub(crate) fn cost(prompt_tokens: u64, max_tokens: Option<u64>) -> u64 {
    prompt_tokens.saturating_add(max_tokens.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn left(admission: Admission) -> (u64, u64, Duration) {
        match admission {
            Admission::Admitted(u) => (u.requests_left, u.tokens_left, u.reset),
            Admission::Refused(..) => panic!("refused: {admission:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_rpm_in_the_window_are_refused_until_the_oldest_leaves() {
        let window = RateWindow::new(ProviderLimits::rpm(2));
        let start = Instant::now();
        assert_eq!(left(window.admit(start, 1)), (1, 0, secs(60)));
        assert_eq!(left(window.admit(start + secs(10), 1)), (0, 0, secs(60)));
        match window.admit(start + secs(30), 1) {
            Admission::Refused(usage, wait) => {
                assert_eq!(usage.requests_left, 0);
                assert_eq!(usage.reset, secs(40));
                assert_eq!(wait, Some(secs(30)));
            }
            other => panic!("{other:?}"),
        }
        // The oldest has left: room for one, and the window now ends 60 s
        // after the newest.
        assert_eq!(left(window.admit(start + secs(60), 1)), (0, 0, secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_beyond_tpm_wait_until_enough_have_left_and_a_too_large_one_never_fits() {
        let window = RateWindow::new(ProviderLimits::tpm(100));
        let start = Instant::now();
        left(window.admit(start, 40));
        left(window.admit(start + secs(5), 40));
        match window.admit(start + secs(10), 50) {
            // 80 + 50 > 100: 30 must leave, the first request's 40 do at 60 s.
            Admission::Refused(usage, wait) => {
                assert_eq!(usage.tokens_left, 20);
                assert_eq!(wait, Some(secs(50)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(left(window.admit(start + secs(10), 20)).1, 0);
        assert!(matches!(
            window.admit(start + secs(10), 101),
            Admission::Refused(_, None)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_bucket_starts_full_and_refills_evenly() {
        let window = RateWindow::new(ProviderLimits::rpm(10).token_bucket());
        let start = Instant::now();
        for expected in (0..10).rev() {
            let (requests, _, reset) = left(window.admit(start, 1));
            assert_eq!(requests, expected);
            // One request refills in 6 s: full again 6 s per request taken.
            assert_eq!(reset, secs(6 * (10 - expected)));
        }
        match window.admit(start + secs(3), 1) {
            Admission::Refused(usage, wait) => {
                assert_eq!(usage.requests_left, 0);
                assert_eq!(wait, Some(secs(3)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(left(window.admit(start + secs(6), 1)).0, 0);
        assert_eq!(left(window.admit(start + secs(18), 1)).0, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn openai_headers_round_the_reset_up_to_the_millisecond() {
        let window = RateWindow::new(ProviderLimits::rpm(5).with_tpm(1000).window(secs(1)));
        let start = Instant::now();
        let usage = match window.admit(start, 10) {
            Admission::Admitted(u) => u,
            other => panic!("{other:?}"),
        };
        let usage = Usage {
            reset: Duration::from_micros(999_001),
            tokens_reset: Duration::from_micros(999_001),
            ..usage
        };
        let mut headers = HeaderMap::new();
        usage.write(Family::OpenAi, &mut headers, SystemTime::now());
        assert_eq!(headers["x-ratelimit-remaining-requests"], "4");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "990");
        assert_eq!(headers["x-ratelimit-reset-requests"], "1s");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
    }
}
