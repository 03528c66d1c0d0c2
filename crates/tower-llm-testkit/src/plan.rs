//! Which fault each request gets: always the same, a script, or a seeded
//! random mix.

use std::fmt;
use std::sync::Arc;

use crate::delay::{key, unit};
use crate::fault::Fault;

/// Decides the [`Fault`] of each request that reaches an API route.
///
/// Requests are numbered from 0 in the order the simulator reads them, from
/// the moment the plan is installed ([`Simulator::set_plan`] restarts the
/// count). A script gives request `n` its `n`-th step; a random mix draws
/// request `n`'s fault from a pure function of the seed and `n`, so the same
/// seed gives the same sequence.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_testkit::{Fault, FaultPlan};
///
/// // Request 0 is rate limited, request 1 succeeds, and so does every later one.
/// let script = FaultPlan::script([Fault::rate_limited(Duration::from_secs(2)), Fault::ok()]);
/// assert_eq!(script.fault_for(0).to_string(), "rate_limited@2s");
/// assert!(script.fault_for(5).is_healthy());
///
/// // 20 % 503, 5 % connection reset, the rest healthy; the same text the
/// // `llm-sim` binary takes.
/// let mix: FaultPlan = "rate=0.2:503,0.05:reset".parse().unwrap();
/// let again = FaultPlan::random(0).with(0.2, Fault::server_error(503)).with(0.05, Fault::reset());
/// assert_eq!(mix, again);
/// ```
///
/// [`Simulator::set_plan`]: crate::Simulator::set_plan
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan(Arc<Kind>);

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Always(Fault),
    Script {
        steps: Vec<Fault>,
        then: Fault,
        cycle: bool,
    },
    Random {
        seed: u64,
        entries: Vec<(f64, Fault)>,
        otherwise: Fault,
        /// Draw by the request's body and how many times it came, not by
        /// arrival order ([`FaultPlan::per_request`]).
        per_request: bool,
    },
}

/// Draws of the plan use their own stream of random numbers, apart from
/// latency draws.
const PLAN_PURPOSE: u64 = 0x706C_616E;

/// The draw index of a request keyed by its body has its own stream too.
const REQUEST_PURPOSE: u64 = 0x7265_7175;

impl FaultPlan {
    /// Every request is answered healthily.
    pub fn healthy() -> Self {
        FaultPlan::always(Fault::ok())
    }

    /// Every request gets `fault` (an outage, when it is an error).
    pub fn always(fault: Fault) -> Self {
        FaultPlan(Arc::new(Kind::Always(fault)))
    }

    /// Request `n` gets the `n`-th fault; requests after the script are
    /// healthy unless [`then`](Self::then) or [`cycle`](Self::cycle) says otherwise.
    pub fn script(steps: impl IntoIterator<Item = Fault>) -> Self {
        FaultPlan(Arc::new(Kind::Script {
            steps: steps.into_iter().collect(),
            then: Fault::ok(),
            cycle: false,
        }))
    }

    /// A seeded random mix; add faults with [`with`](Self::with). Requests
    /// that draw none of them are healthy.
    pub fn random(seed: u64) -> Self {
        FaultPlan(Arc::new(Kind::Random {
            seed,
            entries: Vec::new(),
            otherwise: Fault::ok(),
            per_request: false,
        }))
    }

    /// For a random mix: `fault` with probability `p`. Probabilities are
    /// clamped so that the mix never adds up to more than 1 (a NaN counts
    /// as 0). For other plans this does nothing.
    pub fn with(mut self, p: f64, fault: Fault) -> Self {
        if let Kind::Random { entries, .. } = Arc::make_mut(&mut self.0) {
            let used = entries.last().map_or(0.0, |(cumulative, _)| *cumulative);
            let p = if p.is_nan() {
                0.0
            } else {
                p.clamp(0.0, 1.0 - used)
            };
            entries.push((used + p, fault));
        }
        self
    }

    /// What a script gives after its last step, or a random mix when no
    /// fault is drawn (healthy by default). For `always`, replaces the fault.
    pub fn then(mut self, fault: Fault) -> Self {
        match Arc::make_mut(&mut self.0) {
            Kind::Always(f) => *f = fault,
            Kind::Script { then, .. } => *then = fault,
            Kind::Random { otherwise, .. } => *otherwise = fault,
        }
        self
    }

    /// For a script: start over after the last step.
    pub fn cycle(mut self) -> Self {
        if let Kind::Script { cycle, .. } = Arc::make_mut(&mut self.0) {
            *cycle = true;
        }
        self
    }

    /// For a random mix: use `seed` instead.
    pub fn with_seed(mut self, new_seed: u64) -> Self {
        if let Kind::Random { seed, .. } = Arc::make_mut(&mut self.0) {
            *seed = new_seed;
        }
        self
    }

