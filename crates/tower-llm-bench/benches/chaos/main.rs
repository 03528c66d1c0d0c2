//! The chaos suite: the same seeded scenarios, against the testkit's
//! simulated providers over loopback, for each contender — a bare hyper
//! client, `tower::retry` with a status policy and `TpsBudget`,
//! tower-resilience (retry + circuit breaker), reqwest-middleware +
//! reqwest-retry, and tower-llm's default stack (with a fallback target
//! where the scenario has a second provider); `deployments.rs` has the
//! deployment-group scenarios, with contenders of their own.
//!
//! ```text
//! cargo bench -p tower-llm-bench --bench chaos                  # every scenario: rewrites the tables in BENCHMARKS.md and the charts
//! cargo bench -p tower-llm-bench --bench chaos -- transient     # the scenarios whose name contains "transient" (printed only)
//! cargo bench -p tower-llm-bench --bench chaos -- seeds         # transient and rate_limit under ten fault seeds each (mean, min, max)
//! CHAOS_DEBUG=1 cargo bench -p tower-llm-bench --bench chaos -- metastability   # besides: each contender's failures by cause and by the second they were sent
//! ```
//!
//! Time is Tokio's paused clock: the simulators' latencies, retry-after
//! hints, backoff sleeps, outages and breaker intervals are all virtual, so
//! a 90-second outage runs in seconds and every run is reproducible from
//! its seeds; latencies reported are virtual too (they measure waiting,
//! not CPU). Not run by CI.
//!
//! Every random fault plan here is drawn per request (`;per_request`):
//! the `k`-th time a request's body reaches a simulator, it meets the
//! fault drawn for that body and `k`, whichever contender sent it and in
//! whatever order its attempts interleave with other requests'. Every
//! contender thus meets the same faults for the same attempts (common
//! random numbers), and a difference in success is a difference in what
//! the contenders do. Drawn by arrival order instead, one contender's extra
//! or earlier retry shifted every later draw, and two correct retriers
//! differed by a few requests in 2,000 from luck alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod backoff;
mod contender;
mod deployments;
mod ours;
mod peers;
mod report;
mod seeds;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tower_llm_testkit::{Capacity, Fault, FaultPlan, RecordedRequest, Simulator};

use contender::{Build, Outcome};

/// The assistant's reply in every simulator: 32 words, so that a stream
/// can be cut after 0, 1 or 20 content events and still have some left.
const REPLY: &str = "one two three four five six seven eight nine ten eleven twelve thirteen \
    fourteen fifteen sixteen seventeen eighteen nineteen twenty twentyone twentytwo \
    twentythree twentyfour twentyfive twentysix twentyseven twentyeight twentynine thirty \
    thirtyone thirtytwo";

/// A contender's name and how to build it.
const CONTENDERS: [(&str, Build); 5] = [
    ("bare hyper", ours::bare),
    ("tower::retry + TpsBudget", peers::tower_retry),
    ("tower-resilience", peers::tower_resilience),
    ("reqwest-retry", peers::reqwest_retry),
    ("tower-llm", ours::tower_llm),
];

fn chat(stream: bool, i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"request {i}"}}]}}"#
    ))
}

async fn simulator(plan: FaultPlan, latency: Duration) -> Arc<Simulator> {
    Arc::new(
        Simulator::builder()
            .plan(plan)
            .reply(REPLY)
            .latency(latency)
            .start()
            .await
            .expect("a simulator"),
    )
}

fn plan(text: &str) -> FaultPlan {
    text.parse().expect("a valid fault plan")
}

fn setup(
    primary: &Simulator,
    backup: Option<&Simulator>,
    attempt_timeout: Option<Duration>,
) -> contender::Setup {
    contender::Setup {
        primary: primary.base_url(),
        backup: backup.map(Simulator::base_url),
        attempt_timeout,
        first_content_timeout: None,
        primary_continues: true,
    }
}

/// How long a caller waits in the scenarios where an upstream can fall
/// silent forever (a contender that never gives up would otherwise hold
/// the run): the official SDKs' default timeout (openai-python and
/// anthropic-sdk-python `Timeout(600)`).
const CALLER_DEADLINE: Duration = Duration::from_secs(600);

/// `build(setup)` behind a caller that gives up after [`CALLER_DEADLINE`].
fn impatient(build: Build, setup: &contender::Setup) -> Arc<dyn contender::Contender> {
    Arc::new(contender::WithDeadline {
        inner: build(setup),
        limit: CALLER_DEADLINE,
    })
}

