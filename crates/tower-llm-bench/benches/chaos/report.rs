//! What the suite writes: a table per scenario on stdout and in
//! BENCHMARKS.md (with the date, the core count and the command), and the
//! outage scenario's timelines as SVG charts.

use std::fmt::Write as _;
use std::time::Duration;

use plotters::prelude::*;

use crate::contender::Outcome;
use crate::{Run, Scenario};

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// The records started in `[from, to)` seconds.
fn started_in(run: &Run, from: f64, to: f64) -> impl Iterator<Item = &crate::Record> {
    run.records.iter().filter(move |r| {
        let s = r.start.as_secs_f64();
        s >= from && s < to
    })
}

/// Upstream calls (both simulators) that arrived in `[from, to)`.
fn calls_in(run: &Run, from: f64, to: f64) -> usize {
    run.primary
        .iter()
        .chain(&run.backup)
        .filter(|r| {
            let at = run.at(r);
            at >= from && at < to
        })
        .count()
}

/// Per-second series over `seconds`: success rate (%) of the requests
/// started in each second, and upstream calls per second to the primary.
fn timeline(run: &Run, seconds: usize) -> (Vec<f64>, Vec<f64>) {
    let mut started = vec![0usize; seconds];
    let mut ok = vec![0usize; seconds];
    for r in &run.records {
        let s = r.start.as_secs() as usize;
        if s < seconds {
            started[s] += 1;
            if matches!(r.outcome, Outcome::Ok { .. }) {
                ok[s] += 1;
            }
        }
    }
    let mut primary = vec![0f64; seconds];
    for r in &run.primary {
        let s = run.at(r) as usize;
        if s < seconds {
            primary[s] += 1.0;
        }
    }
    let success = started
        .iter()
        .zip(&ok)
        .map(|(&n, &k)| {
            if n == 0 {
                100.0
            } else {
                100.0 * k as f64 / n as f64
            }
        })
        .collect();
    (success, primary)
}

/// What a simulator's recorded fault meant for a retrying client.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Healthy,
    /// Worth another attempt (overload, 5xx, reset, a stream cut before
    /// content); a rate limit carries its hinted wait.
    Retryable(Option<f64>),
    /// Never worth one (quota, other 4xx).
    Permanent,
    /// Content had reached the caller: a replay would duplicate it.
    AfterContent,
}

fn kind_of(request: &tower_llm_testkit::RecordedRequest) -> Kind {
    let Some(fault) = &request.fault else {
        // Shed by the capacity model (overload), or refused before the
        // plan (a malformed request).
        return if request.shed {
            Kind::Retryable(None)
        } else {
            Kind::Permanent
        };
    };
    let text = fault.to_string();
    let text = text.split('+').next().unwrap_or_default();
    let seconds = |hint: &str| {
        hint.strip_suffix("ms")
            .and_then(|ms| ms.parse::<f64>().ok().map(|v| v / 1000.0))
            .or_else(|| hint.strip_suffix('s').and_then(|s| s.parse().ok()))
    };
    match text {
        "ok" => Kind::Healthy,
        "quota" | "context_length" | "content_filter" | "unauthorized" | "not_found"
        | "invalid_request" => Kind::Permanent,
        "reset" | "close" | "overloaded" | "stall" | "drop@0" => Kind::Retryable(None),
        t if t.starts_with("rate_limited") => {
            Kind::Retryable(t.split('@').nth(1).and_then(seconds))
        }
        "429" => Kind::Retryable(Some(1.0)),
        t if t.starts_with("error@0") => Kind::Retryable(None),
        t if t.starts_with("drop@") || t.starts_with("error@") || t.starts_with("stall@") => {
            Kind::AfterContent
        }
        "truncate" => Kind::AfterContent,
        t => match t.parse::<u16>() {
            Ok(status) if status >= 500 => Kind::Retryable(None),
            _ => Kind::Permanent,
        },
    }
}

