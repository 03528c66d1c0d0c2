//! Plans decide each request's fault: scripts in order, random mixes from a
//! seed, and runtime switches.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};

async fn statuses(sim: &Simulator, n: usize) -> Vec<u16> {
    let client = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let status = match send(
            &client,
            sim,
            Api::OpenAiChat,
            &chat_body(Api::OpenAiChat, "m", false),
        )
        .await
        {
            Ok(answer) => answer.status.as_u16(),
            Err(_) => 0,
        };
        out.push(status);
    }
    out
}

#[tokio::test]
async fn a_script_gives_each_request_its_step_then_healthy() {
    let plan = FaultPlan::script([
        Fault::rate_limited(Duration::from_secs(2)),
        Fault::server_error(500),
        Fault::ok(),
    ]);
    let sim = Simulator::builder().plan(plan).start().await.unwrap();
    assert_eq!(statuses(&sim, 5).await, [429, 500, 200, 200, 200]);
    let faults: Vec<String> = sim
        .requests()
        .iter()
        .map(|r| r.fault.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(faults, ["rate_limited@2s", "500", "ok", "ok", "ok"]);
}

#[tokio::test]
async fn a_script_can_cycle_or_end_in_a_fault() {
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::server_error(503), Fault::ok()]).cycle())
        .start()
        .await
        .unwrap();
    assert_eq!(statuses(&sim, 5).await, [503, 200, 503, 200, 503]);
    sim.set_plan(FaultPlan::script([Fault::ok()]).then(Fault::overloaded()));
    assert_eq!(statuses(&sim, 3).await, [200, 503, 503]);
}

#[tokio::test]
async fn set_plan_switches_at_once_and_restarts_the_count() {
    let sim = Simulator::start().await.unwrap();
    assert_eq!(statuses(&sim, 2).await, [200, 200]);
    // The outage starts ...
    sim.set_plan(Fault::server_error(503));
    assert_eq!(statuses(&sim, 2).await, [503, 503]);
    // ... and ends.
    sim.set_plan(FaultPlan::script([Fault::server_error(500)]));
    assert_eq!(
        statuses(&sim, 2).await,
        [500, 200],
        "the new script starts at its first step"
    );
}

#[tokio::test]
async fn a_seeded_mix_gives_the_same_faults_every_run() {
    async fn run(seed: u64) -> Vec<u16> {
        let plan = FaultPlan::random(seed)
            .with(0.3, Fault::server_error(503))
            .with(0.2, Fault::reset());
        let sim = Simulator::builder().plan(plan).start().await.unwrap();
        statuses(&sim, 40).await
    }
    let first = run(11).await;
    assert_eq!(first, run(11).await);
    assert_ne!(first, run(12).await);
    assert!(
        first.contains(&503) && first.contains(&0) && first.contains(&200),
        "{first:?}"
    );
}

/// Sends each of six requests twice, in two orders (all in turn, then each
/// one's arrivals together, backwards), each order to a fresh simulator
/// with `plan` and `latency`; what each arrival of each request saw.
async fn per_request_runs(
    plan: &FaultPlan,
    latency: tower_llm_testkit::Delay,
) -> [std::collections::BTreeMap<String, Vec<(u16, Duration)>>; 2] {
    let models: Vec<String> = (0..6).map(|i| format!("model-{i}")).collect();
    let in_turn: Vec<&String> = models.iter().chain(&models).collect();
    let grouped: Vec<&String> = models.iter().rev().flat_map(|m| [m, m]).collect();
    let mut runs = [Default::default(), Default::default()];
    for (order, seen) in [in_turn, grouped].into_iter().zip(&mut runs) {
        let sim = Simulator::builder()
            .plan(plan.clone())
            .latency(latency)
            .start()
            .await
            .unwrap();
        let client = client();
        for model in order {
            let body = chat_body(Api::OpenAiChat, model, false);
            let started = tokio::time::Instant::now();
            let status = send(&client, &sim, Api::OpenAiChat, &body)
                .await
                .unwrap()
                .status;
            let seen: &mut std::collections::BTreeMap<_, Vec<_>> = seen;
            seen.entry(model.clone())
                .or_default()
                .push((status.as_u16(), started.elapsed()));
        }
    }
    runs
}