/// One request as the caller saw it.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// The request's number, also in its body (`"request {id}"`), so its
    /// upstream attempts can be found in the simulators' recordings.
    pub(crate) id: usize,
    /// When it was sent, from the start of the run.
    pub(crate) start: Duration,
    /// How long until the caller had its outcome.
    pub(crate) took: Duration,
    pub(crate) outcome: Outcome,
}

/// What one contender did in one scenario.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) records: Vec<Record>,
    /// Every request each simulator received (primary, then backup).
    pub(crate) primary: Vec<RecordedRequest>,
    pub(crate) backup: Vec<RecordedRequest>,
    pub(crate) started: Instant,
}

impl Run {
    pub(crate) fn requests(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn succeeded(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ok { .. }))
            .count()
    }

    pub(crate) fn upstream_calls(&self) -> usize {
        self.primary.len() + self.backup.len()
    }

    /// Successful answers whose content is not the reply exactly once:
    /// duplicated (longer, or the reply repeated) and lost (shorter).
    pub(crate) fn duplicated_and_lost(&self) -> (usize, usize) {
        let mut duplicated = 0;
        let mut lost = 0;
        for record in &self.records {
            if let Outcome::Ok { content } = &record.outcome {
                if content.len() > REPLY.len() || content.matches("one two").count() > 1 {
                    duplicated += 1;
                } else if content != REPLY {
                    lost += 1;
                }
            }
        }
        (duplicated, lost)
    }

    /// Seconds since the run's start of a recorded upstream request.
    pub(crate) fn at(&self, request: &RecordedRequest) -> f64 {
        request
            .at
            .saturating_duration_since(self.started)
            .as_secs_f64()
    }
}

/// `n` requests, `concurrency` at a time, each sent when a slot frees.
async fn closed_loop(
    contender: &Arc<dyn contender::Contender>,
    n: usize,
    concurrency: usize,
    stream: bool,
    started: Instant,
) -> Vec<Record> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let records = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (contender, next, records) = (
            Arc::clone(contender),
            Arc::clone(&next),
            Arc::clone(&records),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let sent = Instant::now();
                let outcome = contender.call(chat(stream, i)).await;
                records.lock().unwrap().push(Record {
                    id: i,
                    start: sent - started,
                    took: sent.elapsed(),
                    outcome,
                });
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    Arc::try_unwrap(records).unwrap().into_inner().unwrap()
}

/// Requests arriving at `rate` per second for `seconds`, whatever the
/// answers (an open loop: steady traffic), with `at` changes to the
/// upstreams applied at their second.
async fn open_loop(
    contender: &Arc<dyn contender::Contender>,
    rate: u32,
    seconds: u32,
    started: Instant,
    at: Vec<(u32, Box<dyn FnOnce() + Send>)>,
) -> Vec<Record> {
    let every = Duration::from_secs(1) / rate;
    paced(contender, every, rate * seconds, started, at).await
}

/// `total` requests, one every `every`, whatever the answers, with `at`
/// changes to the upstreams applied at their second.
async fn paced(
    contender: &Arc<dyn contender::Contender>,
    every: Duration,
    total: u32,
    started: Instant,
    mut at: Vec<(u32, Box<dyn FnOnce() + Send>)>,
) -> Vec<Record> {
    at.sort_by_key(|(second, _)| *second);
    let mut changes = at.into_iter().peekable();
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..total {
        let when = started + every * i;
        tokio::time::sleep_until(when).await;
        while let Some((second, _)) = changes.peek() {
            if Duration::from_secs(u64::from(*second)) <= when - started {
                let (_, change) = changes.next().unwrap();
                change();
            } else {
                break;
            }
        }
        let (contender, records) = (Arc::clone(contender), Arc::clone(&records));
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = contender.call(chat(false, i as usize)).await;
            records.lock().unwrap().push(Record {
                id: i as usize,
                start: sent - started,
                took: sent.elapsed(),
                outcome,
            });
        }));
    }
    for change in changes {
        (change.1)();
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(records).unwrap().into_inner().unwrap()
}

/// A scenario: its name, what it does, the goal it is judged by.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) what: &'static str,
    pub(crate) goal: &'static str,
}