/// The number in a request body's `"request N"`.
fn request_id(body: &[u8]) -> Option<usize> {
    let at = body.windows(8).position(|w| w == b"request ")? + 8;
    let digits: String = body[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    digits.parse().ok()
}

/// Retries, from the upstream recordings grouped by request.
pub(crate) struct Accounting {
    /// Extra calls that replayed the request.
    retries: usize,
    /// Extra calls that asked for the rest of an answer broken after
    /// content (the request with the delivered text as a prefill): not a
    /// replay, so never counted as a wrong retry.
    continuations: usize,
    /// An attempt after a permanent failure.
    pub(crate) wrongly_retried: usize,
    /// An attempt sooner than the previous answer's `retry-after`.
    pub(crate) before_the_hint: usize,
    /// A failed request whose last attempt was worth another, with
    /// attempts to spare (3 in every contender).
    wrongly_not_retried: usize,
}

pub(crate) fn accounting(run: &Run) -> Accounting {
    let mut attempts: std::collections::HashMap<usize, Vec<(f64, Kind, bool)>> =
        std::collections::HashMap::new();
    for request in run.primary.iter().chain(&run.backup) {
        if let Some(id) = request_id(&request.body) {
            attempts.entry(id).or_default().push((
                run.at(request),
                kind_of(request),
                request.prefill.is_some(),
            ));
        }
    }
    let mut a = Accounting {
        retries: 0,
        continuations: 0,
        wrongly_retried: 0,
        before_the_hint: 0,
        wrongly_not_retried: 0,
    };
    for list in attempts.values_mut() {
        list.sort_by(|x, y| x.0.total_cmp(&y.0));
        let continued = list.iter().filter(|(_, _, prefill)| *prefill).count();
        a.continuations += continued;
        a.retries += list.len() - 1 - continued;
        for pair in list.windows(2) {
            if pair[1].2 {
                continue;
            }
            match pair[0].1 {
                Kind::Permanent | Kind::AfterContent => a.wrongly_retried += 1,
                Kind::Retryable(Some(hint)) if pair[1].0 - pair[0].0 < hint => {
                    a.before_the_hint += 1;
                }
                _ => {}
            }
        }
    }
    for record in &run.records {
        if let (Outcome::Err { .. }, Some(list)) = (&record.outcome, attempts.get(&record.id)) {
            let last = list.last().map(|(_, k, _)| *k);
            if list.len() < 3 && matches!(last, Some(Kind::Retryable(_))) {
                a.wrongly_not_retried += 1;
            }
        }
    }
    a
}

/// Contenders whose figures in a scenario are an artefact of the paused
/// clock, not their real behaviour (their breaker reads `std::time`).
fn clock_artefact(contender: &str, scenario: &str) -> bool {
    contender == "tower-resilience"
        && matches!(
            scenario,
            "outage" | "quota" | "retry_storm" | "metastability" | "flapping"
        )
}

/// The columns every scenario has, then its own.
fn row(scenario: &str, contender: &str, run: &Run) -> (Vec<String>, Vec<String>) {
    let n = run.requests().max(1);
    let success = 100.0 * run.succeeded() as f64 / n as f64;
    let amplification = run.upstream_calls() as f64 / n as f64;
    let took: Vec<Duration> = run.records.iter().map(|r| r.took).collect();
    let mark = if clock_artefact(contender, scenario) {
        " †"
    } else {
        ""
    };
    let a = accounting(run);
    let mut cells = vec![
        format!("{}", run.requests()),
        format!("{success:.2} %{mark}"),
        format!("{amplification:.2}"),
        secs(percentile(took.clone(), 0.5)),
        secs(percentile(took.clone(), 0.99)),
        secs(took.iter().copied().max().unwrap_or_default()),
        format!("{}", a.retries),
        format!("{}", a.wrongly_retried),
        format!("{}", a.before_the_hint),
        format!("{}", a.wrongly_not_retried),
    ];
    let mut heads = Vec::new();
    match scenario {
        "outage" => {
            // The primary is dead from 30 s to 60 s.
            let mut dead: Vec<f64> = run
                .primary
                .iter()
                .map(|r| run.at(r))
                .filter(|&at| (30.0..60.0).contains(&at))
                .collect();
            dead.sort_by(f64::total_cmp);
            let late = dead.iter().filter(|&&at| at >= 32.0).count();
            // It stopped at the last call before the first quiet second.
            let stopped = dead
                .windows(2)
                .find(|w| w[1] - w[0] >= 1.0)
                .map(|w| w[0])
                .or_else(|| dead.last().copied().filter(|&last| last < 59.0));
            let per_request = stopped.map_or("—".to_owned(), |from| {
                let requests = started_in(run, from, 60.0).count().max(1);
                let calls = run
                    .primary
                    .iter()
                    .filter(|r| (from..60.0).contains(&run.at(r)))
                    .count();
                format!("{:.3}", calls as f64 / requests as f64)
            });
            let during: Vec<&crate::Record> = started_in(run, 30.0, 60.0).collect();
            let during_ok = during
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Ok { .. }))
                .count();
            // Serving again: the primary takes ≥ 95 % of a second's requests.
            let back = (60..150).find(|&s| {
                let (from, to) = (f64::from(s), f64::from(s + 1));
                let requests = started_in(run, from, to).count().max(1);
                let calls = run
                    .primary
                    .iter()
                    .filter(|r| (from..to).contains(&run.at(r)))
                    .count();
                calls as f64 >= 0.95 * requests as f64
            });
            heads.extend(
                [
                    "success during outage",
                    "calls to the dead primary (after its first 2 s)",
                    "stopped calling it",
                    "primary calls per request once stopped",
                    "primary serving ≥ 95 % again",
                ]
                .map(str::to_owned),
            );
            cells.push(format!(
                "{:.1} %",
                100.0 * during_ok as f64 / during.len().max(1) as f64
            ));
            cells.push(format!("{} ({late})", dead.len()));
            cells.push(stopped.map_or("never".to_owned(), |t| format!("{:.2} s in", t - 30.0)));
            cells.push(per_request);
            cells.push(back.map_or("not within the run".to_owned(), |s| {
                format!("{} s after recovery", s - 60)
            }));
        }
        "metastability" => {
            // Goodput: answers per second, by the second they were sent.
            let offered = 64.0;
            let mut ok = [0usize; 60];
            for r in &run.records {
                if matches!(r.outcome, Outcome::Ok { .. }) {
                    ok[(r.start.as_secs() as usize).min(59)] += 1;
                }
            }
            let back = (30..60).find(|&s| ok[s..].iter().all(|&k| k as f64 >= 0.95 * offered));
            let starved = ok.iter().filter(|&&k| (k as f64) < 0.5 * offered).count();
            let requests = started_in(run, 20.0, 30.0).count().max(1);
            heads.extend(
                [
                    "goodput ≥ 95 % again after",
                    "seconds with goodput < 50 %",
                    "amplification during the drop",
                ]
                .map(str::to_owned),
            );
            cells.push(back.map_or("not within the run".to_owned(), |s| format!("{} s", s - 30)));
            cells.push(format!("{starved}"));
            cells.push(format!(
                "{:.2}",
                calls_in(run, 20.0, 30.0) as f64 / requests as f64
            ));
        }
        "silent_upstream" | "slow_first_token" => {
            let mut tried: std::collections::HashMap<usize, usize> =
                std::collections::HashMap::new();
            for request in &run.primary {
                if let Some(id) = request_id(&request.body) {
                    *tried.entry(id).or_default() += 1;
                }
            }
            let twice = tried.values().filter(|&&n| n > 1).count();
            let mut moved: Vec<usize> = run
                .backup
                .iter()
                .filter_map(|r| request_id(&r.body))
                .collect();
            moved.sort_unstable();
            moved.dedup();
            heads.extend(
                [
                    "calls to the primary",
                    "requests that tried the primary twice",
                    "served by the backup",
                ]
                .map(str::to_owned),
            );
            cells.push(format!("{}", run.primary.len()));
            cells.push(format!("{twice}"));
            cells.push(format!("{}", moved.len()));
        }
        "flapping" => {
            // The primary answers 503 until 60 s.
            let during: Vec<&crate::Record> = started_in(run, 0.0, 60.0).collect();
            let during_ok = during
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Ok { .. }))
                .count();
            let probes = run.primary.iter().filter(|r| run.at(r) < 60.0).count();
            let back = run
                .primary
                .iter()
                .map(|r| run.at(r))
                .filter(|&at| at >= 60.0)
                .fold(None, |first: Option<f64>, at| {
                    Some(first.map_or(at, |f| f.min(at)))
                });
            let after: Vec<&crate::Record> = started_in(run, 90.0, 160.0).collect();
            let on_primary = run.primary.iter().filter(|r| run.at(r) >= 90.0).count();
            heads.extend(
                [
                    "success during the outage",
                    "calls to the failing primary",
                    "back on the primary",
                    "primary calls per request from 90 s",
                ]
                .map(str::to_owned),
            );
            cells.push(format!(
                "{:.1} %",
                100.0 * during_ok as f64 / during.len().max(1) as f64
            ));
            cells.push(format!("{probes}"));
            cells.push(back.map_or("never".to_owned(), |t| {
                format!("{:.0} s after recovery", t - 60.0)
            }));
            cells.push(format!(
                "{:.2}",
                on_primary as f64 / after.len().max(1) as f64
            ));
        }
        s if s.starts_with("stream") => {
            let (duplicated, lost) = run.duplicated_and_lost();
            let cut = run
                .records
                .iter()
                .filter(
                    |r| matches!(&r.outcome, Outcome::Err { partial, .. } if !partial.is_empty()),
                )
                .count();
            heads.extend(
                [
                    "continued",
                    "duplicated content",
                    "lost content",
                    "failed after content (reported)",
                ]
                .map(str::to_owned),
            );
            cells.push(format!("{}", a.continuations));
            cells.push(format!("{duplicated}"));
            cells.push(format!("{lost}"));
            cells.push(format!("{cut}"));
            if scenario == "stream_refused" {
                heads.push("what the caller was told (most often)".to_owned());
                cells.push(most_common_cause(run));
            }
        }
        _ => {}
    }
    (heads, cells)
}

