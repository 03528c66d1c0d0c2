//! Inbound rate limits: how much each caller may ask of the gateway.
//!
//! `[gateway.rate_limits]` gives requests and (for the endpoints that
//! generate text) estimated tokens per minute, per caller key and per
//! endpoint, with per-endpoint overrides. Each limit is a GCRA bucket
//! (`gcra.rs`) holding a minute's worth, refilled continuously: a caller
//! may spend its minute at once, then gets a unit back every
//! `60 s / limit`. Without caller keys every caller shares one bucket per
//! endpoint (the gateway as a whole is what is protected).
//!
//! A request over a limit is answered at once, before its body is read
//! (requests) or before any upstream call (tokens), with the provider's
//! shape a client already handles: 429, `Retry-After` in whole seconds
//! (rounded up), OpenAI's `rate_limit_exceeded` error and its
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers, or on
//! `/v1/messages` Anthropic's `rate_limit_error` and its
//! `anthropic-ratelimit-*` headers. Every admitted answer carries the same
//! headers, so a client can pace itself before it is refused. The gateway
//! is the limit here: the headers replace an upstream's, which describe
//! the gateway's own accounts.
//!
//! Tokens are estimated as OpenAI counts them against a tokens-per-minute
//! limit when a request is made: the prompt (a token per 4 bytes of body)
//! plus the `max_tokens` asked for ([`RequestMeta::estimated_tokens`]).

mod gcra;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;
use tokio::time::Instant;
use tower_llm::classify::RequestMeta;
use tower_llm::classify::hint::{format_go_duration as go_duration, format_rfc3339};

use self::gcra::{Cell, Decision, Quota, Standing};
use crate::endpoints::ErrorShape;
use crate::gate::{Check, Passage};
use crate::observe::{ENDPOINTS, endpoint_index};

const MINUTE: Duration = Duration::from_secs(60);
/// The largest limit accepted: at a nanosecond a unit the bucket could not
/// tell a larger one apart (60 s / 6·10^10), and no gateway serves a
/// billion requests a minute per caller.
const MAX_PER_MINUTE: u64 = 1_000_000_000;

/// The `[gateway.rate_limits]` section.
///
/// ```toml
/// [gateway.rate_limits]
/// requests_per_minute = 600       # per caller key and endpoint
/// tokens_per_minute = 200000      # chat, completions, responses, messages
///
/// [gateway.rate_limits.endpoints.embeddings]
/// requests_per_minute = 3000
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests per minute, per caller key and endpoint.
    pub requests_per_minute: Option<u64>,
    /// Estimated tokens per minute, per caller key and endpoint, on the
    /// endpoints that generate text.
    pub tokens_per_minute: Option<u64>,
    /// Overrides by endpoint: `chat_completions`, `completions`,
    /// `embeddings`, `responses`, `messages`, `count_tokens`, `models`.
    pub endpoints: BTreeMap<String, EndpointLimitSection>,
}

/// One endpoint's limits, replacing the section's defaults for it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointLimitSection {
    /// Requests per minute, per caller key.
    pub requests_per_minute: Option<u64>,
    /// Estimated tokens per minute, per caller key.
    pub tokens_per_minute: Option<u64>,
}

/// The checked limits of every endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// By endpoint, in the order of the observed endpoints: requests, then
    /// tokens.
    quotas: [(Option<Quota>, Option<Quota>); ENDPOINTS.len()],
}

/// Whether an endpoint generates text (and so has a token limit).
fn counts_tokens(label: &str) -> bool {
    matches!(
        label,
        "chat_completions" | "completions" | "responses" | "messages"
    )
}

