//! Chaos: the same load against a flaky simulated provider, first through
//! a bare hyper client, then through the full stack
//! (`LlmStack::high_availability()`, a healthy backup as the fallback
//! target), and a table of what each got.
//!
//! Two phases, each run for both callers:
//!
//! - **flaky**: `--requests N` chat completions (default 2000),
//!   `--concurrency C` at a time (default 32), while the primary fails by
//!   `--faults PLAN` (default `rate=0.2:503,0.05:reset`, the testkit's
//!   fault syntax). Measured: success rate, upstream calls per request
//!   (from the simulators' counters), p50/p99 latency, how often the
//!   primary's breaker opened.
//! - **outage**: a closed loop at the same concurrency; after 0.5 s the
//!   primary answers `503` to everything for 2 s, then is healthy again.
//!   Measured: success during the outage, how many calls reached the dead
//!   primary and when the last one did (from the simulator's recording),
//!   when the breaker opened, and how long after the outage the primary
//!   served again (the breaker's half-open probe).
//!
//! Every figure is measured in the run; both providers are
//! `tower_llm_testkit` simulators on 127.0.0.1 (5–15 ms per answer), so
//! there is no network and no key. About 10–15 s in all.
//!
//! Run: `cargo run --release --example chaos -- --requests 2000`

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, sleep};
use tower::ServiceExt;
use tower_llm::circuit::CircuitState;
use tower_llm::stack::{LlmStack, Stack, served_by};
use tower_llm_testkit::{Api, Delay, Fault, FaultPlan, Simulator};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}]}"#;
/// The primary's breaker key in the stack: `target/model`.
const PRIMARY_KEY: &str = "primary/gpt-4o";

/// The outage phase's timeline.
const WARM_UP: Duration = Duration::from_millis(500);
const OUTAGE: Duration = Duration::from_secs(2);
/// How long the bare client's run goes on after the outage.
const BARE_TAIL: Duration = Duration::from_millis(500);
/// The longest the stack's run waits for the primary to serve again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(12);

const USAGE: &str = "usage: chaos [--requests N] [--concurrency C] [--faults PLAN]";

/// The command line.
#[derive(Debug)]
struct Options {
    requests: usize,
    concurrency: usize,
    faults: FaultPlan,
}

/// The options, or `None` when only help was asked for.
fn options() -> Result<Option<Options>, Box<dyn Error>> {
    let mut options = Options {
        requests: 2000,
        concurrency: 32,
        faults: "rate=0.2:503,0.05:reset".parse()?,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--requests" => options.requests = value()?.parse()?,
            "--concurrency" => options.concurrency = value()?.parse()?,
            "--faults" => options.faults = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument `{other}`; {USAGE}").into()),
        }
    }
    if options.requests == 0 || options.concurrency == 0 {
        return Err(format!("--requests and --concurrency must be at least 1; {USAGE}").into());
    }
    Ok(Some(options))
}

/// Who answered a request, if it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Served {
    Primary,
    Backup,
    Failed,
}

/// One request of a run.
#[derive(Clone, Copy, Debug)]
struct Record {
    start: Instant,
    end: Instant,
    served: Served,
}

/// What sends the requests: the bare client, or the stack over it.
#[derive(Clone, Debug)]
enum Caller {
    Bare {
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        url: String,
    },
    Stack(Stack),
}

fn chat(uri: &str) -> Result<Request<Full<Bytes>>, http::Error> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
}

impl Caller {
    /// One chat completion, its whole body read.
    async fn send(&self) -> Served {
        match self {
            Caller::Bare { client, url } => {
                let Ok(request) = chat(url) else {
                    return Served::Failed;
                };
                let Ok(response) = client.request(request).await else {
                    return Served::Failed;
                };
                let ok = response.status() == StatusCode::OK;
                // Read error bodies too, so the connection is reused.
                match response.into_body().collect().await {
                    Ok(_) if ok => Served::Primary,
                    _ => Served::Failed,
                }
            }
            Caller::Stack(stack) => {
                let Ok(request) = chat("/v1/chat/completions") else {
                    return Served::Failed;
                };
                let Ok(response) = stack.clone().oneshot(request).await else {
                    return Served::Failed;
                };
                let served = match served_by(&response) {
                    Some("primary") => Served::Primary,
                    Some(_) => Served::Backup,
                    None => Served::Failed,
                };
                let ok = response.status() == StatusCode::OK;
                match response.into_body().collect().await {
                    Ok(_) if ok => served,
                    _ => Served::Failed,
                }
            }
        }
    }

