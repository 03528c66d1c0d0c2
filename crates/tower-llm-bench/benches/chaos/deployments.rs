//! Deployment groups in the chaos suite (issue 17): one model on three
//! deployments, spread by each contender — tower-llm's ordered fallback
//! (before groups), a group without pacing, a group with pacing, and
//! `tower::balance::p2c` over peak-EWMA as the peer — under the same
//! seeded open-loop load on the paused clock.
//!
//! - `deployments`: the three have rate limits of 600, 300 and 100
//!   requests a minute (the testkit's sliding window, OpenAI's headers,
//!   its 429 with `retry-after`); the load is 90 % of their sum.
//! - `slow_deployment`: three equal deployments; one turns 10× slower at
//!   10 s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_llm::LlmError;
use tower_llm::circuit::PacingConfig;
use tower_llm::fallback::Strategy;
use tower_llm::retry::ReplayBody;
use tower_llm::stack::{LlmStack, ModelRoute, Preset, Stack};
use tower_llm_testkit::{ProviderLimits, RecordedRequest, Simulator, Stats};

use crate::contender::{Call, Contender, Outcome, finish, read};
use crate::{REPLY, Scenario, chat};

pub(crate) const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "deployments",
        what: "one model on three deployments limited to 600, 300 and 100 requests a minute (sliding window, OpenAI's rate-limit headers, 429 with retry-after over it), 100 ms per answer; open loop at 90 % of their sum (15 req/s) for 180 s",
        goal: "goodput ≥ 95 % of the offered load, 429s ≤ 1 % of upstream calls, each deployment's share of the answers within 10 % of its limit's share (60 / 30 / 10 %)",
    },
    Scenario {
        name: "slow_deployment",
        what: "three equal deployments, 100 ms per answer; the first turns 10× slower (1 s) at 10 s; open loop at 30 req/s for 40 s",
        goal: "the slow deployment receives < 10 % of the requests sent from 5 s after it turned slow",
    },
];

/// Limits of the `deployments` scenario, requests a minute.
const LIMITS: [u64; 3] = [600, 300, 100];
const NAMES: [&str; 3] = ["d0", "d1", "d2"];

type Build = fn(&[String; 3]) -> Box<dyn Contender>;

const CONTENDERS: [(&str, Build); 4] = [
    ("tower-llm ordered fallback", ordered),
    ("tower-llm group (latency)", group_unpaced),
    ("tower-llm group (latency) + pacing", group_paced),
    ("tower::balance::p2c (PeakEwma)", p2c),
];

/// What one contender did in one scenario.
struct DeployRun {
    /// Each request: when sent (from the start), how long it took, whether
    /// it succeeded.
    records: Vec<(Duration, Duration, bool)>,
    /// Each deployment's counters and recorded requests.
    stats: [Stats; 3],
    recorded: [Vec<RecordedRequest>; 3],
    started: Instant,
}

/// The scenarios whose name contains one of `filter` (all when empty):
/// their tables, printed and returned as markdown.
pub(crate) fn run_matching(filter: &[String], runtime: &tokio::runtime::Runtime) -> String {
    let mut md = String::new();
    for scenario in &SCENARIOS {
        if !filter.is_empty() && !filter.iter().any(|f| scenario.name.contains(f.as_str())) {
            continue;
        }
        let mut rows = Vec::new();
        for (name, build) in CONTENDERS {
            let wall = std::time::Instant::now();
            let run = runtime.block_on(run(scenario.name, build));
            eprintln!(
                "{:>18} {:<36} {} requests in {:.1} s wall",
                scenario.name,
                name,
                run.records.len(),
                wall.elapsed().as_secs_f64()
            );
            rows.push((name, run));
        }
        md.push_str(&table(scenario, &rows));
    }
    md
}

async fn deployment(limit: Option<u64>) -> Arc<Simulator> {
    let mut builder = Simulator::builder()
        .reply(REPLY)
        .latency(Duration::from_millis(100));
    if let Some(rpm) = limit {
        builder = builder.rate_limits(ProviderLimits::rpm(rpm));
    }
    Arc::new(builder.start().await.expect("a simulator"))
}