/// The failure text callers got most often, with how many got it.
fn most_common_cause(run: &Run) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for record in &run.records {
        if let Outcome::Err { cause, .. } = &record.outcome {
            *counts.entry(cause.as_deref().unwrap_or("—")).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or("—".to_owned(), |(cause, n)| {
            let short: String = cause.chars().take(48).collect();
            format!("{short} ({n})")
        })
}

fn date_today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn chart(
    path: &str,
    title: &str,
    y_label: &str,
    series: &[(&str, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let seconds = series.iter().map(|(_, s)| s.len()).max().unwrap_or(1);
    let top = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds (the primary is down from 30 s to 60 s)")
        .y_desc(y_label)
        .draw()?;
    for (i, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(i).mix(0.9);
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(s, v)| (s as f64 + 0.5, *v)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Prints the tables, writes BENCHMARKS.md and the outage charts.
pub(crate) fn write(
    results: &[(&Scenario, Vec<(&str, Run)>)],
    simulation: Option<&str>,
    command: &str,
    wall: Duration,
    complete: bool,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();
    let _ = writeln!(md, "## The run\n");
    let _ = writeln!(
        md,
        "Measured {} on a {cores}-core machine with `{command}` ({:.0} s wall). \
         Every contender meets the same seeded scenario against the testkit's simulated \
         providers over loopback, random faults drawn per request (the k-th arrival of a \
         request meets the same fault whichever contender sends it, so contenders that \
         make the same attempts meet the same faults); time is Tokio's paused clock, so latencies are virtual \
         (waiting, not CPU) and runs are reproducible. Amplification is upstream calls \
         (primary and backup) per client request. The harness is `crates/tower-llm-bench/benches/chaos/`.\n",
        date_today(),
        wall.as_secs_f64()
    );
    for (scenario, runs) in results {
        let _ = writeln!(
            md,
            "### {}\n\n{}.\n\nGoal: {}.\n",
            scenario.name, scenario.what, scenario.goal
        );
        let mut header = vec![
            "contender",
            "requests",
            "success",
            "amplification",
            "p50",
            "p99",
            "max",
            "retries",
            "wrongly retried",
            "retried before the hint",
            "wrongly not retried",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let mut lines = Vec::new();
        for (name, run) in runs {
            let (heads, cells) = row(scenario.name, name, run);
            if lines.is_empty() {
                header.extend(heads);
            }
            lines.push(format!("| {name} | {} |", cells.join(" | ")));
        }
        let _ = writeln!(md, "| {} |", header.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
        for line in &lines {
            let _ = writeln!(md, "{line}");
        }
        if runs
            .iter()
            .any(|(name, _)| clock_artefact(name, scenario.name))
        {
            let _ = writeln!(
                md,
                "
† tower-resilience's breaker and budget read `std::time::Instant`: under the                  paused clock an open breaker never reaches its half-open state within the run, so                  this row shows that, not its real behaviour."
            );
        }
        let _ = writeln!(md);
        if scenario.name == "outage" {
            let mut success = Vec::new();
            let mut calls = Vec::new();
            for (name, run) in runs {
                let (s, c) = timeline(run, 150);
                success.push((*name, s));
                calls.push((*name, c));
            }
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/chaos");
            let a = chart(
                &format!("{dir}/outage_success.svg"),
                "Outage: success rate of the requests sent each second",
                "success %",
                &success,
            );
            let b = chart(
                &format!("{dir}/outage_calls.svg"),
                "Outage: calls per second reaching the primary",
                "calls/s",
                &calls,
            );
            if let Err(e) = a.and(b) {
                eprintln!("charts not written: {e}");
            }
            let _ = writeln!(
                md,
                "![success rate over time](crates/tower-llm-bench/benches/chaos/outage_success.svg)\n\n\
                 ![calls to the primary over time](crates/tower-llm-bench/benches/chaos/outage_calls.svg)\n"
            );
        }
    }
    if let Some(simulation) = simulation {
        md.push_str(simulation);
        md.push('\n');
    }
    print!("{md}");
    if !complete {
        eprintln!("some scenarios only: BENCHMARKS.md left as it is");
        return;
    }
    // The run's tables go between the markers; what is around them (the
    // reading of the figures, the goals) is kept.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../BENCHMARKS.md");
    let (begin, end) = ("<!-- chaos:begin -->", "<!-- chaos:end -->");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{begin}\n{md}{}", &old[..b], &old[e..])
        }
        _ => format!("{begin}\n{md}{end}\n"),
    };
    if let Err(e) = std::fs::write(path, new) {
        eprintln!("BENCHMARKS.md not written: {e}");
    }
}
