//! Out of the box: three simulated providers from the testkit — a flaky
//! OpenAI-style primary, a healthy backup and an Anthropic-protocol
//! provider — and the stack configured over them, through the same TOML
//! path a real deployment uses, so every endpoint the gateway serves
//! answers without a key ([`curl_lines`] prints one command for each).

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

/// The Anthropic-protocol provider's mix: Anthropic's overload (529 with
/// `x-should-retry: true`) and rate limits, retried by the stack.
pub const CLAUDE_FLAKY: &str = "rate=0.08:overloaded,0.04:rate_limited@1s;seed=11";

/// The key the simulated primary requires (and only it: the backup is an
/// unauthenticated local model, as Ollama is).
pub const PRIMARY_KEY: &str = "sk-demo-primary";
/// The variable the demo configuration names for it.
pub const PRIMARY_KEY_VAR: &str = "TOWER_LLM_DEMO_PRIMARY_KEY";
/// The key the simulated Anthropic-protocol provider requires (sent in
/// `x-api-key`, as Anthropic's API takes it).
pub const CLAUDE_KEY: &str = "sk-ant-demo-claude";
/// The variable the demo configuration names for it.
pub const CLAUDE_KEY_VAR: &str = "TOWER_LLM_DEMO_CLAUDE_KEY";

/// The simulated providers.
#[derive(Debug)]
pub struct Demo {
    /// The flaky primary (OpenAI-style, needs [`PRIMARY_KEY`]).
    pub primary: Simulator,
    /// The healthy backup, serving `llama3.2`.
    pub backup: Simulator,
    /// The Anthropic-protocol provider (`POST /v1/messages`, needs
    /// [`CLAUDE_KEY`]), mildly flaky ([`CLAUDE_FLAKY`]).
    pub claude: Simulator,
}

impl Demo {
    /// Starts the simulators on ephemeral ports.
    pub async fn start() -> std::io::Result<Demo> {
        let plan = |text: &str| {
            text.parse::<FaultPlan>()
                .map_err(|e| std::io::Error::other(format!("demo plan: {e}")))
        };
        let primary = Simulator::builder()
            .plan(plan(FLAKY)?)
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
        let claude = Simulator::builder()
            .plan(plan(CLAUDE_FLAKY)?)
            .api_key(CLAUDE_KEY)
            .token_delay(Duration::from_millis(15))
            .record(false)
            .start()
            .await?;
        Ok(Demo {
            primary,
            backup,
            claude,
        })
    }

    /// The configuration over the simulators: a gateway preset, a breaker
    /// tuned to show itself within a minute, and routes that name models
    /// (what `GET /v1/models` lists): `claude-*` to the Anthropic-protocol
    /// target (`POST /v1/messages`) or, on the OpenAI endpoints, to the
    /// backup; everything else to the primary, then the backup.
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

            [[targets]]
            name = "claude"
            provider = "anthropic"
            protocol = "anthropic"
            base_url = "{claude}/v1"
            api_key_env = "{CLAUDE_KEY_VAR}"

            [[routes]]
            model = "gpt-4o"
            targets = ["primary", "backup"]

            [[routes]]
            model = "text-embedding-3-small"
            targets = ["primary", "backup"]

            [[routes]]
            model = "claude-*"
            targets = ["claude", "backup"]

            [[routes]]
            model = "*"
            targets = ["primary", "backup"]
            "#,
            primary = self.primary.base_url(),
            backup = self.backup.base_url(),
            claude = self.claude.base_url(),
        );
        StackConfig::from_toml(&text).map_err(|e| e.to_string())
    }

    /// Where the demo's keys come from (no real environment needed).
    pub fn env(name: &str) -> Option<String> {
        match name {
            PRIMARY_KEY_VAR => Some(PRIMARY_KEY.to_owned()),
            CLAUDE_KEY_VAR => Some(CLAUDE_KEY.to_owned()),
            _ => None,
        }
    }
}

/// One `curl` command per endpoint of a gateway at `base` (`auth`: the
/// header arguments a caller key needs, or empty), with the demo's models:
/// chat whole and streamed, legacy completions streamed, a batch of
/// embeddings, a streamed Responses call, a streamed Anthropic Messages
/// call, its token count, and the model list.
pub fn curl_lines(base: &str, auth: &str) -> Vec<String> {
    let json = "-H 'content-type: application/json'";
    let post = |flags: &str, path: &str, extra: &str, body: &str| {
        format!("curl {flags} {base}{path}{auth} {json}{extra} -d '{body}'")
    };
    vec![
        post(
            "-si",
            "/v1/chat/completions",
            "",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}"#,
        ),
        post(
            "-sN",
            "/v1/chat/completions",
            "",
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#,
        ),
        post(
            "-sN",
            "/v1/completions",
            "",
            r#"{"model":"gpt-3.5-turbo-instruct","stream":true,"prompt":"Say hello"}"#,
        ),
        post(
            "-s",
            "/v1/embeddings",
            "",
            r#"{"model":"text-embedding-3-small","dimensions":4,"input":["first text","second text"]}"#,
        ),
        post(
            "-sN",
            "/v1/responses",
            "",
            r#"{"model":"gpt-4o","stream":true,"input":"Say hello"}"#,
        ),
        post(
            "-sN",
            "/v1/messages",
            " -H 'anthropic-version: 2023-06-01'",
            r#"{"model":"claude-sonnet-4-5","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#,
        ),
        post(
            "-s",
            "/v1/messages/count_tokens",
            " -H 'anthropic-version: 2023-06-01'",
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Say hello"}]}"#,
        ),
        format!("curl -s {base}/v1/models{auth}"),
    ]
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