impl RateLimitSection {
    /// The limits, checked: every error names its key.
    pub fn limits(&self) -> Result<RateLimits, String> {
        let quota = |key: &str, value: Option<u64>| match value {
            Some(0) => Err(format!(
                "[gateway.rate_limits] {key}: 0 would refuse everything; leave it out for no \
                 limit"
            )),
            Some(n) if n > MAX_PER_MINUTE => Err(format!(
                "[gateway.rate_limits] {key}: {n} is more than {MAX_PER_MINUTE} per minute; \
                 leave it out for no limit"
            )),
            Some(n) => Ok(Quota::new(n, MINUTE)),
            None => Ok(None),
        };
        for name in self.endpoints.keys() {
            if !ENDPOINTS.iter().any(|(_, label)| label == name) {
                let known: Vec<_> = ENDPOINTS.iter().map(|(_, label)| *label).collect();
                return Err(format!(
                    "[gateway.rate_limits.endpoints] `{name}` is not an endpoint; the endpoints \
                     are {}",
                    known.join(", ")
                ));
            }
        }
        let mut limits = RateLimits::default();
        for (slot, (_, label)) in limits.quotas.iter_mut().zip(ENDPOINTS) {
            let own = self.endpoints.get(label);
            let requests = own
                .and_then(|e| e.requests_per_minute)
                .or(self.requests_per_minute);
            let tokens = own
                .and_then(|e| e.tokens_per_minute)
                .or(self.tokens_per_minute);
            if own.is_some_and(|e| e.tokens_per_minute.is_some()) && !counts_tokens(label) {
                return Err(format!(
                    "[gateway.rate_limits.endpoints.{label}] tokens_per_minute: this endpoint \
                     generates no text; limit its requests_per_minute"
                ));
            }
            *slot = (
                quota(&format!("{label}.requests_per_minute"), requests)?,
                if counts_tokens(label) {
                    quota(&format!("{label}.tokens_per_minute"), tokens)?
                } else {
                    None
                },
            );
        }
        Ok(limits)
    }
}

impl RateLimits {
    /// Whether any endpoint is limited.
    pub fn is_empty(&self) -> bool {
        self.quotas.iter().all(|(r, t)| r.is_none() && t.is_none())
    }
}

/// The limits' state: a bucket per caller, endpoint and limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: RateLimits,
    /// `callers × endpoints` pairs of cells (requests, tokens).
    cells: Box<[(Cell, Cell)]>,
    origin: Instant,
}

/// Who a request comes from, for its limits: the index of the caller key
/// it sent (0 for everyone when the gateway has no keys).
///
/// Only the key check inserts it, and its presence is what tells `/health`
/// that the caller sent an accepted key: never insert a default one (for
/// callers without keys, read its absence as 0, as the limits do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller(pub(crate) usize);

/// What a request was admitted with: where to take its tokens from, and
/// where the handler leaves what came of them for the answer's headers.
#[derive(Clone, Debug)]
pub(crate) struct Admitted {
    limiter: Arc<Limiter>,
    cell: usize,
    endpoint: usize,
    tokens: Arc<OnceLock<Tokens>>,
}

/// What came of a request's tokens.
#[derive(Clone, Copy, Debug)]
struct Tokens {
    /// The token bucket's standing.
    standing: Standing,
    /// The request was refused for its tokens and its request given back.
    refunded: bool,
}

