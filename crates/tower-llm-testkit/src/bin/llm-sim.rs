//! `llm-sim`: a simulated LLM provider with scripted faults, standalone.
//!
//! ```text
//! cargo run -p tower-llm-testkit --bin llm-sim -- --port 9001 --faults 'rate=0.2:503,0.05:reset'
//! ```
//!
//! Point any client (curl, an official SDK, LiteLLM) at it. The fault
//! syntax is in the crate README.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use tower_llm_testkit::{Api, Capacity, Delay, FaultPlan, PrefillMode, Simulator};

const USAGE: &str = "\
llm-sim: a simulated OpenAI / Anthropic / Ollama provider with scripted faults

USAGE:
    llm-sim [OPTIONS]

OPTIONS:
    --host ADDR            address to bind (default 127.0.0.1)
    --port PORT            port to bind (default 9001; 0 picks one)
    --faults PLAN          fault plan, e.g. 'rate=0.2:503,0.05:reset' (default ok)
    --seed N               seed of the random plan and of latency draws (default 0)
    --latency DELAY        latency before headers: 50ms, 10ms..90ms, 50ms~500ms
    --token-delay DELAY    delay between streamed events
    --tokens N             content events per answer (default: the words of a short reply)
    --capacity N           at most N requests in service; the rest are shed
    --service-time DELAY   time each request holds its slot (with --capacity)
    --queue N              let N requests wait for a slot (with --capacity)
    --max-wait DURATION    longest wait in the queue before shedding
    --api-key-env VAR      require the key held in environment variable VAR
    --context-window N     answer 400 context_length_exceeded above N tokens (4 bytes each)
    --keepalive DURATION   keep-alive interval of stalled streams (default 5s)
    --prefill MODE         a request ending with the assistant's partial answer gets the
                           rest of the reply (continue, the default), the whole reply
                           (ignore, as OpenAI's own API) or a 400 (refuse)
    --quiet                do not print a stats line every 5 s
    -h, --help             this text

PLAN:
    FAULT                       every request (ok, 503, reset, drop@3, ...)
    script=FAULT,FAULT,...      one per request, then healthy
    cycle=FAULT,FAULT,...       the script, repeated
    rate=P:FAULT,P:FAULT,...    seeded random mix; the rest healthy
";

#[derive(Debug)]
struct Options {
    host: IpAddr,
    port: u16,
    plan: FaultPlan,
    seed: u64,
    latency: Delay,
    token_delay: Delay,
    tokens: Option<usize>,
    capacity: Option<usize>,
    service_time: Delay,
    queue: usize,
    max_wait: Option<Duration>,
    api_key_env: Option<String>,
    context_window: Option<u64>,
    keepalive: Duration,
    prefill: PrefillMode,
    quiet: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        host: IpAddr::from([127, 0, 0, 1]),
        port: 9001,
        plan: FaultPlan::healthy(),
        seed: 0,
        latency: Delay::ZERO,
        token_delay: Delay::ZERO,
        tokens: None,
        capacity: None,
        service_time: Delay::ZERO,
        queue: 0,
        max_wait: None,
        api_key_env: None,
        context_window: None,
        keepalive: Duration::from_secs(5),
        prefill: PrefillMode::Continue,
        quiet: false,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if flag == "--quiet" {
            options.quiet = true;
            continue;
        }
        let (flag, inline) = match flag.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (flag, None),
        };
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{flag} needs a value")),
        };
        let bad = |what: &str| format!("{flag}: `{value}` is not {what}");
        match flag.as_str() {
            "--host" => options.host = value.parse().map_err(|_| bad("an IP address"))?,
            "--port" => options.port = value.parse().map_err(|_| bad("a port"))?,
            "--faults" => {
                options.plan = FaultPlan::from_str(&value).map_err(|e| format!("--faults: {e}"))?
            }
            "--seed" => options.seed = value.parse().map_err(|_| bad("an unsigned integer"))?,
            "--latency" => {
                options.latency = value.parse().map_err(|e| format!("--latency: {e}"))?
            }
            "--token-delay" => {
                options.token_delay = value.parse().map_err(|e| format!("--token-delay: {e}"))?
            }
            "--tokens" => options.tokens = Some(value.parse().map_err(|_| bad("a number"))?),
            "--capacity" => options.capacity = Some(value.parse().map_err(|_| bad("a number"))?),
            "--service-time" => {
                options.service_time = value.parse().map_err(|e| format!("--service-time: {e}"))?
            }
            "--queue" => options.queue = value.parse().map_err(|_| bad("a number"))?,
            "--max-wait" => {
                options.max_wait = Some(duration(&value).map_err(|e| format!("--max-wait: {e}"))?)
            }
            "--api-key-env" => options.api_key_env = Some(value),
            "--context-window" => {
                options.context_window = Some(value.parse().map_err(|_| bad("a number"))?)
            }
            "--keepalive" => {
                options.keepalive = duration(&value).map_err(|e| format!("--keepalive: {e}"))?
            }
            "--prefill" => {
                options.prefill = value.parse().map_err(|e| format!("--prefill: {e}"))?
            }
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    if options.capacity.is_none()
        && (options.queue > 0 || options.max_wait.is_some() || !options.service_time.is_zero())
    {
        return Err("--queue, --max-wait and --service-time need --capacity".to_owned());
    }
    // A random plan takes --seed unless its text set one.
    if options.seed != 0 && options.plan.seed() == Some(0) {
        options.plan = options.plan.with_seed(options.seed);
    }
    Ok(Some(options))
}

