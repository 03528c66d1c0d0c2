//! `tower-llm-gateway`: an OpenAI- and Anthropic-compatible LLM gateway on
//! tower-llm (chat completions, completions, embeddings, Responses,
//! Anthropic Messages, the model list), routed by `model` to
//! upstream targets through `LlmStack` — each target Retry → Circuit →
//! Classify, Fallback over them.
//!
//! Out of the box, with no configuration and no keys:
//!
//! ```text
//! cargo run --release -p tower-llm-gateway
//! ```
//!
//! starts three simulated providers (a flaky primary, a healthy backup, an
//! Anthropic-protocol one), sends a warm-up of requests through itself with
//! an outage in the middle (retries, fallbacks and the breaker in view),
//! then prints a `curl` command per endpoint and waits.
//!
//! For real providers: `--config crates/tower-llm-gateway/gateway.toml`
//! (annotated; keys come from the environment variables the file names,
//! the keys callers must send too). Without caller keys the gateway serves
//! only on loopback unless `[gateway] allow_unauthenticated = true`.
//!
//! Options: see [`USAGE`].

use std::process::ExitCode;

use tokio::net::TcpListener;
use tower_llm_gateway::telemetry::{self, Telemetry};
use tower_llm_gateway::{Closing, GatewaySection, config, demo};

/// What `--help` prints.
const USAGE: &str = "\
tower-llm-gateway: an OpenAI-compatible LLM gateway (retries, circuit breakers, fallback)

Usage: tower-llm-gateway [OPTIONS]

Options:
  --config <FILE>             the gateway file ([gateway] section, targets, routes);
                              without it: two simulated providers, no keys needed
  --listen <ADDR>             where to listen (default: [gateway] listen, else 127.0.0.1:8080)
  --log-format <text|json>    log lines as text (default) or JSON
  --warm-up <N>               demo only: N requests sent through the gateway at start,
                              with an outage of the simulated primary (default 45; 0 skips)
  --no-warm-up                demo only: no warm-up (as --warm-up 0)
  -h, --help                  this text

RUST_LOG sets the log filter (default: info).";

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    config: Option<String>,
    listen: Option<String>,
    json_logs: bool,
    warm_up: usize,
    help: bool,
}

/// Reads the arguments after the program's name.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        config: None,
        listen: None,
        json_logs: false,
        warm_up: 45,
        help: false,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // `--name=value` as well as `--name value`.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value (try --help)"))
        };
        match name.as_str() {
            "--config" => parsed.config = Some(value()?),
            "--listen" => parsed.listen = Some(value()?),
            "--log-format" => {
                parsed.json_logs = match value()?.as_str() {
                    "json" => true,
                    "text" => false,
                    other => return Err(format!("--log-format: `{other}` is not text or json")),
                }
            }
            "--warm-up" => {
                let n = value()?;
                parsed.warm_up = n
                    .parse()
                    .map_err(|_| format!("--warm-up: `{n}` is not a number"))?;
            }
            "--no-warm-up" => parsed.warm_up = 0,
            "-h" | "--help" => parsed.help = true,
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(parsed)
}