impl Limiter {
    /// The state for `callers` callers (at least one).
    pub(crate) fn new(limits: RateLimits, callers: usize) -> Limiter {
        let cells = (0..callers.max(1) * ENDPOINTS.len())
            .map(|_| (Cell::default(), Cell::default()))
            .collect();
        Limiter {
            limits,
            cells,
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What an admitted answer is told of its caller's limits.
pub(crate) struct Standings {
    anthropic: bool,
    requests: Option<Standing>,
    /// Left by the handler once the request's tokens are taken, when the
    /// endpoint has a token limit.
    tokens: Option<Arc<OnceLock<Tokens>>>,
}

/// The check in front of the API endpoints (as a
/// [`GateLayer`](crate::gate::GateLayer)): takes a request from the
/// caller's bucket for the endpoint, or refuses it at once; what is let
/// through carries where the handler takes its tokens from ([`Admitted`],
/// only with a token limit), and its answer gets the standing of the
/// caller's limits.
impl Check for Arc<Limiter> {
    type After = Standings;

    fn check(&self, request: &mut Request) -> Passage<Standings> {
        admit(self, request)
    }

    fn after(standings: Standings, response: &mut Response) {
        standings.apply(response);
    }
}

/// See the [`Check`] of a limiter: through with nothing to do for a path
/// without limits.
fn admit(limiter: &Arc<Limiter>, request: &mut Request) -> Passage<Standings> {
    let Some(endpoint) = endpoint_index(request.uri().path()) else {
        return Passage::Through(None);
    };
    let callers = limiter.cells.len() / ENDPOINTS.len();
    let caller = request.extensions().get::<Caller>().map_or(0, |c| c.0);
    debug_assert!(caller < callers, "a caller key index past the limiter's");
    let cell = caller.min(callers - 1) * ENDPOINTS.len() + endpoint;
    let (requests, tokens) = limiter.limits.quotas[endpoint];
    let anthropic = is_anthropic(endpoint);
    let requests = match requests {
        None => None,
        Some(quota) => match limiter.cells[cell].0.take(&quota, 1, limiter.now()) {
            Decision::Admitted(standing) => Some(standing),
            Decision::Wait { wait, standing } => {
                return Passage::Refused(refusal(anthropic, Unit::Requests, wait, standing));
            }
            // A bucket holds at least one request: never.
            Decision::TooLarge => {
                return Passage::Refused(too_large(anthropic, Unit::Requests, 1, quota));
            }
        },
    };
    // The handler leaves the token standing here, when there is a token
    // limit (an allocation only then).
    let tokens = tokens.map(|_| {
        let slot = Arc::new(OnceLock::new());
        request.extensions_mut().insert(Admitted {
            limiter: Arc::clone(limiter),
            cell,
            endpoint,
            tokens: Arc::clone(&slot),
        });
        slot
    });
    Passage::Through(Some(Standings {
        anthropic,
        requests,
        tokens,
    }))
}

impl Standings {
    /// Sets the standing of the caller's limits on an answer (and takes
    /// the upstream's own rate-limit headers out of it: they describe the
    /// gateway's upstream key, not this caller).
    pub(crate) fn apply(self, response: &mut Response) {
        let headers = response.headers_mut();
        drop_upstream_limits(headers);
        let tokens = self.tokens.as_ref().and_then(|slot| slot.get());
        if let Some(mut standing) = self.requests {
            if tokens.is_some_and(|t| t.refunded) {
                standing.remaining = (standing.remaining + 1).min(standing.limit);
            }
            set_standing(headers, self.anthropic, Unit::Requests, standing);
        }
        if let Some(tokens) = tokens {
            set_standing(headers, self.anthropic, Unit::Tokens, tokens.standing);
        }
    }
}

/// Takes the tokens a request will cost (estimated from its `body`) from
/// its caller's bucket for the endpoint, when the endpoint has a token
/// limit; `Some` answer to send when they do not fit. The handler calls
/// this once the body is read, before any upstream call.
pub(crate) fn take_tokens(
    extensions: &http::Extensions,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let admitted = extensions.get::<Admitted>()?;
    let quota = admitted.limiter.limits.quotas[admitted.endpoint].1?;
    // One more walk of the body, only when a token limit is set.
    let estimate = RequestMeta::from_request(uri, headers, Some(body))
        .estimated_tokens()
        .unwrap_or(0);
    let limiter = &admitted.limiter;
    let anthropic = is_anthropic(admitted.endpoint);
    let now = limiter.now();
    let (standing, refused) = match limiter.cells[admitted.cell].1.take(&quota, estimate, now) {
        Decision::Admitted(standing) => {
            let _ = admitted.tokens.set(Tokens {
                standing,
                refunded: false,
            });
            return None;
        }
        Decision::Wait { wait, standing } => (
            Some(standing),
            refusal(anthropic, Unit::Tokens, wait, standing),
        ),
        Decision::TooLarge => (None, too_large(anthropic, Unit::Tokens, estimate, quota)),
    };
    // Refused before any call: the request it was admitted with is given
    // back, so a caller waiting out the tokens is not then refused for
    // requests (and is told it has that request again).
    if let Some(requests) = limiter.limits.quotas[admitted.endpoint].0 {
        limiter.cells[admitted.cell].0.give_back(&requests, 1, now);
    }
    // The middleware sets the standings on the way out (replacing whatever
    // rate-limit headers the answer carries).
    if let Some(standing) = standing {
        let _ = admitted.tokens.set(Tokens {
            standing,
            refunded: true,
        });
    }
    Some(refused)
}

/// Removes an upstream's rate-limit headers: they describe the gateway's
/// own account, and a caller mixing them with its own limits' would pace
/// itself by both.
fn drop_upstream_limits(headers: &mut HeaderMap) {
    fn upstreams(name: &HeaderName) -> bool {
        let name = name.as_str();
        // OpenAI's and Anthropic's, and the IETF drafts' (`RateLimit`,
        // `RateLimit-Policy`, the older `RateLimit-Limit/-Remaining/-Reset`).
        name.starts_with("x-ratelimit-")
            || name.starts_with("anthropic-ratelimit-")
            || name.starts_with("ratelimit")
    }
    // Most answers carry none: no allocation then.
    if !headers.keys().any(upstreams) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|n| upstreams(n)).cloned().collect();
    for name in found {
        headers.remove(name);
    }
}

/// Whether the endpoint at `index` speaks Anthropic's dialect.
fn is_anthropic(index: usize) -> bool {
    matches!(ENDPOINTS[index].1, "messages" | "count_tokens")
}

/// Which limit a header or refusal is about.
#[derive(Clone, Copy, Debug)]
enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
}

/// Sets the standing of one limit, in the endpoint's provider's headers.
fn set_standing(headers: &mut HeaderMap, anthropic: bool, unit: Unit, standing: Standing) {
    let [limit, remaining, reset] = header_names(anthropic, unit);
    headers.insert(limit, HeaderValue::from(standing.limit));
    headers.insert(remaining, HeaderValue::from(standing.remaining));
    let reset_value = if anthropic {
        // Anthropic gives the instant, RFC 3339.
        rfc3339_after(standing.reset)
    } else {
        // OpenAI gives the time left, Go-style (`6m0s`, `1.5s`, `120ms`).
        go_duration(standing.reset)
    };
    if let Ok(value) = HeaderValue::from_str(&reset_value) {
        headers.insert(reset, value);
    }
}

/// The limit, remaining and reset headers of `unit`, in the endpoint's
/// provider's names.
fn header_names(anthropic: bool, unit: Unit) -> [HeaderName; 3] {
    match (anthropic, unit) {
        (false, Unit::Requests) => [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        (false, Unit::Tokens) => [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
        (true, Unit::Requests) => [
            HeaderName::from_static("anthropic-ratelimit-requests-limit"),
            HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
            HeaderName::from_static("anthropic-ratelimit-requests-reset"),
        ],
        (true, Unit::Tokens) => [
            HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
            HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
            HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
        ],
    }
}

/// The 429 for a request over `unit`'s limit, with the wait.
fn refusal(anthropic: bool, unit: Unit, wait: Duration, standing: Standing) -> Response {
    metrics::counter!("tower_llm_gateway_rejected_total", "reason" => match unit {
        Unit::Requests => "rate_limit_requests",
        Unit::Tokens => "rate_limit_tokens",
    })
    .increment(1);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let message = format!(
        "Rate limit reached on {} per min: limit {}, remaining {}. Please try again in {}.",
        unit.as_str(),
        standing.limit,
        standing.remaining,
        go_duration(wait)
    );
    let mut response = limit_error(anthropic, unit, &message);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    set_standing(headers, anthropic, unit, standing);
    response
}

/// The 429 for a request of more units than its bucket holds: it would
/// never be admitted, so no `Retry-After` (OpenAI answers "Request too
/// large … tokens per min" with a 429 too).
fn too_large(anthropic: bool, unit: Unit, units: u64, quota: Quota) -> Response {
    metrics::counter!("tower_llm_gateway_rejected_total", "reason" => "rate_limit_too_large")
        .increment(1);
    let message = format!(
        "Request too large: about {units} {} (a token per 4 bytes of body plus max_tokens) \
         against a limit of {} per min. Send a smaller request or a lower max_tokens.",
        unit.as_str(),
        quota.per_window
    );
    let mut response = limit_error(anthropic, unit, &message);
    // It would never be admitted: the SDKs (Stainless-made, OpenAI's and
    // Anthropic's) read this before the status and do not retry it.
    response.headers_mut().insert(
        HeaderName::from_static("x-should-retry"),
        HeaderValue::from_static("false"),
    );
    response
}

/// A rate-limit error in the endpoint's provider's shape.
fn limit_error(anthropic: bool, unit: Unit, message: &str) -> Response {
    if anthropic {
        return ErrorShape::Anthropic.gateway_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            message,
        );
    }
    // OpenAI's own: `type` names the limit, `code` says what it is.
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": unit.as_str(),
            "param": null,
            "code": "rate_limit_exceeded"
        }
    });
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The instant `d` from now, RFC 3339 in UTC, rounded up to the second
/// (a caller waiting until then is never early).
fn rfc3339_after(d: Duration) -> String {
    let at = std::time::SystemTime::now() + d + Duration::from_nanos(999_999_999);
    format_rfc3339(at, 0)
}

#[cfg(test)]
mod tests;
