//! The random-failure scenarios under several fault seeds: `transient`
//! and `rate_limit` fail calls at random. Their plans are drawn per request
//! (the same faults for the same attempts, whoever sends them), so within
//! one seed contenders differ only by what they do; ten seeds of each plan,
//! every contender under each, show how far that holds across fault
//! sequences (reqwest-retry's jitter is not seeded at all, so its timing
//! still moves between runs).

use std::cell::Cell;

use crate::report::accounting;
use crate::{CONTENDERS, Run, run};

/// How many seeds each scenario is run under.
const SEEDS: u64 = 10;
const SCENARIOS: [&str; 2] = ["transient", "rate_limit"];

thread_local! {
    static SHIFT: Cell<u64> = const { Cell::new(0) };
}

/// What is added to a random-failure scenario's fault seed (0 for the
/// main tables).
pub(crate) fn shift() -> u64 {
    SHIFT.with(Cell::get)
}

/// One contender's runs of one scenario.
#[derive(Default)]
struct Tally {
    success: Vec<f64>,
    amplification: Vec<f64>,
    before_the_hint: usize,
    wrongly_retried: usize,
}

impl Tally {
    fn add(&mut self, run: &Run) {
        let n = run.requests().max(1) as f64;
        self.success.push(100.0 * run.succeeded() as f64 / n);
        self.amplification.push(run.upstream_calls() as f64 / n);
        let a = accounting(run);
        self.before_the_hint += a.before_the_hint;
        self.wrongly_retried += a.wrongly_retried;
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

/// Runs every scenario of [`SCENARIOS`] under [`SEEDS`] seeds when
/// `filter` names "seeds" or is empty: the table as markdown (printed by
/// the caller with the rest).
pub(crate) fn run_matching(filter: &[String], runtime: &tokio::runtime::Runtime) -> String {
    if !filter.is_empty() && !filter.iter().any(|f| "seeds".contains(f.as_str())) {
        return String::new();
    }
    let mut md = format!(
        "\n### transient and rate_limit under {SEEDS} seeds\n\n\
         Each scenario's fault plan under {SEEDS} seeds (the main tables' seed and the next \
         {}), every contender under each; success and amplification are the mean over the \
         runs, with the lowest and highest run. Faults are drawn per request, so within a \
         seed contenders that make the same attempts meet the same faults and differ only \
         by what they do (when and whether they retry).\n\n\
         | scenario | contender | success, mean | lowest – highest | amplification, mean | \
         wins (seeds where its success is the highest, ties shared) | retried before the hint, all runs | wrongly retried, all runs |\n\
         |---|---|---|---|---|---|---|---|\n",
        SEEDS - 1
    );
    for scenario in SCENARIOS {
        let mut tallies: Vec<Tally> = CONTENDERS.iter().map(|_| Tally::default()).collect();
        let mut wins = vec![0.0_f64; CONTENDERS.len()];
        let wall = std::time::Instant::now();
        for shift in 0..SEEDS {
            SHIFT.with(|s| s.set(shift));
            let mut best: (f64, Vec<usize>) = (f64::MIN, Vec::new());
            for (i, (_, build)) in CONTENDERS.iter().enumerate() {
                let result = runtime.block_on(run(scenario, *build));
                tallies[i].add(&result);
                let success = *tallies[i].success.last().unwrap_or(&0.0);
                if std::env::var_os("CHAOS_DEBUG").is_some() {
                    let mut causes = std::collections::BTreeMap::<String, usize>::new();
                    for r in &result.records {
                        if let crate::Outcome::Err { cause, status, .. } = &r.outcome {
                            *causes.entry(format!("{status:?} {cause:?}")).or_default() += 1;
                        }
                    }
                    eprintln!(
                        "   {scenario} seed +{shift} {}: {success:.2} % {causes:?}",
                        CONTENDERS[i].0
                    );
                }
                if success > best.0 {
                    best = (success, vec![i]);
                } else if success == best.0 {
                    best.1.push(i);
                }
            }
            for i in &best.1 {
                wins[*i] += 1.0 / best.1.len() as f64;
            }
        }
        SHIFT.with(|s| s.set(0));
        eprintln!(
            "{scenario:>18} under {SEEDS} seeds: {:.1} s wall",
            wall.elapsed().as_secs_f64()
        );
        for (i, (name, _)) in CONTENDERS.iter().enumerate() {
            let t = &tallies[i];
            let (lo, hi) = spread(&t.success);
            md.push_str(&format!(
                "| {scenario} | {name} | {:.2} % | {lo:.2} – {hi:.2} % | {:.2} | {:.1} | {} | {} |\n",
                mean(&t.success),
                mean(&t.amplification),
                wins[i],
                t.before_the_hint,
                t.wrongly_retried,
            ));
        }
    }
    println!("{md}");
    md
}