    fn stack(&self) -> Option<&Stack> {
        match self {
            Caller::Bare { .. } => None,
            Caller::Stack(stack) => Some(stack),
        }
    }
}

/// How many requests a run sends, or until when.
#[derive(Debug)]
struct Load {
    next: AtomicUsize,
    limit: usize,
    stop: AtomicBool,
}

impl Load {
    fn requests(limit: usize) -> Arc<Load> {
        Arc::new(Load {
            next: AtomicUsize::new(0),
            limit,
            stop: AtomicBool::new(false),
        })
    }

    fn until_stopped() -> Arc<Load> {
        Load::requests(usize::MAX)
    }

    fn take(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.next.fetch_add(1, Ordering::Relaxed) < self.limit
    }
}

/// `concurrency` workers sending one request after another while `load`
/// allows.
async fn drive(
    caller: Caller,
    load: Arc<Load>,
    concurrency: usize,
) -> Result<Vec<Record>, tokio::task::JoinError> {
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let caller = caller.clone();
            let load = Arc::clone(&load);
            tokio::spawn(async move {
                let mut records = Vec::new();
                while load.take() {
                    let start = Instant::now();
                    let served = caller.send().await;
                    records.push(Record {
                        start,
                        end: Instant::now(),
                        served,
                    });
                }
                records
            })
        })
        .collect();
    let mut records = Vec::new();
    for worker in workers {
        records.extend(worker.await?);
    }
    Ok(records)
}

