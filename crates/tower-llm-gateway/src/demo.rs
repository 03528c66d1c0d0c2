//! Out of the box: two simulated providers from the testkit — a flaky
//! primary and a healthy backup — and the stack configured over them,
//! through the same TOML path a real deployment uses.

use std::time::{Duration, Instant};

use tower_llm::config::StackConfig;
use tower_llm_testkit::{FaultPlan, Simulator};

/// The primary's everyday mix, close to what a busy provider does: 429s
/// with `retry-after`, 503s, Anthropic-style overload, connection resets,
/// an overload error as a stream's first event, a stream cut before its
/// first token, and a cut after five tokens (a whole answer cut midway is
/// retried; a stream cut mid-answer cannot be saved: the client has text
/// already).
pub const FLAKY: &str = "rate=0.10:rate_limited@1s,0.08:503,0.06:overloaded,0.04:reset,0.04:error@0,0.03:drop@0,0.02:drop@5;seed=7";

/// The key the simulated primary requires (and only it: the backup is an
/// unauthenticated local model, as Ollama is).
pub const PRIMARY_KEY: &str = "sk-demo-primary";
/// The variable the demo configuration names for it.
pub const PRIMARY_KEY_VAR: &str = "TOWER_LLM_DEMO_PRIMARY_KEY";

/// The two simulated providers.
#[derive(Debug)]
pub struct Demo {
    /// The flaky primary (OpenAI-style, needs [`PRIMARY_KEY`]).
    pub primary: Simulator,
    /// The healthy backup, serving `llama3.2`.
    pub backup: Simulator,
}

impl Demo {
    /// Starts both simulators on ephemeral ports.
    pub async fn start() -> std::io::Result<Demo> {
        let plan: FaultPlan = FLAKY
            .parse()
            .map_err(|e| std::io::Error::other(format!("demo plan: {e}")))?;
        let primary = Simulator::builder()
            .plan(plan)
            .api_key(PRIMARY_KEY)
            .token_delay(Duration::from_millis(15))
            .record(false)
            .start()
            .await?;
        let backup = Simulator::builder()
            .token_delay(Duration::from_millis(15))
            .record(false)
            .start()
            .await?;
        Ok(Demo { primary, backup })
    }

    /// The configuration over the two simulators: a gateway preset, a
    /// breaker tuned to show itself within a minute.
    pub fn config(&self) -> Result<StackConfig, String> {
        let text = format!(
            r#"
            preset = "high_availability"

            # The flaky mix fails about a third of attempts: that is the
            # retries' job. The breaker is for the outage: 70 % of the last
            # 20 attempts, or 10 in a row.
            [circuit]
            window_calls = 20
            minimum_calls = 10
            failure_rate = 70.0
            consecutive_failures = 10
            open_ms = 1500
            open_multiplier = 1.5
            max_open_ms = 4000
            half_open_probes = 3

            [[targets]]
            name = "primary"
            provider = "openai"
            base_url = "{primary}/v1"
            api_key_env = "{PRIMARY_KEY_VAR}"

            [[targets]]
            name = "backup"
            provider = "ollama"
            base_url = "{backup}/v1"
            model = "llama3.2"

            [[routes]]
            model = "*"
            targets = ["primary", "backup"]
            "#,
            primary = self.primary.base_url(),
            backup = self.backup.base_url(),
        );
        StackConfig::from_toml(&text).map_err(|e| e.to_string())
    }

    /// Where the demo's keys come from (no real environment needed).
    pub fn env(name: &str) -> Option<String> {
        (name == PRIMARY_KEY_VAR).then(|| PRIMARY_KEY.to_owned())
    }
}

/// Sends `n` requests through the gateway at `base`, with a 15-second
/// outage of the primary a third of the way in, printing one line per request:
/// retries, fallbacks, the breaker opening and closing, all in view.
pub async fn warm_up(base: &str, demo: &Demo, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let outage = (n / 3, n / 2);
    println!(
        "warm-up: {n} requests; the primary is flaky, and fully down for requests {}..{}",
        outage.0, outage.1
    );
    for i in 0..n {
        if i == outage.0 {
            println!("--- the primary goes down (every call 503) ---");
            demo.primary
                .set_plan(FaultPlan::always(tower_llm_testkit::Fault::status(503)));
        }
        if i == outage.1 {
            println!("--- the primary is back (flaky again) ---");
            if let Ok(plan) = FLAKY.parse::<FaultPlan>() {
                demo.primary.set_plan(plan);
            }
        }
        let stream = i % 2 == 1;
        let body = format!(
            r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"request {i}"}}]}}"#
        );
        let request = http::Request::post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .header(
                "authorization",
                "Bearer the-callers-own-key-never-forwarded",
            )
            .body(Full::from(body))?;
        let started = Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (target, attempts, passed) = (
            header(crate::TARGET_HEADER),
            header(crate::ATTEMPTS_HEADER),
            header(crate::FALLBACKS_HEADER),
        );
        let outcome = match response.into_body().collect().await {
            Ok(_) => "complete".to_owned(),
            Err(e) => format!("body failed: {e}"),
        };
        println!(
            "#{i:>3} {} {status:<4} target={target:<8} attempts={attempts:<2} {:>5} ms  {outcome}{}",
            if stream { "stream" } else { "whole " },
            started.elapsed().as_millis(),
            if passed.is_empty() {
                String::new()
            } else {
                format!("  passed: {passed}")
            },
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Ok(())
}
