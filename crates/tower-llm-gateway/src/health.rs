//! `/health`: whether the gateway's targets are healthy, and the details
//! of every breaker and target for a caller allowed to see them; and the
//! two probes an orchestrator understands, `/health/live` (the process
//! serves) and `/health/ready` (every route has a target that can take
//! traffic).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;
use tower_llm::circuit::{CircuitState, KeySnapshot};

use crate::limits::Caller;
use crate::router::Gateway;

/// `/health`: open to anyone as a liveness check (`status` alone, so a load
/// balancer needs no key); the details (circuits by target and model,
/// requests in flight, how many caller keys) only when no keys are set or
/// the caller sent one.
pub(crate) async fn health(State(gateway): State<Gateway>, request: Request) -> Response {
    let details = gateway.caller_keys.is_none() || request.extensions().get::<Caller>().is_some();
    let snapshot = gateway.stack.circuits().snapshot();
    let degraded = snapshot.iter().any(|k| {
        matches!(
            k.state,
            CircuitState::Open | CircuitState::ForcedOpen | CircuitState::HalfOpen
        ) || k.cooldown_remaining.is_some()
    });
    let status = if degraded { "degraded" } else { "ok" };
    if !details {
        return json_response(json!({ "status": status, "auth": { "required": true } }));
    }
    let circuits: Vec<_> = snapshot
        .into_iter()
        .map(|key| {
            json!({
                "key": &*key.key,
                "state": key.state.as_str(),
                "calls": key.totals.calls,
                "failures": key.totals.failures,
                "failure_rate": key.totals.failure_rate(),
                "slow": key.totals.slow,
                "consecutive_failures": key.consecutive_failures,
                "rejected": key.rejected,
                "open_remaining_ms": key.open_remaining.map(|d| d.as_millis() as u64),
                "cooldown_remaining_ms": key.cooldown_remaining.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    let now = Instant::now();
    let targets: Vec<_> = gateway
        .activity
        .figures(now)
        .into_iter()
        .map(|t| {
            json!({
                "target": &*t.target,
                "requests": t.requests,
                "failed": t.failed,
                "per_second": t.per_second,
                "p50_ms": t.p50_ms,
                "p99_ms": t.p99_ms,
            })
        })
        .collect();
    let fallbacks: Vec<_> = gateway
        .activity
        .recent_fallbacks()
        .into_iter()
        .map(|f| {
            json!({
                "ago_ms": now.saturating_duration_since(f.at).as_millis() as u64,
                "endpoint": f.endpoint,
                "served_by": &*f.served_by,
                "passed": f.passed,
            })
        })
        .collect();
    json_response(json!({
        "status": status,
        "in_flight": gateway.max_concurrency - gateway.permits.available_permits(),
        "circuits": circuits,
        "targets": targets,
        "groups": groups(&gateway),
        "recent_fallbacks": fallbacks,
        "shared": shared(&gateway),
        "auth": match gateway.caller_keys {
            Some(keys) => json!({ "required": true, "keys": keys }),
            None => json!({ "required": false }),
        },
    }))
}

/// Whether circuit decisions are shared with other replicas through Redis
/// (`[shared]`): `null` when not configured; `degraded` while Redis is
/// unreachable (this replica decides alone meanwhile).
fn shared(gateway: &Gateway) -> serde_json::Value {
    match gateway.stack.shared_state() {
        Some(shared) => {
            let stats = shared.stats();
            json!({
                "status": stats.status.as_str(),
                "published": stats.published,
                "applied": stats.applied,
                "failed": stats.failed,
                "dropped": stats.dropped,
                "outages": stats.outages,
            })
        }
        None => serde_json::Value::Null,
    }
}

/// The deployment groups of every route that has one of two or more
/// targets: each group's strategy and, per deployment, its weight, requests
/// in flight, picks, latency estimate and how long it is still skipped.
fn groups(gateway: &Gateway) -> Vec<serde_json::Value> {
    gateway
        .stack
        .groups()
        .into_iter()
        .filter(|(_, groups)| groups.iter().any(|g| g.deployments.len() > 1))
        .map(|(model, groups)| {
            let groups: Vec<_> = groups
                .iter()
                .map(|group| {
                    let deployments: Vec<_> = group
                        .deployments
                        .iter()
                        .map(|d| {
                            json!({
                                "target": &*d.target,
                                "weight": d.weight,
                                "in_flight": d.in_flight,
                                "picks": d.picks,
                                "latency_ms": d.latency.map(|l| l.as_secs_f64() * 1000.0),
                                "unavailable_ms": d.unavailable_for.map(|u| u.as_millis() as u64),
                            })
                        })
                        .collect();
                    json!({ "strategy": group.strategy.as_str(), "deployments": deployments })
                })
                .collect();
            json!({ "model": model, "groups": groups })
        })
        .collect()
}

/// `/health/live`: the process accepts and answers requests (what a
/// liveness probe asks; it never depends on the upstreams, so a provider
/// outage does not get the gateway restarted).
pub(crate) async fn live() -> Response {
    json_response(json!({ "status": "live" }))
}

/// `/health/ready`: whether this replica should take traffic.
///
/// 200 `{"status": "ready"}` when every route has at least one target that
/// can take traffic now. When some route has none, 200 `{"status":
/// "degraded", "routes": [...]}` naming them, or, with
/// [`ready_requires_upstreams`](crate::GatewayOptions::ready_requires_upstreams),
/// 503 `{"status": "not_ready", ...}` (a readiness probe takes the replica
/// out of rotation until then). Not by default: a provider's outage is
/// every replica's alike, and failing them all together would answer
/// callers with the load balancer's 503, every route's callers, instead of
/// the gateway's own answer on the one route that is down.
///
/// A target can take traffic unless every breaker key it has
/// (`target/model`) is forced open or open with time left; a target not
/// called yet can, and so can one whose open time is over (its next call
/// is the probe that closes it: counting it out would keep a replica out
/// of rotation, and so without calls, for good).
///
/// A key cooling down after a rate limit or an exhausted quota does not
/// count, even in the strict mode: the limit is the provider account's,
/// which every replica shares (and, with `[shared]`, hears of at once), and
/// callers are better answered with the gateway's 429 and `Retry-After`.
pub(crate) async fn ready(State(gateway): State<Gateway>) -> Response {
    let snapshot = gateway.stack.circuits().snapshot();
    let routes = gateway.stack.routes();
    let blocked = blocked_targets(&routes, &snapshot);
    let unready: Vec<_> = routes
        .into_iter()
        .filter(|(_, targets)| targets.iter().all(|t| blocked.contains(t)))
        .map(|(model, targets)| json!({ "model": model, "targets": targets }))
        .collect();
    if unready.is_empty() {
        return json_response(json!({ "status": "ready" }));
    }
    if !gateway.ready_requires_upstreams {
        return json_response(json!({ "status": "degraded", "routes": unready }));
    }
    let mut response = json_response(json!({ "status": "not_ready", "routes": unready }));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// The targets none of whose breaker keys can take a call now. A key
/// `target/model` belongs to the target with the longest name it starts
/// with (followed by `/`): a target `openai` and a target `openai/eu` each
/// get their own keys, though model names may hold `/` too.
fn blocked_targets<'a>(
    routes: &[(String, Vec<&'a str>)],
    snapshot: &[KeySnapshot],
) -> HashSet<&'a str> {
    let names: HashSet<&'a str> = routes
        .iter()
        .flat_map(|(_, targets)| targets.iter().copied())
        .collect();
    // Per target: whether it has a key, and whether one of them is open
    // to calls.
    let mut seen: HashMap<&str, bool> = HashMap::new();
    for key in snapshot {
        let owner = names
            .iter()
            .filter(|t| {
                key.key
                    .strip_prefix(**t)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|t| t.len());
        let Some(owner) = owner else { continue };
        let available = !blocks_calls(key);
        let entry = seen.entry(owner).or_insert(false);
        *entry |= available;
    }
    seen.into_iter()
        .filter(|(_, available)| !available)
        .map(|(target, _)| target)
        .collect()
}

/// Whether a key's target is down for now: forced open, or open with time
/// left (a cooldown is a rate limit, not an outage: see [`ready`]).
fn blocks_calls(key: &KeySnapshot) -> bool {
    key.state == CircuitState::ForcedOpen
        || (key.state == CircuitState::Open && key.open_remaining.is_some())
}

fn json_response(body: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