    /// For a random mix: draw each request's fault from its body and how
    /// many times that body has come, instead of from the order in which
    /// requests arrive. The `k`-th arrival of the same body gets the fault
    /// drawn for (body, `k`) — see [`fault_for_request`](Self::fault_for_request).
    ///
    /// This is the method of *common random numbers* for comparing
    /// systems: two clients that send the same requests, each the same
    /// number of times, meet exactly the same faults whatever the order in
    /// which their attempts interleave, so a difference between their
    /// results is a difference in what they do, not in what they drew.
    /// Under arrival order, one client's extra or earlier retry shifts
    /// every later request's draw. The simulator draws the request's
    /// latencies (its own, the fault's, a capacity's service time, a first
    /// token's wait, a stream's pacing) the same way while such a plan is
    /// installed; a random mix with no faults, drawn per request, is a
    /// healthy provider whose latencies are common to the clients compared.
    /// Written `;per_request` in the text form. Only sensible when the requests of a run differ (each carries its
    /// own id, say): identical bodies share one sequence of draws.
    pub fn per_request(mut self) -> Self {
        if let Kind::Random { per_request, .. } = Arc::make_mut(&mut self.0) {
            *per_request = true;
        }
        self
    }

    /// Whether faults are drawn per request body ([`per_request`](Self::per_request)).
    pub fn is_per_request(&self) -> bool {
        matches!(
            &*self.0,
            Kind::Random {
                per_request: true,
                ..
            }
        )
    }

    /// The fault of the `k`-th arrival (from 0) of a request whose body is
    /// `body`, for a plan drawn [`per_request`](Self::per_request). A plan
    /// drawn by arrival order answers with its fault for index `k`.
    ///
    /// ```
    /// use tower_llm_testkit::{Fault, FaultPlan};
    ///
    /// let plan = FaultPlan::random(7).with(0.5, Fault::server_error(503)).per_request();
    /// // The same request and arrival always meet the same fault...
    /// let first = plan.fault_for_request(b"request 1", 0).clone();
    /// assert_eq!(plan.fault_for_request(b"request 1", 0), &first);
    /// // ...and over many requests about half of first arrivals fail.
    /// let failed = (0..1000)
    ///     .filter(|i| !plan.fault_for_request(format!("request {i}").as_bytes(), 0).is_healthy())
    ///     .count();
    /// assert!((400..600).contains(&failed), "{failed}");
    /// ```
    pub fn fault_for_request(&self, body: &[u8], k: u64) -> &Fault {
        self.draw_for_request(body, k).0
    }

    /// [`fault_for_request`](Self::fault_for_request), with the key the
    /// request's other draws take (its latencies and pacing).
    pub(crate) fn draw_for_request(&self, body: &[u8], k: u64) -> (&Fault, u64) {
        match &*self.0 {
            Kind::Random {
                per_request: true, ..
            } => {
                let draw = key(fnv1a(body), k, REQUEST_PURPOSE);
                (self.fault_for(draw), draw)
            }
            _ => (self.fault_for(k), k),
        }
    }

    /// The seed of a random mix (`None` for other plans).
    pub fn seed(&self) -> Option<u64> {
        match &*self.0 {
            Kind::Random { seed, .. } => Some(*seed),
            _ => None,
        }
    }

    /// The fault of request `n` (counted from 0 since the plan was installed).
    pub fn fault_for(&self, n: u64) -> &Fault {
        match &*self.0 {
            Kind::Always(fault) => fault,
            Kind::Script { steps, then, cycle } => {
                let len = steps.len() as u64;
                match (n < len, *cycle && len > 0) {
                    (true, _) => &steps[n as usize],
                    (false, true) => &steps[(n % len) as usize],
                    (false, false) => then,
                }
            }
            Kind::Random {
                seed,
                entries,
                otherwise,
                ..
            } => {
                let u = unit(key(*seed, n, PLAN_PURPOSE));
                entries
                    .iter()
                    .find(|(cumulative, _)| u < *cumulative)
                    .map_or(otherwise, |(_, fault)| fault)
            }
        }
    }
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::healthy()
    }
}

impl From<Fault> for FaultPlan {
    fn from(fault: Fault) -> Self {
        FaultPlan::always(fault)
    }
}

impl fmt::Display for FaultPlan {
    /// The plan in the syntax [`FromStr`](std::str::FromStr) parses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Kind::Always(fault) => write!(f, "{fault}"),
            Kind::Script { steps, then, cycle } => {
                f.write_str(if *cycle { "cycle=" } else { "script=" })?;
                write_list(f, steps.iter())?;
                if !*cycle && *then != Fault::ok() {
                    write!(f, ";then={then}")?;
                }
                Ok(())
            }
            Kind::Random {
                seed,
                entries,
                otherwise,
                per_request,
            } => {
                f.write_str("rate=")?;
                let mut used = 0.0;
                for (i, (cumulative, fault)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{fault}", round_probability(cumulative - used))?;
                    used = *cumulative;
                }
                if *otherwise != Fault::ok() {
                    write!(f, ";then={otherwise}")?;
                }
                if *seed != 0 {
                    write!(f, ";seed={seed}")?;
                }
                if *per_request {
                    f.write_str(";per_request")?;
                }
                Ok(())
            }
        }
    }
}

fn write_list<'a>(
    f: &mut fmt::Formatter<'_>,
    faults: impl Iterator<Item = &'a Fault>,
) -> fmt::Result {
    for (i, fault) in faults.enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{fault}")?;
    }
    Ok(())
}

/// FNV-1a over `bytes`: a hash of a request body that stays the same
/// across runs, platforms and toolchains (std's `DefaultHasher` may change).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Probabilities print with at most 6 decimals (cumulative sums drift).
fn round_probability(p: f64) -> f64 {
    (p * 1e6).round() / 1e6
}
