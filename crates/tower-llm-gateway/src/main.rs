//! An OpenAI-compatible LLM gateway on tower-llm: `POST /v1/chat/completions`
//! (whole and streamed), routed by `model` to upstream targets through
//! `LlmStack` — each target Retry → Circuit → Classify, Fallback over them.
//!
//! Out of the box, with no configuration and no keys:
//!
//! ```text
//! cargo run --release --example gateway
//! ```
//!
//! starts two simulated providers (a flaky primary, a healthy backup),
//! sends a warm-up of requests through itself with an outage in the middle
//! (retries, fallbacks and the breaker in view), then waits for `curl`.
//!
//! For real providers: `--config examples/gateway.toml` (annotated; keys
//! come from the environment variables the file names, the keys callers
//! must send too). Without caller keys the gateway serves only on loopback
//! unless `[gateway] allow_unauthenticated = true`.
//!
//! Options: `--config FILE`, `--listen ADDR`, `--log-format text|json`,
//! `--warm-up N` (demo only; 0 to skip).

mod app;
mod demo;

use std::time::Duration;

use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

/// The command line.
struct Args {
    config: Option<String>,
    listen: Option<String>,
    json_logs: bool,
    warm_up: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        listen: None,
        json_logs: false,
        warm_up: 45,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config" => args.config = Some(value("--config")?),
            "--listen" => args.listen = Some(value("--listen")?),
            "--log-format" => {
                args.json_logs = match value("--log-format")?.as_str() {
                    "json" => true,
                    "text" => false,
                    other => return Err(format!("--log-format: `{other}` is not text or json")),
                }
            }
            "--warm-up" => {
                let n = value("--warm-up")?;
                args.warm_up = n
                    .parse()
                    .map_err(|_| format!("--warm-up: `{n}` is not a number"))?;
            }
            "-h" | "--help" => {
                println!(
                    "gateway [--config FILE] [--listen ADDR] [--log-format text|json] [--warm-up N]\n\
                     Without --config: simulated providers, no keys needed."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("gateway: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    init_logs(args.json_logs);
    let metrics = app::prometheus();

    // One client for every target: HTTPS (webpki roots) and plain HTTP
    // (local models, the simulators), HTTP/1.1 with keep-alive.
    // TCP_NODELAY: a stream's small frames must not wait for ACKs (Nagle).
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https);

    let (demo, section, stack, stack_idle) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            let (section, config) =
                app::config::parse_file(&text).map_err(|e| format!("{path}: {e}"))?;
            let config = config.from_env()?;
            let stack_idle = config.stream_idle_timeout()?;
            (None, section, config.build(client)?, stack_idle)
        }
        None => {
            let demo = demo::Demo::start().await?;
            let config = demo.config()?.from_env()?;
            let stack_idle = config.stream_idle_timeout()?;
            let stack = config.stack_with_env(client, demo::Demo::env)?.build()?;
            (
                Some(demo),
                app::config::GatewaySection::default(),
                stack,
                stack_idle,
            )
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
    let closing = app::Closing::new();
    let router = app::router(stack, &options, metrics, &closing);
    let server = tokio::spawn(app::serve::serve(
        listener,
        router,
        &options,
        shutdown_signal(),
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
            "  upstreams (simulated): primary {}/v1 (flaky: {}), backup {}/v1 (healthy, model llama3.2)",
            demo.primary.base_url(),
            demo::FLAKY,
            demo.backup.base_url()
        );
        if args.warm_up > 0 {
            demo::warm_up(&base, demo, args.warm_up).await?;
        }
    }
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}"#;
    let stream =
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;
    // With caller keys, the hints send one (from a variable the user sets:
    // the gateway never prints a key).
    let auth = if options.caller_keys.is_some() {
        " -H \"authorization: Bearer $KEY\""
    } else {
        ""
    };
    println!("try:");
    println!(
        "  curl -si {base}/v1/chat/completions{auth} -H 'content-type: application/json' -d '{body}'"
    );
    println!(
        "  curl -sN {base}/v1/chat/completions{auth} -H 'content-type: application/json' -d '{stream}'"
    );
    println!("  curl -s {base}/health{auth}");
    println!("  curl -s {base}/metrics{auth}");
    println!("Ctrl-C stops (in-flight requests finish first).");
    server.await??;
    Ok(())
}