pub(crate) const SCENARIOS: [Scenario; 16] = [
    Scenario {
        name: "transient",
        what: "20 % 503 + 2 % connection resets; 2,000 requests, 32 at a time, 50 ms per answer",
        goal: "success ≥ 99.9 %, amplification ≤ 1.3",
    },
    Scenario {
        name: "rate_limit",
        what: "50 req/s for 60 s; from 20 s to 40 s, 30 % of calls get 429 with retry-after: 2",
        goal: "(no goal set; success and amplification reported)",
    },
    Scenario {
        name: "quota",
        what: "429 insufficient_quota on every call; 500 requests, 16 at a time",
        goal: "no retries (a quota does not come back within a request's life)",
    },
    Scenario {
        name: "outage",
        what: "50 req/s for 150 s; the primary answers 503 to everything from 30 s to 60 s (tower-llm also has a healthy backup, the others have nowhere else to go)",
        goal: "dead upstream no longer called within 2 s; amplification ≤ 1.1 once the breaker is open; served again within the open duration plus one probe",
    },
    Scenario {
        name: "stream_529_first",
        what: "streams; 25 % begin with an overload error event; 2,000 requests, 32 at a time",
        goal: "zero duplicated or lost content; success reported",
    },
    Scenario {
        name: "stream_drop_0",
        what: "streams; 20 % drop the connection before any content; 1,000 requests",
        goal: "zero duplicated or lost content",
    },
    Scenario {
        name: "stream_drop_1",
        what: "streams; 20 % drop the connection after 1 content event; 1,000 requests",
        goal: "zero duplicated or lost content",
    },
    Scenario {
        name: "stream_drop_20",
        what: "streams; 20 % drop the connection after 20 content events; 1,000 requests",
        goal: "zero duplicated or lost content",
    },
    Scenario {
        name: "stream_stall",
        what: "streams; 20 % fall silent after 5 content events (connection open, no byte more); 1,000 requests, 32 at a time; every caller gives up after 600 s (the SDKs' timeout)",
        goal: "≥ 99.9 % finished; zero duplicated or lost content",
    },
    Scenario {
        name: "stream_refused",
        what: "streams; 20 % cut after 20 content events; the primary cannot continue (OpenAI's own API has no prefill) and the backup refuses a prefill with a 400; 1,000 requests",
        goal: "no truncated answer passed as complete; the caller told what broke the stream, not the refusal",
    },
    Scenario {
        name: "silent_upstream",
        what: "streams; the primary accepts connections and never answers; a healthy backup; 200 requests, 8 at a time; every caller gives up after 600 s (the SDKs' timeout)",
        goal: "every request answered within the stream head timeout plus one backup call; the silent route not retried",
    },
    Scenario {
        name: "slow_first_token",
        what: "streams; the primary's first token comes 20 s after its head, the rest at once; a healthy backup; 200 requests, 8 at a time; a 5 s first-content timeout where the contender has one",
        goal: "(no goal set; time to the answer and requests moved to the backup reported)",
    },
    Scenario {
        name: "flapping",
        what: "one request every 4 s for 160 s; the primary answers 503 from 0 s to 60 s, then is healthy; a healthy backup",
        goal: "100 % served during the outage; back on the primary ≤ 30 s after it recovers; probes bounded (default presets)",
    },
    Scenario {
        name: "slow_upstream",
        what: "answers take 100 ms at the median and 1 s at p99 (log-normal); every contender has a 500 ms per-attempt timeout; 2,000 requests, 32 at a time",
        goal: "(no goal set; success, amplification and tail latency reported)",
    },
    Scenario {
        name: "retry_storm",
        what: "a dead upstream (503 always); 100 requests per second for 60 s (RESILIENCE.md §9 property 1's load)",
        goal: "retries (extra upstream calls) ≤ the budget (20 % of requests plus the floor)",
    },
    Scenario {
        name: "metastability",
        what: "capacity 8 × 100 ms (80 req/s), offered 64 req/s for 60 s; capacity 4 from 20 s to 30 s; overflow queued (64, 2 s) then shed",
        goal: "goodput ≥ 95 % of offered within 10 s after capacity returns; amplification ≤ 1.1 during the drop",
    },
];

