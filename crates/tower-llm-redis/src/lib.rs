//! Several gateway replicas, one view of the providers: circuit decisions
//! shared through Redis.
//!
//! A fleet of replicas behind a load balancer learns alone without it: a
//! 429 with `retry-after: 30` stops one replica while the others keep
//! hitting the limit, and an outage one replica found is found again by
//! each of the others. [`SharedState`] shares *decisions* — a key opened
//! until an instant, a key cooling down until an instant, a key closed
//! again — not call-by-call counts:
//!
//! - each replica writes its own decisions (`SET prefix:open:KEY until PX
//!   ttl` unless a longer one is stored, so a replica that starts later
//!   loads what holds now, and `PUBLISH prefix:decisions …`, so running
//!   replicas hear it at once);
//! - and applies the others' to its breakers, never shortening a longer
//!   local state, without telling them back as its own (no ping-pong);
//! - a key another replica opened stays open here a little longer
//!   ([`SharedStateBuilder::probe_grace`], 1 s by default), so when the
//!   interval ends the replica that opened it probes alone and its outcome
//!   decides for the fleet: one probe per open interval, not one per
//!   replica;
//! - and, every 250 ms ([`SharedStateBuilder::share_pacing_every`]), the
//!   pacing views that run low (a tenth or less of the most seen left, or
//!   nothing) and changed — what a key's answers said it has left
//!   (requests, tokens) and when it is full again — which the others apply
//!   without loosening their own (`SET prefix:pace:KEY` and the same
//!   channel).
//!
//! Instants cross as wall-clock milliseconds since the epoch; each replica
//! turns them into its own monotonic `Instant` (keep the hosts' clocks in
//! sync with NTP: a skew of `s` moves every shared deadline by `s`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_llm_circuit::{CircuitConfig, CircuitLayer};
//! use tower_llm_redis::{SharedState, SharedStatus};
//!
//! let circuit = CircuitLayer::new(CircuitConfig::standard());
//! // Usually from an environment variable; nothing listens on port 1 here.
//! let shared = SharedState::connect("redis://127.0.0.1:1/", "gateway")?;
//! shared.attach_layer(&circuit)?;
//! // Redis unreachable: the circuit works on its own decisions, and says so.
//! assert_ne!(shared.status(), SharedStatus::Connected);
//! # Ok(())
//! # }
//! ```
//!
//! # Why decisions and not counts
//!
//! Counting every call in Redis puts a round trip on every call and makes
//! Redis a dependency of the request path. A decision is taken rarely (a
//! breaker opens, a 429 says when to come back), so a healthy call sends
//! nothing at all, and a dead Redis costs a replica only what the others
//! would have told it. LiteLLM's router shares cooldowns the same way
//! (`litellm/router_utils/cooldown_cache.py`: a key with a TTL per
//! deployment in cooldown).
//!
//! # Redis down
//!
//! Writes go through a bounded queue to a background task (a full queue
//! drops the decision and counts it, [`SharedStats::dropped`]); a connect
//! or command that takes longer than the timeout (250 ms by default) marks
//! the state [`SharedStatus::Degraded`], logged once per outage at warn.
//! The replica reconnects (backoff from 50 ms to 500 ms), subscribes, loads
//! what is stored under the prefix (`SCAN` and `MGET`), and writes again
//! the decisions of its own that still hold (what it decided meanwhile
//! was lost). A Redis that was only slow, its connections kept, is
//! noticed by the writer, which after a failed write tries again every
//! 500 ms with those same decisions.

#![forbid(unsafe_code)]

mod error;
mod pacing;
mod publisher;
mod state;
mod status;
mod subscriber;
mod wire;

pub use error::SharedStateError;
pub use state::{SharedState, SharedStateBuilder};
pub use status::{SharedStats, SharedStatus};

/// The tracing target of every event of this crate.
pub const TRACING_TARGET: &str = "tower_llm::redis";