async fn run(scenario: &str, build: Build) -> DeployRun {
    let limited = scenario == "deployments";
    let sims = [
        deployment(limited.then_some(LIMITS[0])).await,
        deployment(limited.then_some(LIMITS[1])).await,
        deployment(limited.then_some(LIMITS[2])).await,
    ];
    let urls = [0, 1, 2].map(|i| sims[i].base_url());
    let contender: Arc<dyn Contender> = build(&urls).into();
    let started = Instant::now();
    let (rate, seconds) = if limited { (15, 180) } else { (30, 40) };
    let slow = Arc::clone(&sims[0]);
    let mut turned_slow = Some(move || slow.set_latency(Duration::from_secs(1)));
    let every = Duration::from_secs(1) / rate;
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        let when = started + every * i;
        tokio::time::sleep_until(when).await;
        if !limited
            && when - started >= Duration::from_secs(10)
            && let Some(change) = turned_slow.take()
        {
            change();
        }
        let (contender, records) = (Arc::clone(&contender), Arc::clone(&records));
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = matches!(
                contender.call(chat(false, i as usize)).await,
                Outcome::Ok { .. }
            );
            records
                .lock()
                .unwrap()
                .push((sent - started, sent.elapsed(), ok));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    DeployRun {
        records: Arc::try_unwrap(records).unwrap().into_inner().unwrap(),
        stats: [0, 1, 2].map(|i| sims[i].stats()),
        recorded: [0, 1, 2].map(|i| sims[i].requests()),
        started,
    }
}

fn pct(part: f64, whole: f64) -> String {
    if whole == 0.0 {
        "–".to_owned()
    } else {
        format!("{:.1} %", part * 100.0 / whole)
    }
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or_default()
}

fn table(scenario: &Scenario, rows: &[(&str, DeployRun)]) -> String {
    let mut md = format!(
        "### {}\n\n{}.\n\nGoal: {}.\n\n",
        scenario.name, scenario.what, scenario.goal
    );
    if scenario.name == "deployments" {
        md.push_str(
            "| contender | requests | goodput | upstream calls | 429s of upstream calls | \
             answers d0 / d1 / d2 (limits 60 / 30 / 10 %) | p50 | p99 | waited ≥ 1 s |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for (name, run) in rows {
            let offered = run.records.len() as f64;
            let good = run.records.iter().filter(|r| r.2).count() as f64;
            let calls: u64 = run.stats.iter().map(|s| s.requests).sum();
            // Every answer is healthy by plan: the errors are the 429s.
            let refused: u64 = run.stats.iter().map(|s| s.errors).sum();
            let answered: u64 = run.stats.iter().map(|s| s.answered).sum();
            let shares = run
                .stats
                .iter()
                .map(|s| {
                    format!(
                        "{} ({})",
                        pct(s.answered as f64, answered as f64),
                        s.answered
                    )
                })
                .collect::<Vec<_>>()
                .join(" / ");
            let took: Vec<Duration> = run.records.iter().map(|r| r.1).collect();
            md.push_str(&format!(
                "| {name} | {} | {} | {calls} | {} ({refused}) | {shares} | {:.2} s | {:.2} s | {} |\n",
                run.records.len(),
                pct(good, offered),
                pct(refused as f64, calls as f64),
                percentile(took.clone(), 0.5).as_secs_f64(),
                percentile(took.clone(), 0.99).as_secs_f64(),
                pct(
                    took.iter().filter(|t| **t >= Duration::from_secs(1)).count() as f64,
                    offered
                ),
            ));
        }
    } else {
        md.push_str(
            "| contender | requests | goodput | to the slow one, 0–10 s | 10–15 s | from 15 s (goal < 10 %) | p99 from 15 s |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for (name, run) in rows {
            let offered = run.records.len() as f64;
            let good = run.records.iter().filter(|r| r.2).count() as f64;
            let share = |from: f64, to: f64| {
                let count = |recorded: &[RecordedRequest]| {
                    recorded
                        .iter()
                        .filter(|r| {
                            let at = r.at.saturating_duration_since(run.started).as_secs_f64();
                            at >= from && at < to
                        })
                        .count() as f64
                };
                let slow = count(&run.recorded[0]);
                let all: f64 = run.recorded.iter().map(|r| count(r)).sum();
                pct(slow, all)
            };
            let late: Vec<Duration> = run
                .records
                .iter()
                .filter(|r| r.0 >= Duration::from_secs(15))
                .map(|r| r.1)
                .collect();
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {:.2} s |\n",
                run.records.len(),
                pct(good, offered),
                share(0.0, 10.0),
                share(10.0, 15.0),
                share(15.0, f64::MAX),
                percentile(late, 0.99).as_secs_f64(),
            ));
        }
    }
    md.push('\n');
    md
}

// ---- contenders -------------------------------------------------------

/// A tower-llm stack.
struct Ours(Stack);