/// Records the primary's breaker state each time it changes until `load`
/// stops, on a thread of its own polling every 100 µs (a task on the
/// runtime would be late under load).
fn watch_breaker(
    stack: &Stack,
    load: &Arc<Load>,
) -> std::thread::JoinHandle<Vec<(Instant, CircuitState)>> {
    let circuits = stack.circuits().clone();
    let load = Arc::clone(load);
    std::thread::spawn(move || {
        let mut changes = Vec::new();
        let mut last = None;
        while !load.stop.load(Ordering::Relaxed) {
            let state = circuits.state(PRIMARY_KEY);
            if state != last {
                if let Some(state) = state {
                    changes.push((Instant::now(), state));
                }
                last = state;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        changes
    })
}

/// The changes a watcher saw (none for the bare client).
fn changes(
    watcher: Option<std::thread::JoinHandle<Vec<(Instant, CircuitState)>>>,
) -> Result<Vec<(Instant, CircuitState)>, Box<dyn Error>> {
    match watcher {
        Some(watcher) => watcher
            .join()
            .map_err(|_| "the breaker watcher panicked".into()),
        None => Ok(Vec::new()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn success_rate(records: &[Record]) -> f64 {
    let ok = records
        .iter()
        .filter(|r| r.served != Served::Failed)
        .count();
    100.0 * ok as f64 / records.len().max(1) as f64
}

fn millis(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// What the flaky phase measured for one caller.
#[derive(Debug)]
struct Flaky {
    requests: usize,
    success: f64,
    primary_calls: u64,
    backup_calls: u64,
    p50: Duration,
    p99: Duration,
    wall: Duration,
    breaker_opened: usize,
}

async fn flaky(
    caller: &Caller,
    options: &Options,
    primary: &Simulator,
    backup: &Simulator,
) -> Result<Flaky, Box<dyn Error>> {
    primary.set_plan(options.faults.clone());
    let (primary_before, backup_before) = (primary.stats().requests, backup.stats().requests);
    let load = Load::requests(options.requests);
    let watcher = caller.stack().map(|stack| watch_breaker(stack, &load));
    let started = Instant::now();
    let records = drive(caller.clone(), Arc::clone(&load), options.concurrency).await?;
    let wall = started.elapsed();
    load.stop.store(true, Ordering::Relaxed);
    let breaker_opened = changes(watcher)?
        .iter()
        .filter(|(_, state)| *state == CircuitState::Open)
        .count();
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.end - r.start).collect();
    latencies.sort_unstable();
    Ok(Flaky {
        requests: records.len(),
        success: success_rate(&records),
        primary_calls: primary.stats().requests - primary_before,
        backup_calls: backup.stats().requests - backup_before,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        wall,
        breaker_opened,
    })
}

/// What the outage phase measured for one caller (times from the start or
/// the end of the outage).
#[derive(Debug)]
struct Outage {
    requests: usize,
    success_during: f64,
    dead_calls: usize,
    last_dead_call: Option<Duration>,
    breaker_open: Option<Duration>,
    breaker_closed: Option<Duration>,
    primary_again: Option<Duration>,
}

async fn outage(
    caller: &Caller,
    options: &Options,
    primary: &Simulator,
) -> Result<Outage, Box<dyn Error>> {
    primary.set_plan(FaultPlan::healthy());
    primary.take_requests();
    let load = Load::until_stopped();
    let driver = tokio::spawn(drive(
        caller.clone(),
        Arc::clone(&load),
        options.concurrency,
    ));
    let watcher = caller.stack().map(|stack| watch_breaker(stack, &load));

    sleep(WARM_UP).await;
    primary.set_plan(FaultPlan::always(Fault::server_error(503)));
    let down = Instant::now();
    sleep(OUTAGE).await;
    primary.set_plan(FaultPlan::healthy());
    let up = Instant::now();
    match caller.stack() {
        None => sleep(BARE_TAIL).await,
        Some(stack) => {
            // Until the breaker lets the primary serve again, then a little
            // more to see it serve.
            while up.elapsed() < RECOVERY_LIMIT
                && stack.circuits().state(PRIMARY_KEY) != Some(CircuitState::Closed)
            {
                sleep(Duration::from_millis(5)).await;
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
    load.stop.store(true, Ordering::Relaxed);
    let records = driver.await??;
    let changes = changes(watcher)?;

    let during: Vec<Record> = records
        .iter()
        .filter(|r| r.start >= down && r.start < up)
        .copied()
        .collect();
    let dead: Vec<Instant> = primary
        .take_requests()
        .iter()
        .map(|r| r.at)
        .filter(|at| *at >= down && *at < up)
        .collect();
    let breaker_open = changes
        .iter()
        .find(|(at, state)| *at >= down && *state == CircuitState::Open)
        .map(|(at, _)| *at);
    let breaker_closed = breaker_open.and_then(|opened| {
        changes
            .iter()
            .find(|(at, state)| *at > opened && *state == CircuitState::Closed)
            .map(|(at, _)| at.saturating_duration_since(up))
    });
    let primary_again = records
        .iter()
        .filter(|r| r.start >= up && r.served == Served::Primary)
        .map(|r| r.end - up)
        .min();
    Ok(Outage {
        requests: records.len(),
        success_during: success_rate(&during),
        dead_calls: dead.len(),
        last_dead_call: dead.iter().max().map(|at| *at - down),
        breaker_open: breaker_open.map(|at| at - down),
        breaker_closed,
        primary_again,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let Some(options) = options()? else {
        return Ok(());
    };
    let started = Instant::now();
    let latency = Delay::uniform(Duration::from_millis(5), Duration::from_millis(15));
    let primary = Simulator::builder().latency(latency).start().await?;
    let backup = Simulator::builder().latency(latency).start().await?;

    let client = Client::builder(TokioExecutor::new()).build_http();
    let bare = Caller::Bare {
        client: Box::new(client.clone()),
        url: primary.url(Api::OpenAiChat),
    };
    // A fresh stack per phase, so the outage starts with closed breakers
    // and full retry budgets.
    let stack = || -> Result<Caller, Box<dyn Error>> {
        let primary_url = primary.base_url().parse()?;
        let backup_url = backup.base_url().parse()?;
        let stack = LlmStack::high_availability()
            .target("primary", client.clone(), |t| t.base_url(primary_url))
            .target("backup", client.clone(), |t| t.base_url(backup_url))
            .build()?;
        Ok(Caller::Stack(stack))
    };

    println!(
        "primary {} (`{}`, 5–15 ms), backup {} (healthy)",
        primary.base_url(),
        options.faults,
        backup.base_url()
    );
    println!(
        "flaky phase: {} requests, {} at a time",
        options.requests, options.concurrency
    );
    let flaky_bare = flaky(&bare, &options, &primary, &backup).await?;
    let flaky_stack = flaky(&stack()?, &options, &primary, &backup).await?;
    println!(
        "outage phase: closed loop, {} at a time; primary `503` from +{} for {}",
        options.concurrency,
        millis(WARM_UP),
        millis(OUTAGE)
    );
    let outage_bare = outage(&bare, &options, &primary).await?;
    let outage_stack = outage(&stack()?, &options, &primary).await?;

    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut row = |name: &str, bare: String, stack: String| {
        rows.push([name.to_owned(), bare, stack]);
    };
    row(
        "flaky",
        "bare hyper client".into(),
        "LlmStack::high_availability()".into(),
    );
    let cell = |f: &dyn Fn(&Flaky) -> String| [f(&flaky_bare), f(&flaky_stack)];
    let [b, s] = cell(&|f| format!("{:.1} %", f.success));
    row("  success rate", b, s);
    let [b, s] = cell(&|f| {
        let n = f.requests.max(1) as f64;
        format!(
            "{:.2} ({:.2} + {:.2})",
            (f.primary_calls + f.backup_calls) as f64 / n,
            f.primary_calls as f64 / n,
            f.backup_calls as f64 / n
        )
    });
    row("  upstream calls/request (primary + backup)", b, s);
    let [b, s] = cell(&|f| millis(f.p50));
    row("  p50 latency", b, s);
    let [b, s] = cell(&|f| millis(f.p99));
    row("  p99 latency", b, s);
    let [b, s] = cell(&|f| format!("{} requests in {}", f.requests, millis(f.wall)));
    row("  run", b, s);
    row(
        "  primary's breaker opened",
        "-".into(),
        format!("{} time(s)", flaky_stack.breaker_opened),
    );

    row("outage", String::new(), String::new());
    let cell = |f: &dyn Fn(&Outage) -> String| [f(&outage_bare), f(&outage_stack)];
    let [b, s] = cell(&|o| format!("{:.1} %", o.success_during));
    row("  success rate during the outage", b, s);
    let [b, s] = cell(&|o| o.dead_calls.to_string());
    row("  calls that reached the dead primary", b, s);
    let [b, s] = cell(&|o| match o.last_dead_call {
        Some(last) if last + Duration::from_millis(100) >= OUTAGE => {
            "never (until it came back)".to_owned()
        }
        Some(last) => format!("after {}", millis(last)),
        None => "at once".to_owned(),
    });
    row("  stopped calling the dead primary, after it died", b, s);
    let [b, s] = cell(&|o| {
        o.breaker_open
            .map_or("-".to_owned(), |t| format!("after {}", millis(t)))
    });
    row("  breaker opened, after the primary died", b, s);
    let [b, s] = cell(&|o| {
        o.primary_again
            .map_or("not within the run".to_owned(), |t| {
                format!("after {}", millis(t))
            })
    });
    row("  primary served again, after it came back", b, s);
    let [b, s] = cell(&|o| {
        o.breaker_closed
            .map_or("-".to_owned(), |t| format!("after {}", millis(t)))
    });
    row("  breaker closed, after the primary came back", b, s);
    let [b, s] = cell(&|o| o.requests.to_string());
    row("  requests in the phase", b, s);

    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let second = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
    println!();
    for [name, bare, stack] in &rows {
        let line = format!("{name:<width$}  {bare:<second$}  {stack}");
        println!("{}", line.trim_end());
    }
    println!("\ntotal {}", millis(started.elapsed()));
    Ok(())
}
