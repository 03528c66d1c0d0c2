//! The named starting points of a stack.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tower_llm_circuit::CircuitConfig;
use tower_llm_retry::RetryPolicy;

/// The limit on one attempt at a whole (non-streamed) answer: the official
/// SDKs' timeout (openai-python `DEFAULT_TIMEOUT = Timeout(600,
/// connect=5.0)`).
const WHOLE_ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// A preset: a retry policy and a breaker configuration that belong
/// together.
///
/// | preset | retry | circuit |
/// |---|---|---|
/// | `sdk_default` | 3 attempts, 0.5 s doubling to 8 s, full jitter (the official SDKs' pacing), 15 % budget over 30 s, successful retries given back | `standard`: 50 % failures over the last 50 calls (20 at least) or 10 in a row, open 10 s growing ×1.5 to 30 s; an adaptive concurrency limit per key |
/// | `high_availability` | more attempts within a deadline, shorter waits | `fast_trip`: trips early so the fallback takes over |
/// | `cost_sensitive` | one retry: every attempt is billed | `standard` |
/// | `development` | fail fast and visibly | `lenient` |
///
/// The exact figures are in [`RetryPolicy`]'s and [`CircuitConfig`]'s
/// preset docs.
///
/// # Timeouts
///
/// Every preset also bounds how long a target may stay silent, so that a
/// silent upstream never holds a caller until it closes the socket:
///
/// | preset | a stream's head | a stream's first content | a stream's silence (content) | a whole answer (per attempt) |
/// |---|---|---|---|---|
/// | `sdk_default` | 30 s | no own limit | 60 s | 600 s |
/// | `high_availability` | 15 s | no own limit | 30 s | the 120 s deadline |
/// | `cost_sensitive` | 30 s | no own limit | 60 s | 600 s |
/// | `development` | 10 s | no own limit | 30 s | the 30 s deadline |
///
/// Why these:
///
/// - **A stream's head is short.** OpenAI, Anthropic and the servers that
///   copy their APIs send a streamed response's head as soon as they accept
///   the request, before generating anything; a head that has not come in
///   30 s is a target that is not answering (LiteLLM's docs give the same
///   30 s as their `stream_timeout` example). When the route has another
///   target, the silent one is left after that one attempt (the retry
///   policy's `retry_on_silence`), and so is one whose answer says to
///   come back in more than a second (`retry-after`); the last target of
///   a route is retried, having nowhere else to send it. A local server that loads its model
///   on demand (Ollama) sends its head only with the first token: raise
///   `stream_head_timeout` for such targets.
/// - **A whole answer's head is long.** Without streaming, the head comes
///   when generation ends: minutes for a long output. 600 s is the official
///   SDKs' timeout (openai-python and anthropic-sdk-python
///   `DEFAULT_TIMEOUT = Timeout(600, connect=5.0)`, openai-node
///   `DEFAULT_TIMEOUT = 600000`), and Anthropic's SDKs refuse a
///   non-streamed request they expect to take longer than 10 minutes.
/// - **No own first-content limit.** Reasoning models may think for
///   minutes before their first token ("reasoning models can take several
///   minutes to solve complex problems", OpenAI's background-mode guide),
///   and some send nothing meanwhile. Set
///   [`first_content_timeout`](tower_llm_retry::RetryPolicyBuilder::first_content_timeout)
///   (`[retry] first_content_timeout_ms`) when the models served answer
///   sooner, to move on from a slow start.
/// - **Silence is Classify's stream idle timeout** (see
///   [`LlmStack::stream_idle_timeout`](super::LlmStack::stream_idle_timeout)):
///   no content event for that long — pings, SSE comments and role-only
///   chunks do not count, so a stalled stream that keeps sending
///   keep-alives is still ended — fails the stream with a typed timeout,
///   and the stack continues the answer from where it stopped. Its timer
///   starts at the first content: before it, the head and first-content
///   limits and the attempt timeout govern, so a reasoning model's silent
///   start is not a stall. Once content flows, providers send tokens many
///   times a second, and a stream that stops is the clearest sign of a
///   stall; the SDKs would wait their whole 600 s read timeout, and a
///   stream kept alive by pings forever. 60 s leaves room for what may
///   pause an answer mid-way (a server-side tool such as Anthropic's web
///   search runs while only pings flow); `high_availability` cuts at 30 s
///   to continue sooner.
///
/// ```
/// use tower_llm::stack::Preset;
///
/// let preset: Preset = "high_availability".parse().unwrap();
/// assert_eq!(preset, Preset::HighAvailability);
/// assert_eq!(preset.circuit_preset(), "fast_trip");
/// assert!("fastest".parse::<Preset>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// The official SDKs' retry pacing, the standard breaker.
    #[default]
    SdkDefault,
    /// For a gateway that must answer: retries within a deadline and a
    /// breaker that trips early so the fallback takes over.
    HighAvailability,
    /// When every attempt is billed: one retry, the standard breaker.
    CostSensitive,
    /// For local work: fail fast and visibly, a lenient breaker.
    Development,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 4] = [
        Preset::SdkDefault,
        Preset::HighAvailability,
        Preset::CostSensitive,
        Preset::Development,
    ];

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::SdkDefault => "sdk_default",
            Preset::HighAvailability => "high_availability",
            Preset::CostSensitive => "cost_sensitive",
            Preset::Development => "development",
        }
    }

    /// The retry policy of this preset. `sdk_default` gets a 15 % budget
    /// (the retry crate's standalone default is 10 %) over 30 s, and every
    /// budget gives a successful retry back (the AWS SDKs' retry quota): so
    /// random failures are retried, since only the retries that fail
    /// again are spent (p² + p³: 6 % of requests at 22 % failures, 11.7 %
    /// at 30 %), while an outage, where no retry succeeds, stays within
    /// 1.15× the offered load (and a dead target's breaker and adaptive
    /// limit keep it far below that). A call refused inside the stack
    /// before it left (an open breaker, a full queue) spends nothing.
    /// Measured with `cargo bench -p tower-llm-bench --bench chaos --
    /// seeds`: at 14 % over 10 s, three of ten seeds of the `rate_limit`
    /// scenario (30 % of calls refused with `retry-after: 2` for 20 s) ran
    /// the budget out (22, 50 and 32 requests failed for want of it; mean
    /// success 98.94 %); at 15 % over 30 s none did (99.25 %), as the
    /// retry crate's property tests predict (`random_failures_of_30_percent_need_a_budget_of_15_percent_over_30_seconds`).
    /// At 10 % without give-backs a provider failing 22 % of calls at
    /// random left 13 % of requests failed for want of budget.
    ///
    /// Each also has the stack's timeouts (see [Timeouts](Preset#timeouts)):
    /// the retry crate's own presets have none, not knowing what they are
    /// called for.
    pub fn retry(self) -> RetryPolicy {
        let (base, builder) = match self {
            Preset::SdkDefault => (
                RetryPolicy::sdk_default(),
                RetryPolicy::sdk_default()
                    .to_builder()
                    .budget(Duration::from_secs(30), 1, 0.15)
                    .attempt_timeout(WHOLE_ANSWER_TIMEOUT)
                    .stream_head_timeout(Duration::from_secs(30)),
            ),
            Preset::HighAvailability => (
                RetryPolicy::high_availability(),
                RetryPolicy::high_availability()
                    .to_builder()
                    .stream_head_timeout(Duration::from_secs(15)),
            ),
            Preset::CostSensitive => (
                RetryPolicy::cost_sensitive(),
                RetryPolicy::cost_sensitive()
                    .to_builder()
                    .attempt_timeout(WHOLE_ANSWER_TIMEOUT)
                    .stream_head_timeout(Duration::from_secs(30)),
            ),
            Preset::Development => (
                RetryPolicy::development(),
                RetryPolicy::development()
                    .to_builder()
                    .stream_head_timeout(Duration::from_secs(10)),
            ),
        };
        builder.build().unwrap_or(base)
    }

    /// How long a stream of this preset may go without a content event
    /// before it fails (Classify's stream idle timeout; see
    /// [Timeouts](Preset#timeouts)).
    pub fn stream_idle_timeout(self) -> Duration {
        match self {
            Preset::SdkDefault | Preset::CostSensitive => Duration::from_secs(60),
            Preset::HighAvailability | Preset::Development => Duration::from_secs(30),
        }
    }

    /// The name of the circuit preset this preset uses.
    pub fn circuit_preset(self) -> &'static str {
        match self {
            Preset::SdkDefault | Preset::CostSensitive => "standard",
            Preset::HighAvailability => "fast_trip",
            Preset::Development => "lenient",
        }
    }

    /// The breaker configuration of this preset.
    pub fn circuit(self) -> CircuitConfig {
        match self {
            Preset::SdkDefault | Preset::CostSensitive => CircuitConfig::standard(),
            Preset::HighAvailability => CircuitConfig::fast_trip(),
            Preset::Development => CircuitConfig::lenient(),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A preset name that is not one of [`Preset::ALL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPreset(pub String);

impl fmt::Display for UnknownPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not one of sdk_default, high_availability, cost_sensitive, development",
            self.0
        )
    }
}

impl std::error::Error for UnknownPreset {}

impl FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(name: &str) -> Result<Self, UnknownPreset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == name.trim())
            .ok_or_else(|| UnknownPreset(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_round_trips_through_its_name() {
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>(), Ok(preset));
            assert_eq!(preset.to_string(), preset.as_str());
        }
    }

    #[test]
    fn presets_differ_where_they_say_they_do() {
        assert!(
            Preset::CostSensitive.retry().max_attempts()
                < Preset::SdkDefault.retry().max_attempts()
        );
        assert_eq!(Preset::SdkDefault.retry().max_attempts(), 3);
    }

    #[test]
    fn every_preset_bounds_a_silent_target_as_its_docs_say() {
        let secs = Duration::from_secs;
        let table = [
            (Preset::SdkDefault, secs(30), Some(secs(600)), secs(60)),
            (Preset::HighAvailability, secs(15), None, secs(30)),
            (Preset::CostSensitive, secs(30), Some(secs(600)), secs(60)),
            (Preset::Development, secs(10), None, secs(30)),
        ];
        for (preset, head, whole, idle) in table {
            let retry = preset.retry();
            assert_eq!(retry.stream_head_timeout(), Some(head), "{preset}");
            assert_eq!(retry.attempt_timeout(), whole, "{preset}");
            assert_eq!(retry.first_content_timeout(), None, "{preset}");
            assert!(
                retry.retry_on_silence(),
                "{preset}: the stack decides per target"
            );
            assert_eq!(preset.stream_idle_timeout(), idle, "{preset}");
            // Without an attempt timeout, the deadline bounds a whole answer.
            assert!(whole.is_some() || retry.deadline().is_some(), "{preset}");
        }
    }
}
