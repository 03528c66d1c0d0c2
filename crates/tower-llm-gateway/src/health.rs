//! `/health`: whether the gateway's targets are healthy, and the details
//! of every breaker for a caller allowed to see them.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header;
use serde_json::json;
use tower_llm::circuit::CircuitState;

use crate::auth;
use crate::router::Gateway;

/// `/health`: open to anyone as a liveness check (`status` alone, so a load
/// balancer needs no key); the details (circuits by target and model,
/// requests in flight, how many caller keys) only when no keys are set or
/// the caller sent one.
pub(crate) async fn health(State(gateway): State<Gateway>, request: Request) -> Response {
    let details = gateway.caller_keys.is_none()
        || request.extensions().get::<auth::Authenticated>().is_some();
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
    json_response(json!({
        "status": status,
        "in_flight": gateway.max_concurrency - gateway.permits.available_permits(),
        "circuits": circuits,
        "auth": match gateway.caller_keys {
            Some(keys) => json!({ "required": true, "keys": keys }),
            None => json!({ "required": false }),
        },
    }))
}

fn json_response(body: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