async fn run(scenario: &str, build: Build) -> Run {
    let latency = Duration::from_millis(50);
    let backup = simulator(FaultPlan::always(Fault::ok()), latency).await;
    let (primary, records, started);
    match scenario {
        "transient" => {
            let seed = 11 + seeds::shift();
            primary = simulator(
                plan(&format!("rate=0.2:503,0.02:reset;seed={seed};per_request")),
                latency,
            )
            .await;
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, None, None)).into();
            started = Instant::now();
            records = closed_loop(&contender, 2000, 32, false, started).await;
        }
        "rate_limit" => {
            primary = simulator(FaultPlan::always(Fault::ok()), latency).await;
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, None, None)).into();
            started = Instant::now();
            let (on, off) = (Arc::clone(&primary), Arc::clone(&primary));
            records = open_loop(
                &contender,
                50,
                60,
                started,
                vec![
                    (
                        20,
                        Box::new(move || {
                            let seed = 12 + seeds::shift();
                            on.set_plan(plan(&format!(
                                "rate=0.3:rate_limited@2s;seed={seed};per_request"
                            )));
                        }),
                    ),
                    (
                        40,
                        Box::new(move || off.set_plan(FaultPlan::always(Fault::ok()))),
                    ),
                ],
            )
            .await;
        }
        "quota" => {
            primary = simulator(FaultPlan::always(Fault::quota_exhausted()), latency).await;
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, None, None)).into();
            started = Instant::now();
            records = closed_loop(&contender, 500, 16, false, started).await;
        }
        "outage" => {
            primary = simulator(FaultPlan::always(Fault::ok()), latency).await;
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, Some(&backup), None)).into();
            started = Instant::now();
            let (down, up) = (Arc::clone(&primary), Arc::clone(&primary));
            records = open_loop(
                &contender,
                50,
                150,
                started,
                vec![
                    (
                        30,
                        Box::new(move || down.set_plan(FaultPlan::always(Fault::status(503)))),
                    ),
                    (
                        60,
                        Box::new(move || up.set_plan(FaultPlan::always(Fault::ok()))),
                    ),
                ],
            )
            .await;
        }
        "stream_529_first" | "stream_drop_0" | "stream_drop_1" | "stream_drop_20" => {
            let (text, n) = match scenario {
                "stream_529_first" => ("rate=0.25:error@0;seed=13;per_request", 2000),
                "stream_drop_0" => ("rate=0.2:drop@0;seed=14;per_request", 1000),
                "stream_drop_1" => ("rate=0.2:drop@1;seed=15;per_request", 1000),
                _ => ("rate=0.2:drop@20;seed=16;per_request", 1000),
            };
            primary = simulator(plan(text), latency).await;
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, None, None)).into();
            started = Instant::now();
            records = closed_loop(&contender, n, 32, true, started).await;
        }
        "stream_stall" => {
            primary = simulator(plan("rate=0.2:stall@5:silent;seed=18;per_request"), latency).await;
            let contender = impatient(build, &setup(&primary, None, None));
            started = Instant::now();
            records = closed_loop(&contender, 1000, 32, true, started).await;
        }
        "stream_refused" => {
            primary = simulator(plan("rate=0.2:drop@20;seed=16;per_request"), latency).await;
            backup.set_plan(FaultPlan::always(Fault::refuse_prefill()));
            let mut setup = setup(&primary, Some(&backup), None);
            setup.primary_continues = false;
            let contender: Arc<dyn contender::Contender> = build(&setup).into();
            started = Instant::now();
            records = closed_loop(&contender, 1000, 32, true, started).await;
        }
        "silent_upstream" => {
            primary = simulator(FaultPlan::always(Fault::stall()), latency).await;
            let contender = impatient(build, &setup(&primary, Some(&backup), None));
            started = Instant::now();
            records = closed_loop(&contender, 200, 8, true, started).await;
        }
        "slow_first_token" => {
            primary = simulator(
                FaultPlan::always(Fault::slow_first_token(Duration::from_secs(20))),
                latency,
            )
            .await;
            let mut setup = setup(&primary, Some(&backup), None);
            setup.first_content_timeout = Some(Duration::from_secs(5));
            let contender = impatient(build, &setup);
            started = Instant::now();
            records = closed_loop(&contender, 200, 8, true, started).await;
        }
        "flapping" => {
            primary = simulator(FaultPlan::always(Fault::status(503)), latency).await;
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, Some(&backup), None)).into();
            started = Instant::now();
            let up = Arc::clone(&primary);
            records = paced(
                &contender,
                Duration::from_secs(4),
                40,
                started,
                vec![(
                    60,
                    Box::new(move || up.set_plan(FaultPlan::always(Fault::ok()))),
                )],
            )
            .await;
        }
        "slow_upstream" => {
            let latency: tower_llm_testkit::Delay = "100ms~1s".parse().expect("a delay");
            primary = Arc::new(
                Simulator::builder()
                    .reply(REPLY)
                    .latency(latency)
                    // Healthy, with each request's latencies drawn for the
                    // request (the same for every contender's attempts).
                    .plan(FaultPlan::random(17).per_request())
                    .seed(17)
                    .start()
                    .await
                    .expect("a simulator"),
            );
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, None, Some(Duration::from_millis(500)))).into();
            started = Instant::now();
            records = closed_loop(&contender, 2000, 32, false, started).await;
        }
        "retry_storm" => {
            primary = simulator(FaultPlan::always(Fault::status(503)), latency).await;
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, None, None)).into();
            started = Instant::now();
            records = open_loop(&contender, 100, 60, started, Vec::new()).await;
        }
        "metastability" => {
            let capacity = |slots| {
                Capacity::new(slots)
                    .service_time(Duration::from_millis(100))
                    .queue(64, Some(Duration::from_secs(2)))
            };
            primary = Arc::new(
                Simulator::builder()
                    .reply(REPLY)
                    .capacity(capacity(8))
                    .start()
                    .await
                    .expect("a simulator"),
            );
            let contender: Arc<dyn contender::Contender> =
                build(&setup(&primary, None, None)).into();
            started = Instant::now();
            let (drop, back) = (Arc::clone(&primary), Arc::clone(&primary));
            records = open_loop(
                &contender,
                64,
                60,
                started,
                vec![
                    (20, Box::new(move || drop.set_capacity(Some(capacity(4))))),
                    (30, Box::new(move || back.set_capacity(Some(capacity(8))))),
                ],
            )
            .await;
        }
        other => panic!("no scenario {other}"),
    }
    Run {
        records,
        primary: primary.requests(),
        backup: backup.requests(),
        started,
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let wall = std::time::Instant::now();
    let mut results: Vec<(&Scenario, Vec<(&str, Run)>)> = Vec::new();
    for scenario in &SCENARIOS {
        if !filter.is_empty() && !filter.iter().any(|f| scenario.name.contains(f.as_str())) {
            continue;
        }
        let mut runs = Vec::new();
        for (name, build) in CONTENDERS {
            let started = std::time::Instant::now();
            let result = runtime.block_on(run(scenario.name, build));
            eprintln!(
                "{:>18} {:<26} {} requests in {:.1} s wall",
                scenario.name,
                name,
                result.requests(),
                started.elapsed().as_secs_f64()
            );
            if std::env::var_os("CHAOS_DEBUG").is_some() {
                // Each contender's failures by status and cause, and when
                // the failed requests were sent.
                let mut causes = std::collections::BTreeMap::<String, (usize, Vec<u64>)>::new();
                for r in &result.records {
                    if let Outcome::Err { cause, status, .. } = &r.outcome {
                        let e = causes.entry(format!("{status:?} {cause:?}")).or_default();
                        e.0 += 1;
                        e.1.push(r.start.as_secs());
                    }
                }
                for (cause, (n, secs)) in causes {
                    let mut hist = std::collections::BTreeMap::<u64, usize>::new();
                    for s in secs {
                        *hist.entry(s).or_default() += 1;
                    }
                    eprintln!("   {name}: {n} x {cause} by start second {hist:?}");
                }
            }
            runs.push((name, result));
        }
        results.push((scenario, runs));
    }
    let command = std::iter::once("cargo bench -p tower-llm-bench --bench chaos".to_owned())
        .chain((!filter.is_empty()).then(|| format!("-- {}", filter.join(" "))))
        .collect::<Vec<_>>()
        .join(" ");
    let simulation = (filter.is_empty()
        || filter.iter().any(|f| "aws_backoff".contains(f.as_str())))
    .then(backoff::simulate);
    let extra = deployments::run_matching(&filter, &runtime)
        + &seeds::run_matching(&filter, &runtime)
        + &simulation.unwrap_or_default();
    report::write(
        &results,
        (!extra.is_empty()).then_some(extra.as_str()),
        &command,
        wall.elapsed(),
        filter.is_empty(),
    );
}