/// The log lines, and the traces when `[telemetry]` asks for them.
fn init_logs(json: bool, traces: Option<&Telemetry>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The request and attempt spans are for the trace exporter, never the
    // log: without one, nothing enables them and they cost nothing.
    let filter = telemetry::without_spans(filter);
    // Colours only for a person at a terminal: a log file or a collector
    // gets no ANSI escapes, and `NO_COLOR` (no-color.org) turns them off.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt::layer().with_ansi(colours);
    let logs = if json {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces.map(Telemetry::layer))
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("tower-llm-gateway: {error}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tower-llm-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            Some(config::parse_file(&text).map_err(|e| format!("{path}: {e}"))?)
        }
        None => None,
    };
    let traces = match &file {
        Some((section, _)) => Telemetry::start(&section.telemetry)?,
        None => None,
    };
    init_logs(args.json_logs, traces.as_ref());
    let metrics = tower_llm_gateway::prometheus();
    let client = tower_llm_gateway::upstream_client();

    let (demo, section, stack, stack_idle) = match file {
        Some((section, config)) => {
            let config = config.from_env()?;
            let stack_idle = config.stream_idle_timeout()?;
            let mut stack = config.stack(client)?;
            if let Some(shared) = section.shared.connect()? {
                stack = stack.shared_state(shared);
            }
            (None, section, stack.build()?, stack_idle)
        }
        None => {
            let demo = demo::Demo::start().await?;
            let config = demo.config()?.from_env()?;
            let stack_idle = config.stream_idle_timeout()?;
            let stack = config.stack_with_env(client, demo::Demo::env)?.build()?;
            (Some(demo), GatewaySection::default(), stack, stack_idle)
        }
    };
    let mut options = section.options()?;
    // The stack's idle timer must fire before the gateway's.
    section.fit_idle_timeout(&mut options, stack_idle)?;
    if let Some(listen) = &args.listen {
        options.listen = listen
            .parse()
            .map_err(|_| format!("--listen: `{listen}` is not an address like 127.0.0.1:8080"))?;
    }
    options.check_exposure(options.listen)?;
    let listener = TcpListener::bind(options.listen).await.map_err(|e| {
        format!(
            "cannot listen on {}: {e} (try --listen 127.0.0.1:0)",
            options.listen
        )
    })?;
    let base = format!("http://{}", listener.local_addr()?);
    let closing = Closing::new();
    let router = tower_llm_gateway::router(stack, &options, metrics, &closing);
    let server = tokio::spawn(tower_llm_gateway::serve(
        listener,
        router,
        &options,
        tower_llm_gateway::shutdown_signal(),
        closing,
    ));

    println!("tower-llm gateway on {base}");
    match &options.caller_keys {
        Some(keys) => println!(
            "  caller keys: {} accepted (Authorization: Bearer <key> or x-api-key: <key>)",
            keys.len()
        ),
        None => println!("  caller keys: none needed (no [gateway] api_keys_env)"),
    }
    if let Some(demo) = &demo {
        println!(
            "  upstreams (simulated): primary {}/v1 (flaky: {}), backup {}/v1 (healthy, model llama3.2), claude {}/v1 (Anthropic protocol, claude-*: {})",
            demo.primary.base_url(),
            demo::FLAKY,
            demo.backup.base_url(),
            demo.claude.base_url(),
            demo::CLAUDE_FLAKY
        );
        if args.warm_up > 0 {
            demo::warm_up(&base, demo, args.warm_up).await?;
        }
    }
    // With caller keys, the hints send one (from a variable the user sets:
    // the gateway never prints a key).
    let auth = if options.caller_keys.is_some() {
        " -H \"authorization: Bearer $KEY\""
    } else {
        ""
    };
    println!("try:");
    for line in demo::curl_lines(&base, auth) {
        println!("  {line}");
    }
    println!("  curl -s {base}/health{auth}");
    println!("  curl -s {base}/metrics{auth}");
    if let Some(url) = section.telemetry.traces_url()?.filter(|_| traces.is_some()) {
        println!("  traces: OTLP/HTTP to {url}");
    }
    println!("Ctrl-C stops (in-flight requests finish first).");
    let served = server.await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    served??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn no_arguments_start_the_demo_with_its_warm_up() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.config, None);
        assert_eq!(args.warm_up, 45);
        assert!(!args.json_logs && !args.help);
    }

    #[test]
    fn every_flag_is_read_with_its_value_apart_or_after_an_equals_sign() {
        let args = parse(&[
            "--config",
            "gw.toml",
            "--listen=0.0.0.0:9000",
            "--log-format",
            "json",
            "--warm-up",
            "3",
        ])
        .unwrap();
        assert_eq!(args.config.as_deref(), Some("gw.toml"));
        assert_eq!(args.listen.as_deref(), Some("0.0.0.0:9000"));
        assert!(args.json_logs);
        assert_eq!(args.warm_up, 3);
        assert_eq!(parse(&["--no-warm-up"]).unwrap().warm_up, 0);
        assert!(parse(&["--help"]).unwrap().help);
        assert!(parse(&["-h"]).unwrap().help);
    }

    #[test]
    fn a_bad_argument_is_named() {
        for (args, named) in [
            (&["--config"][..], "--config"),
            (&["--log-format", "yaml"], "yaml"),
            (&["--warm-up", "many"], "many"),
            (&["--verbose"], "--verbose"),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.contains(named), "{error}");
        }
    }
}