#[tokio::test(start_paused = true)]
async fn a_mix_drawn_per_request_gives_each_request_its_faults_whatever_the_arrival_order() {
    let plan = FaultPlan::random(5)
        .with(0.5, Fault::server_error(503))
        .per_request();
    let [first, second] = per_request_runs(&plan, tower_llm_testkit::Delay::ZERO).await;
    assert_eq!(
        first, second,
        "the k-th arrival of a body meets the same fault"
    );
    let statuses: Vec<u16> = first.values().flatten().map(|(s, _)| *s).collect();
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn under_a_plan_drawn_per_request_each_request_meets_its_own_latencies_whatever_the_order() {
    let plan = FaultPlan::random(9).per_request();
    let [first, second] = per_request_runs(&plan, "20ms~2s".parse().unwrap()).await;
    assert_eq!(first, second, "the k-th arrival of a body waits the same");
    let waits: Vec<Duration> = first.values().flatten().map(|(_, d)| *d).collect();
    assert!(
        waits.iter().any(|d| *d != waits[0]),
        "the latencies vary: {waits:?}"
    );
}

#[test]
fn a_mix_draws_each_fault_at_its_rate() {
    let plan: FaultPlan = "rate=0.2:503,0.05:reset,0.02:429".parse().unwrap();
    let mut counts = std::collections::HashMap::new();
    let n = 100_000;
    for i in 0..n {
        *counts.entry(plan.fault_for(i).to_string()).or_insert(0u64) += 1;
    }
    let share = |label: &str| counts.get(label).copied().unwrap_or(0) as f64 / n as f64;
    assert!((share("503") - 0.20).abs() < 0.006, "{counts:?}");
    assert!((share("reset") - 0.05).abs() < 0.003, "{counts:?}");
    assert!(
        (share("rate_limited@1s") - 0.02).abs() < 0.002,
        "{counts:?}"
    );
    assert!((share("ok") - 0.73).abs() < 0.006, "{counts:?}");
}

#[test]
fn probabilities_beyond_one_are_clamped_in_code_and_refused_in_text() {
    let plan = FaultPlan::random(0)
        .with(0.8, Fault::server_error(503))
        .with(0.5, Fault::reset())
        .with(f64::NAN, Fault::close());
    assert_eq!(plan.to_string(), "rate=0.8:503,0.2:reset,0:close");
    let error = "rate=0.8:503,0.5:reset".parse::<FaultPlan>().unwrap_err();
    assert!(error.to_string().contains("more than 1"), "{error}");
}

#[test]
fn every_fault_prints_in_the_syntax_it_parses_from() {
    let texts = [
        "ok",
        "503",
        "500",
        "502",
        "504",
        "overloaded",
        "rate_limited",
        "rate_limited@2s",
        "rate_limited_ms@1.5s",
        "rate_limited_date@30s",
        "rate_limited_reset@6m",
        "quota",
        "context_length",
        "content_filter",
        "unauthorized",
        "not_found",
        "invalid_request",
        "418",
        "stall",
        "reset",
        "close",
        "error@0",
        "error@3:500",
        "error@1:rate_limited@2s",
        "drop@0",
        "drop@20",
        "stall@1",
        "truncate",
        "ok+tokens=20ms",
        "ok+latency=50ms~500ms",
        "503+latency=10ms..30ms",
        "drop@3+latency=1s+tokens=5ms",
        "stall@3:silent",
        "stall@0:silent+latency=1s",
        "ok+first=20s",
        "drop@40+tokens=10ms+first=2s",
        "ok+prefill=refuse",
        "ok+prefill=ignore",
        "drop@2+prefill=continue",
    ];
    for text in texts {
        let fault: Fault = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(fault.to_string(), text);
        let again: Fault = fault.to_string().parse().unwrap();
        assert_eq!(again, fault, "{text}");
    }
    for (alias, canonical) in [
        ("429", "rate_limited@1s"),
        ("529", "overloaded"),
        ("401", "unauthorized"),
        ("404", "not_found"),
        ("400", "invalid_request"),
        ("refuse_prefill", "ok+prefill=refuse"),
    ] {
        assert_eq!(alias.parse::<Fault>().unwrap().to_string(), canonical);
    }
}

#[test]
fn every_plan_form_round_trips() {
    for text in [
        "ok",
        "503",
        "script=rate_limited@1s,ok,503",
        "script=reset;then=503",
        "cycle=503,ok",
        "rate=0.2:503,0.05:reset",
        "rate=0.1:drop@2;then=ok+latency=20ms;seed=42",
        "rate=0.2:503;seed=3;per_request",
        // An empty mix: every request healthy, drawn per request (the
        // latencies of `slow_upstream`'s plan, say).
        "rate=;seed=17;per_request",
        "script=drop@40;then=ok+prefill=refuse",
    ] {
        let plan: FaultPlan = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(plan.to_string(), text);
        assert_eq!(plan.to_string().parse::<FaultPlan>().unwrap(), plan);
    }
    assert_eq!(
        "always=503".parse::<FaultPlan>().unwrap(),
        FaultPlan::always(Fault::server_error(503))
    );
}

#[test]
fn bad_plans_say_what_is_wrong() {
    let cases = [
        ("teapot", "unknown fault"),
        ("drop", "needs @n"),
        ("drop@x", "not a number"),
        ("reset@2", "takes no @argument"),
        ("rate=0.2", "not probability:fault"),
        ("rate=1.5:503", "between 0 and 1"),
        ("rate=0.2:503;seed=-1", "unsigned"),
        ("503;seed=1", "only applies"),
        ("cycle=503;then=ok", "never ends"),
        ("503;then=ok", "applies to script"),
        ("script=503;frob=1", "unknown option"),
        ("ok+latency=fast", "not a duration"),
        ("ok+speed=1s", "unknown modifier"),
        ("rate_limited@soon", "not a duration"),
        ("200", "not an error status"),
        ("error@1:teapot", "unknown fault"),
        ("error@1:reset", "not a provider error"),
        ("stall@x:silent", "not a number"),
        ("ok+first=soon", "not a duration"),
        ("ok+prefill=maybe", "unknown prefill mode"),
    ];
    for (text, reason) in cases {
        let error = text.parse::<FaultPlan>().unwrap_err();
        assert!(error.to_string().contains(reason), "{text}: {error}");
        assert!(
            error.to_string().contains(text),
            "the error names the input: {error}"
        );
    }
}
