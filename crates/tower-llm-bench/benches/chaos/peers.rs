//! The contenders a tower-llm user would pick instead, each configured the
//! way its documentation shows:
//!
//! * `tower::retry` over a hyper-util client, with a hand-written status
//!   policy, tower's jittered `ExponentialBackoff` and a shared `TpsBudget`;
//! * tower-resilience 0.14: its retry (exponential backoff, token-bucket
//!   budget) outside its circuit breaker (the `standard()` preset);
//! * reqwest-middleware + reqwest-retry with its default transient policy.
//!
//! None of them reads `retry-after` or a provider's error body, and none has
//! a fallback target: the backup URL is ignored. No contender sets a
//! timeout (none of these clients has one by default) unless the scenario
//! asks for a per-attempt limit: then tower's `Timeout` goes under the
//! tower stacks and reqwest's `timeout` on the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff as ReqwestBackoff;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower::util::rng::HasherRng;
use tower::{Layer, Service, ServiceExt};
use tower_resilience_circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};
use tower_resilience_retry::{RetryBudgetBuilder, RetryLayer};

use crate::contender::{Call, Contender, Outcome, Setup, finish, read};

type HyperClient = Client<HttpConnector, Full<Bytes>>;
type HyperRequest = Request<Full<Bytes>>;

/// Whether the request body asks for a stream (`"stream":true`, with or
/// without a space).
fn is_stream(body: &[u8]) -> bool {
    body.windows(13).any(|w| w == b"\"stream\":true")
        || body.windows(14).any(|w| w == b"\"stream\": true")
}

fn transport_error() -> Outcome {
    Outcome::Err {
        status: None,
        partial: String::new(),
        cause: None,
    }
}

fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn endpoint(primary: &str) -> Uri {
    format!("{primary}/v1/chat/completions")
        .parse()
        .expect("a valid primary URL")
}

/// Any tower service over the hyper client (the two tower contenders):
/// cloned per call, decided at the response head, body read afterwards.
struct TowerStack<S> {
    service: S,
    uri: Uri,
}

impl<S> Contender for TowerStack<S>
where
    S: Service<HyperRequest, Response = Response<Incoming>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Send,
{
    fn call(&self, body: Bytes) -> Call<'_> {
        Box::pin(async move {
            let stream = is_stream(&body);
            let request = Request::post(self.uri.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .expect("a valid request");
            match self.service.clone().oneshot(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    finish(status, read(response.into_body()).await, stream)
                }
                Err(_) => transport_error(),
            }
        })
    }
}

// ---------------------------------------------------------------------------
// 1. tower::retry
// ---------------------------------------------------------------------------

/// A status policy as a typical `tower::retry` user writes it: retry 429,
/// 500, 502, 503, 504 and transport errors, at most 3 attempts in all,
/// tower's jittered exponential backoff, a shared `TpsBudget` (deposit on
/// every other answer, withdraw per retry, as tower's budget docs show).
#[derive(Clone)]
struct StatusPolicy {
    /// Retries left in this request session (the policy is cloned per
    /// request by `Retry`, so this starts at 2 for each).
    retries_left: usize,
    /// One backoff session; its clone per request restarts at `min`.
    backoff: ExponentialBackoff<
        HasherRng<std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>>,
    >,
    budget: Arc<TpsBudget>,
}

impl<B, E> Policy<HyperRequest, Response<B>, E> for StatusPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut HyperRequest,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(response) => matches!(response.status().as_u16(), 429 | 500 | 502 | 503 | 504),
            Err(_) => true,
        };
        if !retryable {
            self.budget.deposit();
            return None;
        }
        if self.retries_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.retries_left -= 1;
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, request: &HyperRequest) -> Option<HyperRequest> {
        Some(request.clone())
    }
}

/// `tower::retry::Retry` with [`StatusPolicy`] over a hyper-util client:
/// backoff 500 ms · 2ⁿ plus up to 99 % jitter, capped at 8 s; `TpsBudget`
/// with its defaults (10 s, 10/s floor, 20 %). No retry-after.
///
/// As written (one `ExponentialBackoff` cloned per request, as the
/// `Backoff` docs describe), every request of a run gets the same jitter:
/// the clone copies the `HasherRng`'s keys and counter. And tower 0.5.3
/// truncates the jitter of a whole-second base to whole seconds, so the
/// second retry waits exactly 1 s. Measured: gaps of `[831 ms, 1 s]` for
/// every request of one contender.
pub(crate) fn tower_retry(setup: &Setup) -> Box<dyn Contender> {
    let backoff = ExponentialBackoffMaker::new(
        Duration::from_millis(500),
        Duration::from_secs(8),
        0.99,
        // Seeded (a fixed SipHash key) so that runs repeat.
        HasherRng::with_hasher(std::hash::BuildHasherDefault::<
            std::collections::hash_map::DefaultHasher,
        >::default()),
    )
    .expect("a valid backoff")
    .make_backoff();
    let policy = StatusPolicy {
        retries_left: 2,
        backoff,
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    };
    let uri = endpoint(&setup.primary);
    match setup.attempt_timeout {
        // tower's `Timeout` under the retry: each attempt, to its head.
        Some(limit) => Box::new(TowerStack {
            service: Retry::new(policy, tower::timeout::Timeout::new(hyper_client(), limit)),
            uri,
        }),
        None => Box::new(TowerStack {
            service: Retry::new(policy, hyper_client()),
            uri,
        }),
    }
}