impl Contender for Ours {
    fn call(&self, body: Bytes) -> Call<'_> {
        Box::pin(async move {
            let request = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("a valid request");
            match self.0.clone().oneshot(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response
                        .into_body()
                        .map_err(|error: LlmError| error.kind().as_str());
                    finish(status, read(body).await, false)
                }
                Err(error) => Outcome::Err {
                    status: error.response_head().map(|h| h.status.as_u16()),
                    partial: String::new(),
                    cause: Some(error.kind().as_str().to_owned()),
                },
            }
        })
    }
}

/// The default preset (jitter seeded) over the three deployments, routed
/// by `route`, paced or not.
fn stack(urls: &[String; 3], route: ModelRoute, pacing: PacingConfig) -> Box<dyn Contender> {
    let client: Client<HttpConnector, ReplayBody> =
        Client::builder(TokioExecutor::new()).build_http();
    let preset = Preset::SdkDefault;
    let retry = preset
        .retry()
        .to_builder()
        .seed(7)
        .build()
        .expect("a policy");
    let circuit = preset
        .circuit()
        .to_builder()
        .seed(7)
        .pacing(pacing)
        .build()
        .expect("a config");
    let mut stack = LlmStack::preset(preset)
        .retry(retry)
        .circuit(circuit)
        .seed(7);
    for (name, url) in NAMES.iter().zip(urls) {
        let url: http::Uri = url.parse().expect("a base URL");
        stack = stack.target(name, client.clone(), |t| t.base_url(url));
    }
    Box::new(Ours(stack.route(route).build().expect("a valid stack")))
}

/// Today's fallback: the largest first, the next when it fails.
fn ordered(urls: &[String; 3]) -> Box<dyn Contender> {
    stack(urls, ModelRoute::new("*", NAMES), PacingConfig::off())
}

fn grouped() -> ModelRoute {
    ModelRoute::new("*", Vec::<String>::new()).group(Strategy::Latency, NAMES)
}

/// One group picked by latency, reacting to 429s only (pacing off).
fn group_unpaced(urls: &[String; 3]) -> Box<dyn Contender> {
    stack(urls, grouped(), PacingConfig::off())
}

/// One group picked by latency, skipping deployments their headers say
/// are spent (pacing from headers, the default).
fn group_paced(urls: &[String; 3]) -> Box<dyn Contender> {
    stack(urls, grouped(), PacingConfig::default())
}

/// One deployment for tower's balancer: a chat completion to its URL, the
/// body read to its end (so that `CompleteOnResponse` times the answer).
#[derive(Clone)]
struct Leg {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
}

type LegAnswer = (u16, Result<Bytes, (Bytes, Option<String>)>);
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Bytes> for Leg {
    type Response = LegAnswer;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<LegAnswer, BoxError>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, body: Bytes) -> Self::Future {
        let (client, url) = (self.client.clone(), self.url.clone());
        Box::pin(async move {
            let request = Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(body))?;
            let response = client.request(request).await?;
            let status = response.status().as_u16();
            Ok((status, read(response.into_body()).await))
        })
    }
}

/// `tower::balance::p2c::Balance` over the three, each under
/// `load::PeakEwma` (its example's 30 ms default RTT and 10 s decay:
/// tower `examples/tower-balance.rs`). The balancer is not `Clone`: calls
/// take turns to pick under a lock and await their answers outside it.
struct P2c(tokio::sync::Mutex<P2cService>);

type P2cService = tower::balance::p2c::Balance<
    tower::discover::ServiceList<
        Vec<tower::load::PeakEwma<Leg, tower::load::completion::CompleteOnResponse>>,
    >,
    Bytes,
>;

impl Contender for P2c {
    fn call(&self, body: Bytes) -> Call<'_> {
        Box::pin(async move {
            let answer = {
                let mut balance = self.0.lock().await;
                match tower::ServiceExt::<Bytes>::ready(&mut *balance).await {
                    Ok(ready) => tower::Service::call(ready, body),
                    Err(_) => return failed(),
                }
            };
            match answer.await {
                Ok((status, body)) => finish(status, body, false),
                Err(_) => failed(),
            }
        })
    }
}

fn failed() -> Outcome {
    Outcome::Err {
        status: None,
        partial: String::new(),
        cause: None,
    }
}

fn p2c(urls: &[String; 3]) -> Box<dyn Contender> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let legs: Vec<_> = urls
        .iter()
        .map(|url| {
            tower::load::PeakEwma::new(
                Leg {
                    client: client.clone(),
                    url: format!("{url}/v1/chat/completions"),
                },
                Duration::from_millis(30),
                Duration::from_secs(10).as_nanos() as f64,
                tower::load::completion::CompleteOnResponse::default(),
            )
        })
        .collect();
    let balance = tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(legs));
    Box::new(P2c(tokio::sync::Mutex::new(balance)))
}
