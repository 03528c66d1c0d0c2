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

/// The columns every scenario has, then its own.
fn row(scenario: &str, run: &Run) -> (Vec<String>, Vec<String>) {
    let n = run.requests().max(1);
    let success = 100.0 * run.succeeded() as f64 / n as f64;
    let amplification = run.upstream_calls() as f64 / n as f64;
    let took: Vec<Duration> = run.records.iter().map(|r| r.took).collect();
    let mut cells = vec![
        format!("{}", run.requests()),
        format!("{success:.2} %"),
        format!("{amplification:.2}"),
        secs(percentile(took.clone(), 0.5)),
        secs(percentile(took.clone(), 0.99)),
        secs(took.iter().copied().max().unwrap_or_default()),
    ];
    let mut heads = Vec::new();
    match scenario {
        "quota" => {
            heads.push("wasted retries".to_owned());
            cells.push(format!(
                "{}",
                run.upstream_calls().saturating_sub(run.requests())
            ));
        }
        "outage" => {
            // The primary is dead from 30 s to 60 s.
            let dead: Vec<f64> = run
                .primary
                .iter()
                .map(|r| run.at(r))
                .filter(|&at| (30.0..60.0).contains(&at))
                .collect();
            // The first second from which the dead primary saw at most
            // 10 % of the offered 50 req/s (probes) for the rest of the
            // outage.
            let mut per_second = [0usize; 30];
            for at in &dead {
                per_second[((*at - 30.0) as usize).min(29)] += 1;
            }
            let stopped = (0..30).find(|&s| per_second[s..].iter().all(|&c| c <= 5));
            let after = stopped.map_or(60.0, |s| 30.0 + s as f64);
            let amp_open = if after < 60.0 {
                let requests = started_in(run, after, 60.0).count().max(1);
                format!("{:.2}", calls_in(run, after, 60.0) as f64 / requests as f64)
            } else {
                "—".to_owned()
            };
            let during: Vec<&crate::Record> = started_in(run, 30.0, 60.0).collect();
            let during_ok = during
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Ok { .. }))
                .count();
            let back = run
                .primary
                .iter()
                .map(|r| run.at(r))
                .filter(|&at| at >= 60.0)
                .fold(f64::INFINITY, f64::min);
            heads.extend(
                [
                    "success during outage",
                    "calls to the dead primary",
                    "stopped calling it after",
                    "amplification once stopped",
                    "primary called again after recovery",
                ]
                .map(str::to_owned),
            );
            cells.push(format!(
                "{:.1} %",
                100.0 * during_ok as f64 / during.len().max(1) as f64
            ));
            cells.push(format!("{}", dead.len()));
            cells.push(stopped.map_or("never".to_owned(), |s| format!("{s} s")));
            cells.push(amp_open);
            cells.push(if back.is_finite() {
                format!("{:.2} s", back - 60.0)
            } else {
                "never".to_owned()
            });
        }
        "retry_storm" => {
            let extra = run.upstream_calls().saturating_sub(run.requests());
            heads.push("extra calls (of requests)".to_owned());
            cells.push(format!(
                "{extra} ({:.1} %)",
                100.0 * extra as f64 / n as f64
            ));
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
            let requests = started_in(run, 20.0, 30.0).count().max(1);
            heads.extend(
                [
                    "goodput ≥ 95 % again after",
                    "amplification during the drop",
                ]
                .map(str::to_owned),
            );
            cells.push(back.map_or("not within the run".to_owned(), |s| format!("{} s", s - 30)));
            cells.push(format!(
                "{:.2}",
                calls_in(run, 20.0, 30.0) as f64 / requests as f64
            ));
        }
        s if s.starts_with("stream") => {
            let (duplicated, lost) = run.duplicated_and_lost();
            heads.extend(["duplicated content", "lost content"].map(str::to_owned));
            cells.push(format!("{duplicated}"));
            cells.push(format!("{lost}"));
        }
        _ => {}
    }
    (heads, cells)
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
         providers over loopback; time is Tokio's paused clock, so latencies are virtual \
         (waiting, not CPU) and runs are reproducible. Amplification is upstream calls \
         (primary and backup) per client request. The harness is `benches/chaos/`.\n",
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
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let mut lines = Vec::new();
        for (name, run) in runs {
            let (heads, cells) = row(scenario.name, run);
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
                "![success rate over time](benches/chaos/outage_success.svg)\n\n\
                 ![calls to the primary over time](benches/chaos/outage_calls.svg)\n"
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
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
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