// ---------------------------------------------------------------------------
// 2. tower-resilience
// ---------------------------------------------------------------------------

/// A status both of tower-resilience's layers count as a failure.
fn failed(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// tower-resilience 0.14, retry outside the circuit breaker, as its docs
/// recommend (`docs/circuitbreaker-tower-comparison.md`, "Recommended
/// default ordering"): every attempt goes through the breaker, and the
/// retry does not retry the breaker's own open-circuit rejections.
///
/// * breaker: `CircuitBreakerLayer::standard()` (50 % failure rate, a
///   "count window" of 100 calls that in 0.14 does not slide — its counters
///   reset only on a state change —, 30 s open, 3 half-open probes) with a
///   failure classifier counting transport errors, 429 and 5xx;
/// * retry: 3 attempts, `exponential_backoff(500 ms)` (500 ms, 1 s, no
///   jitter), `retry_on_response` for 429 and 5xx (the last such response
///   is returned as is when attempts or budget run out), a token-bucket
///   budget with its defaults (10 tokens/s, 100 max; a success deposits one).
///
/// Both the breaker's open duration and the budget's refill run on
/// `std::time::Instant`, not Tokio's clock: under the harness's paused time
/// an open breaker stays open for 30 s of *wall* time (measured: still open
/// after 120 virtual seconds), and the bucket refills at 10 tokens per wall
/// second.
pub(crate) fn tower_resilience(setup: &Setup) -> Box<dyn Contender> {
    let uri = endpoint(&setup.primary);
    match setup.attempt_timeout {
        // tower's `Timeout` under both layers: each attempt, to its head.
        Some(limit) => resilience_over(tower::timeout::Timeout::new(hyper_client(), limit), uri),
        None => resilience_over(hyper_client(), uri),
    }
}

fn resilience_over<S, E>(inner: S, uri: Uri) -> Box<dyn Contender>
where
    S: Service<HyperRequest, Response = Response<Incoming>, Error = E>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    E: Send + Sync + 'static,
{
    let breaker = CircuitBreakerLayer::standard()
        .name("chaos-primary")
        .failure_classifier(|result: &Result<Response<Incoming>, E>| match result {
            Ok(response) => failed(response.status()),
            Err(_) => true,
        })
        .build()
        .expect("a valid circuit breaker");
    let budget = RetryBudgetBuilder::new()
        .token_bucket()
        .build()
        .expect("a valid retry budget");
    let retry = RetryLayer::<HyperRequest, Response<Incoming>, CircuitBreakerError<E>>::builder()
        .name("chaos-primary")
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(500))
        .retry_on(|error: &CircuitBreakerError<E>| !error.is_circuit_open())
        .retry_on_response(|response: &Response<Incoming>| failed(response.status()))
        .budget(budget)
        .build();
    Box::new(TowerStack {
        service: retry.layer(breaker.layer(inner)),
        uri,
    })
}

// ---------------------------------------------------------------------------
// 3. reqwest-middleware + reqwest-retry
// ---------------------------------------------------------------------------

struct ReqwestRetry {
    client: ClientWithMiddleware,
    url: String,
}

impl Contender for ReqwestRetry {
    fn call(&self, body: Bytes) -> Call<'_> {
        Box::pin(async move {
            let stream = is_stream(&body);
            let response = self
                .client
                .post(&self.url)
                .header(CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            let mut response = match response {
                Ok(response) => response,
                Err(_) => return transport_error(),
            };
            let status = response.status().as_u16();
            // `bytes()`, chunk by chunk, so that a broken stream's partial
            // content is kept.
            let mut all = BytesMut::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => all.extend_from_slice(&chunk),
                    Ok(None) => return finish(status, Ok(all.freeze()), stream),
                    Err(error) => {
                        return finish(
                            status,
                            Err((all.freeze(), Some(error.to_string()))),
                            stream,
                        );
                    }
                }
            }
        })
    }
}

/// `RetryTransientMiddleware` with retry-policies' `ExponentialBackoff`
/// defaults and 2 retries (3 attempts in all): full jitter, U(0, 1 s · 2ⁿ),
/// bounds [1 s, 30 min]; its default strategy retries 5xx, 408, 429,
/// timeouts, connect errors and resets. No budget, no retry-after.
pub(crate) fn reqwest_retry(setup: &Setup) -> Box<dyn Contender> {
    let policy = ReqwestBackoff::builder().build_with_max_retries(2);
    // reqwest's own timeout covers each request the middleware sends.
    let inner = match setup.attempt_timeout {
        Some(limit) => reqwest::Client::builder()
            .timeout(limit)
            .build()
            .expect("a reqwest client"),
        None => reqwest::Client::new(),
    };
    let client = ClientBuilder::new(inner)
        .with(RetryTransientMiddleware::new_with_policy(policy))
        .build();
    Box::new(ReqwestRetry {
        client,
        url: format!("{}/v1/chat/completions", setup.primary),
    })
}