fn duration(text: &str) -> Result<Duration, String> {
    match Delay::from_str(text).map_err(|e| e.to_string())? {
        delay if delay == Delay::fixed(delay.sample(0)) => Ok(delay.sample(0)),
        _ => Err(format!("`{text}` must be a single duration")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("llm-sim: {message}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Simulator::builder()
        .addr(SocketAddr::new(options.host, options.port))
        .plan(options.plan.clone())
        .seed(options.seed)
        .latency(options.latency)
        .token_delay(options.token_delay)
        .keepalive_interval(options.keepalive)
        .prefill(options.prefill)
        // A long-running server would grow without bound if it kept every request.
        .record(false);
    if let Some(n) = options.tokens {
        builder = builder.reply_tokens(n);
    }
    if let Some(concurrency) = options.capacity {
        builder = builder.capacity(
            Capacity::new(concurrency)
                .service_time(options.service_time)
                .queue(options.queue, options.max_wait),
        );
    }
    if let Some(var) = &options.api_key_env {
        match std::env::var(var) {
            Ok(key) if !key.is_empty() => builder = builder.api_key(key),
            _ => {
                eprintln!("llm-sim: --api-key-env {var}: the variable is not set");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(window) = options.context_window {
        builder = builder.context_window(window);
    }
    let sim = match builder.start().await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!(
                "llm-sim: cannot listen on {}:{}: {error}",
                options.host, options.port
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "llm-sim listening on {} with faults `{}`",
        sim.base_url(),
        options.plan
    );
    for api in Api::EVERY {
        println!("  {api:<22} POST {}", sim.url(api));
    }
    println!("  health                 GET  {}/health", sim.base_url());
    println!(
        "try:\n  curl -s {} -H 'content-type: application/json' -d '{{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
        sim.url(Api::OpenAiChat)
    );

    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    let mut last = sim.stats();
    // One future for the whole run, so a Ctrl-C during a print is not lost.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            _ = ticker.tick() => {
                let stats = sim.stats();
                if !options.quiet && stats != last {
                    println!(
                        "requests {} answered {} errors {} shed {} dropped {} stalled {} broken streams {} in service {} queued {}",
                        stats.requests, stats.answered, stats.errors, stats.shed, stats.dropped,
                        stats.stalled, stats.broken_streams, stats.in_service, stats.queued
                    );
                    last = stats;
                }
            }
        }
    }
    sim.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_documented_command_line_parses() {
        let options = parse(&["--port", "9001", "--faults", "rate=0.2:503,0.05:reset"])
            .unwrap()
            .unwrap();
        assert_eq!(options.port, 9001);
        assert_eq!(options.plan.to_string(), "rate=0.2:503,0.05:reset");
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert!(
            parse(&["--port", "http"])
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            parse(&["--faults", "rate=0.9:503,0.2:reset"])
                .unwrap_err()
                .contains("more than 1")
        );
        assert!(parse(&["--queue", "4"]).unwrap_err().contains("--capacity"));
        assert!(parse(&["--port"]).unwrap_err().contains("needs a value"));
        assert!(
            parse(&["--frobnicate", "1"])
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            parse(&["--max-wait", "1s..2s"])
                .unwrap_err()
                .contains("single duration")
        );
    }

    #[test]
    fn seed_flag_applies_to_a_random_plan() {
        let options = parse(&["--faults=rate=0.5:503", "--seed=7"])
            .unwrap()
            .unwrap();
        assert_eq!(options.plan.to_string(), "rate=0.5:503;seed=7");
    }

    #[test]
    fn a_seed_in_the_plan_text_wins_over_the_flag() {
        let options = parse(&["--faults=rate=0.5:503;seed=3", "--seed=7"])
            .unwrap()
            .unwrap();
        assert_eq!(options.plan.to_string(), "rate=0.5:503;seed=3");
    }

    #[test]
    fn prefill_mode_is_an_option() {
        let options = parse(&["--prefill", "refuse"]).unwrap().unwrap();
        assert_eq!(options.prefill, PrefillMode::Refuse);
        assert!(
            parse(&["--prefill=sometimes"])
                .unwrap_err()
                .contains("unknown prefill mode")
        );
    }

    #[test]
    fn help_is_not_an_error() {
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}
