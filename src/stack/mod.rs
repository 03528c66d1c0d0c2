//! `LlmStack`: the whole stack in the order it belongs — Fallback over
//! targets, each Retry → Circuit → Classify over its client — from a few
//! lines of code or from one [`StackConfig`](crate::config::StackConfig).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceExt;
//! use tower_llm::stack::LlmStack;
//! use tower_llm_testkit::{Fault, Simulator};
//!
//! // A primary that is overloaded, a healthy backup.
//! let primary = Simulator::builder().plan(Fault::overloaded()).start().await?;
//! let backup = Simulator::start().await?;
//! let client = Client::builder(TokioExecutor::new()).build_http();
//!
//! // Base URLs as an OpenAI SDK takes them; the request's path goes under.
//! let base = |sim: &Simulator| format!("{}/v1", sim.base_url()).parse().unwrap();
//! let stack = LlmStack::development()
//!     .target("primary", client.clone(), |t| t.base_url(base(&primary)))
//!     .target("backup", client, |t| t.base_url(base(&backup)).model("llama3.2"))
//!     .build()?;
//!
//! let request = http::Request::post("/chat/completions")
//!     .body(r#"{"model":"gpt-4o","messages":[]}"#.to_owned())?;
//! let response = stack.clone().oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(tower_llm::stack::served_by(&response), Some("backup"));
//! // Each target has its breaker, keyed `target/model`.
//! let mut keys: Vec<String> = stack
//!     .circuits()
//!     .snapshot()
//!     .into_iter()
//!     .map(|k| k.key.to_string())
//!     .collect();
//! keys.sort();
//! assert_eq!(keys, ["backup/llama3.2", "primary/gpt-4o"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Why one breaker key per target
//!
//! The circuit keys of a stack are `target/model`, not `provider/model`:
//! two targets may speak to the same provider and model (two regions, two
//! keys, a proxy and the origin), and one of them being down must not skip
//! the other.
//!
//! # Why a silent target is tried once when the route goes on
//!
//! A target that sent no response head in time, or no first content, is
//! usually silent again on the next attempt (a hung connection, a stuck
//! deployment), and each attempt on it costs the whole timeout. Every
//! target of a route but the last therefore gives a silent attempt up at
//! once (the retry policy's
//! [`retry_on_silence`](tower_llm_retry::RetryPolicyBuilder::retry_on_silence)
//! off), and the fallback moves on; the last target, with nowhere else to
//! go, retries it as the policy says. A target that answers — an error
//! status, an overload — is retried as before, unless its answer says
//! when to come back (`retry-after`) and that is more than a second away:
//! waiting out a rate limit's 30 s while another target could answer now
//! is what a gateway must not do, so such a target leaves the request to
//! the next one (its breaker cools the key down for the hint, so later
//! requests go there directly), and only the last target waits out hints
//! up to the policy's `max_hint`. The targets kept for context-length or
//! content-filter failures count as last: an outage never goes there.
//!
//! # Why each target has its own retry budget
//!
//! A budget limits retries to a fraction of the traffic it sees. Shared, a
//! dead primary would spend it all, and the backup — the last line — would
//! meet its own transient errors with no retry left.

mod attempt_span;
mod availability;
mod future;
mod preset;
#[cfg(feature = "reqwest")]
mod reqwest_client;
mod routes;
mod service;
#[cfg(feature = "redis")]
mod shared_state;
mod target_service;
mod target_services;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use tower::Layer;
use tower_llm_circuit::{CircuitConfig, CircuitLayer, KeyBy, OnTransition, Transition};
use tower_llm_classify::{BoxError, ClassifyLayer, LlmError};
use tower_llm_fallback::{Fallback, FallbackBody, FallbackReport, Target};
use tower_llm_retry::{ReplayBody, RetryPolicy};
use tower_service::Service;

pub use attempt_span::ATTEMPT_SPAN_TARGET;
pub use future::ResponseFuture;
pub use preset::{Preset, UnknownPreset};
#[cfg(feature = "reqwest")]
pub use reqwest_client::ReqwestClient;
pub use routes::ModelRoute;
use routes::{Routes, in_route_order, route_targets};
pub use service::Stack;
pub use target_service::{TargetFuture, TargetService};
use target_services::{Layers, PendingTarget, TargetServices, target_services};

/// The body of one target's answer.
pub type TargetBody = UnsyncBoxBody<Bytes, LlmError>;

/// The body of the stack's answer: the serving target's, which fails with
/// a stream-incomplete error if it breaks after content was delivered.
pub type StackBody = FallbackBody<TargetBody>;

/// How many times a stack continues a broken stream by default. Each
/// continuation asks only for what is left, so the cost is bounded by the
/// answer; at a 20 % chance that a stream breaks, four continuations leave
/// 0.2⁵ = 0.03 % of answers unfinished (the 99.9 % goal of streams that
/// finish), two would leave 0.8 %.
pub const DEFAULT_CONTINUATIONS: u32 = 4;

/// The largest request body a stack reads by default (32 MiB, as the retry
/// layer's default).
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// The name of the target that served `response`, if it came from a stack.
pub fn served_by<B>(response: &Response<B>) -> Option<&str> {
    response
        .extensions()
        .get::<FallbackReport>()
        .and_then(|report| report.served_by.as_deref())
}

/// A stack that does not hold together: an unknown target in a route, two
/// targets with one name, an invalid fallback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackError(pub(crate) String);

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid stack: {}", self.0)
    }
}

impl std::error::Error for StackError {}

/// Builds the stack: presets, layer settings, targets, routes.
///
/// Settings may be given in any order: targets are assembled at
/// [`build`](LlmStack::build), with the layers as they are then.
pub struct LlmStack {
    retry: RetryPolicy,
    circuit: CircuitConfig,
    adaptive_limit: bool,
    on_transition: Option<Arc<OnTransition>>,
    classify: ClassifyLayer,
    stream_idle_timeout: Option<Duration>,
    hedge: Option<(Duration, f64)>,
    max_body: usize,
    move_on_authentication: Option<bool>,
    move_on_invalid_request: Option<bool>,
    continue_streams: u32,
    seed: Option<u64>,
    targets: Vec<PendingTarget>,
    routes: Vec<ModelRoute>,
    #[cfg(feature = "redis")]
    shared_state: Option<tower_llm_redis::SharedState>,
}

impl fmt::Debug for LlmStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmStack")
            .field("retry", &self.retry)
            .field("circuit", &self.circuit)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("hedge", &self.hedge)
            .field("max_body", &self.max_body)
            .field("continue_streams", &self.continue_streams)
            .field(
                "targets",
                &self
                    .targets
                    .iter()
                    .map(|(t, _)| t.name())
                    .collect::<Vec<_>>(),
            )
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Default for LlmStack {
    fn default() -> Self {
        LlmStack::preset(Preset::SdkDefault)
    }
}

impl LlmStack {
    /// A stack starting from `preset`.
    pub fn preset(preset: Preset) -> Self {
        LlmStack {
            retry: preset.retry(),
            circuit: preset.circuit(),
            adaptive_limit: true,
            on_transition: None,
            classify: ClassifyLayer::new(),
            stream_idle_timeout: Some(preset.stream_idle_timeout()),
            hedge: None,
            max_body: DEFAULT_MAX_BODY,
            move_on_authentication: None,
            move_on_invalid_request: None,
            continue_streams: DEFAULT_CONTINUATIONS,
            seed: None,
            targets: Vec::new(),
            routes: Vec::new(),
            #[cfg(feature = "redis")]
            shared_state: None,
        }
    }

    /// [`Preset::SdkDefault`]: the official SDKs' retry pacing, the
    /// standard breaker.
    pub fn sdk_default() -> Self {
        LlmStack::preset(Preset::SdkDefault)
    }

    /// [`Preset::HighAvailability`]: retries within a deadline, a breaker
    /// that trips early so the fallback takes over.
    pub fn high_availability() -> Self {
        LlmStack::preset(Preset::HighAvailability)
    }

    /// [`Preset::CostSensitive`]: one retry, the standard breaker.
    pub fn cost_sensitive() -> Self {
        LlmStack::preset(Preset::CostSensitive)
    }

    /// [`Preset::Development`]: fail fast and visibly.
    pub fn development() -> Self {
        LlmStack::preset(Preset::Development)
    }

    /// Uses this retry policy for every target (each gets a budget of its
    /// own with the policy's parameters). It replaces the preset's, time
    /// limits included: start from [`Preset::retry`] (`.to_builder()`) to
    /// keep them. Every target but the last of a route leaves a silent
    /// attempt to the next whatever the policy's `retry_on_silence` (see
    /// the [module docs](self)).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Uses this breaker configuration (one registry, keyed `target/model`).
    pub fn circuit(mut self, config: CircuitConfig) -> Self {
        self.circuit = config;
        self
    }

    /// Whether each target's calls pass an adaptive concurrency limit per
    /// key (on by default; its settings are the circuit configuration's
    /// [`adaptive_limit`](CircuitConfig::adaptive_limit), `[circuit]
    /// limit_*` in TOML).
    ///
    /// Overload is not an outage: a target that sheds some calls (503
    /// "overloaded", 529, a full queue) still serves most of them. The
    /// limit is off (a call only counts itself in flight and its answer in
    /// the window) until a window of a key's answers is 30 % shed (a few
    /// random overload answers are noise a retry handles); it then caps the calls in flight at what was in
    /// flight times the backoff, halves again while the shedding goes on
    /// and grows back with successes (AIMD, as Netflix's concurrency-limits
    /// and Envoy's adaptive concurrency filter), and turns off after a
    /// quiet minute or when the key's breaker closes again; enabled only
    /// after the first throttle, as the AWS SDKs' adaptive retry mode. Calls
    /// over it wait their turn (a bounded queue), then are refused locally
    /// as overloaded: the fallback moves them to the next target, a route's
    /// last target retries them after the backoff. A lone target's breaker
    /// does not count overload (busy is not down, and it has nowhere else
    /// to send the call); with another target to go to, overload still
    /// counts, so that a target answering nothing but "overloaded" is left
    /// for the next.
    pub fn adaptive_limit(mut self, on: bool) -> Self {
        self.adaptive_limit = on;
        self
    }

    /// Calls `f` on every breaker state change of every target (besides the
    /// `tracing` event): to alert, or to count in your own metrics.
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.on_transition = Some(Arc::new(f));
        self
    }

    /// Uses this classify layer (error body limit, provider, …). The
    /// stack's [stream idle timeout](Self::stream_idle_timeout) (the
    /// preset's unless set) is applied over it.
    pub fn classify(mut self, layer: ClassifyLayer) -> Self {
        self.classify = layer;
        self
    }

    /// Fails a stream that delivers no content event for `timeout` after
    /// its first: pings, SSE comments and role-only chunks do not count, so
    /// a stalled stream kept alive by keep-alives is ended too (Classify's
    /// [`stream_idle_timeout`](ClassifyLayer::stream_idle_timeout)). The
    /// answer is then continued from where it stopped (see
    /// [`continue_streams`](Self::continue_streams)), or the caller's stream
    /// ends with a `stream_incomplete` error whose source is the timeout.
    /// The wait for the first content is the retry policy's (stream head,
    /// first content, attempt timeout), not this one's, so a reasoning
    /// model's silent start is not cut. The preset's is in [`Preset`]'s
    /// table; `Duration::MAX` is no limit.
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = Some(timeout);
        self
    }

    /// Hedges to the next target after `delay`, within `ratio` of calls
    /// (see [`FallbackBuilder::hedge`](tower_llm_fallback::FallbackBuilder::hedge)).
    pub fn hedge(mut self, delay: Duration, ratio: f64) -> Self {
        self.hedge = Some((delay, ratio));
        self
    }

    /// Refuses request bodies over `bytes` (payload too large, no call).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Whether a 401 from a target moves on to the next (default: yes, it
    /// is about that target's own key).
    pub fn move_on_authentication(mut self, on: bool) -> Self {
        self.move_on_authentication = Some(on);
        self
    }

    /// Whether an invalid request moves on to the next target (default:
    /// no, the next would refuse it too).
    pub fn move_on_invalid_request(mut self, on: bool) -> Self {
        self.move_on_invalid_request = Some(on);
        self
    }

    /// How many times a streamed answer that breaks after content is
    /// continued (default [`DEFAULT_CONTINUATIONS`]; 0: never): asked of a
    /// target that can continue it for the rest, with the text the caller
    /// holds as the assistant's partial answer, and spliced into the
    /// caller's stream so it reads one answer (see
    /// [`continuation`](tower_llm_fallback::continuation); which targets can
    /// is each target's `continuation`).
    pub fn continue_streams(mut self, times: u32) -> Self {
        self.continue_streams = times;
        self
    }

    /// Seeds the random numbers with which [groups](ModelRoute::group)
    /// pick a deployment, so that a run can be repeated (a benchmark, a
    /// test); by default each route draws a seed of its own.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Adds a target named `name` over `client` — a hyper-util client, a
    /// [`ReqwestClient`] (feature `reqwest`), or any service of
    /// `http::Request<Full<Bytes>>` — with `adapt` setting its base URL,
    /// model, key and routes (see [`Target`]; its service is attached at
    /// [`build`](LlmStack::build)).
    pub fn target<C, B>(
        mut self,
        name: &str,
        client: C,
        adapt: impl FnOnce(Target<()>) -> Target<()>,
    ) -> Self
    where
        C: Service<Request<ReplayBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let settings = adapt(Target::new(name, ()));
        let make = Box::new(move |layers: &Layers, name: Arc<str>| -> TargetServices {
            // `target/model`, compared in place per call (no string built);
            // the two services share the breaker and the limit (one
            // registry, one key).
            let circuit = layers
                .circuit
                .clone()
                .key_by(KeyBy::TargetModel(Arc::clone(&name)));
            let below = layers.classify.layer(client);
            let circuits = layers.circuit.handle();
            if layers.adaptive_limit {
                // The limit and the breaker as one layer: one key lookup,
                // one future, one body wrapper per attempt.
                let below = circuit.with_adaptive_limit().layer(below);
                target_services(&layers.retry, name, circuits, below)
            } else {
                target_services(&layers.retry, name, circuits, circuit.layer(below))
            }
        });
        self.targets.push((settings, make));
        self
    }

    /// Sends requests for a model to the targets `route` names. Without
    /// routes, every request goes to every target in the order they were
    /// added.
    pub fn route(mut self, route: ModelRoute) -> Self {
        self.routes.push(route);
        self
    }

    /// Whether the stack shares its circuit decisions with other replicas.
    fn shares_state(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.shared_state.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// The stack.
    ///
    /// A stack with a single target does not cool its key down on hinted
    /// rate limits (LiteLLM's rule for a deployment alone in its group),
    /// nor count against its breaker overloaded answers or streams that
    /// broke after content (a target that generated is up; the answer is
    /// continued): with nowhere else to go, a cooldown or an open breaker
    /// could only turn a chance of success into a certain failure; the
    /// request's own retry waits the hint or backs off instead, within its
    /// budget. Quota cooldowns stay, and connect failures, timeouts and
    /// server errors still open it. A stack that shares its decisions with
    /// other replicas ([`shared_state`](LlmStack::shared_state)) keeps the
    /// rate-limit cooldown even alone: a 429's `retry-after` is then the
    /// whole fleet's to wait out, and the cooldown is what tells the other
    /// replicas.
    pub fn build(mut self) -> Result<Stack, StackError> {
        if self.targets.len() == 1 {
            let mut alone = self.circuit.to_builder();
            if !self.shares_state() {
                alone = alone.rate_limit_cooldown(false);
            }
            self.circuit = alone
                .count_overload(false)
                .count_after_content(false)
                .build()
                .map_err(|e| StackError(e.to_string()))?;
        }
        let circuit = match self.on_transition {
            Some(f) => CircuitLayer::with_events(self.circuit, move |t: &Transition| f(t)),
            None => CircuitLayer::new(self.circuit),
        };
        let circuits = circuit.handle();
        #[cfg(feature = "redis")]
        let shared_state = shared_state::attach(self.shared_state.take(), &circuits)?;
        let classify = match self.stream_idle_timeout {
            Some(timeout) => self.classify.stream_idle_timeout(timeout),
            None => self.classify,
        };
        let layers = Layers {
            retry: self.retry,
            circuit,
            adaptive_limit: self.adaptive_limit,
            classify,
        };
        let mut targets: Vec<Target<TargetServices>> = Vec::with_capacity(self.targets.len());
        for (settings, make) in self.targets {
            let name: Arc<str> = Arc::from(settings.name());
            if name.is_empty() || name.contains('/') {
                return Err(StackError(format!(
                    "target `{name}`: a name must be non-empty and without `/` \
                     (breaker keys are `target/model`)"
                )));
            }
            if targets.iter().any(|t| t.name() == &*name) {
                return Err(StackError(format!("two targets are named `{name}`")));
            }
            targets.push(settings.map_service(|()| make(&layers, name)));
        }
        if targets.is_empty() {
            return Err(StackError("a stack needs at least one target".into()));
        }
        let fallback = |route: &str, chosen: routes::Grouped| {
            let mut builder = Fallback::builder()
                .name(route)
                .check_availability(Arc::new(availability::PacedOut(circuits.clone())))
                .max_body(self.max_body)
                .continue_streams(self.continue_streams)
                // Each target's service is its retry layer behind type
                // erasure, the request untouched between the two: a target
                // another may follow gets the fallback's one copy of the
                // caller's head, and its retries remake theirs.
                .remake_attempts(true);
            for (strategy, members) in chosen {
                builder = builder.group(strategy, members);
            }
            if let Some(seed) = self.seed {
                builder = builder.seed(seed);
            }
            if let Some((delay, ratio)) = self.hedge {
                builder = builder.hedge(delay, ratio);
            }
            if let Some(on) = self.move_on_authentication {
                builder = builder.move_on_authentication(on);
            }
            if let Some(on) = self.move_on_invalid_request {
                builder = builder.move_on_invalid_request(on);
            }
            builder.build().map_err(|e| StackError(e.to_string()))
        };
        let mut routes = Routes {
            exact: HashMap::new(),
            prefixes: Vec::new(),
            default: None,
            max_body: self.max_body,
        };
        if self.routes.is_empty() {
            routes.default = Some(fallback("*", in_route_order(targets))?);
        } else {
            for route in &self.routes {
                let chosen = route_targets(route, &targets)?;
                let model = route.model.trim();
                let service = fallback(model, chosen)?;
                let taken = if model == "*" {
                    routes.default.replace(service).is_some()
                } else if let Some(prefix) = model.strip_suffix('*') {
                    let taken = routes.prefixes.iter().any(|(p, _)| &**p == prefix);
                    routes.prefixes.push((prefix.into(), service));
                    taken
                } else {
                    routes.exact.insert(model.into(), service).is_some()
                };
                if model.is_empty() || taken {
                    return Err(StackError(format!(
                        "route `{model}`: a route needs a model, once"
                    )));
                }
            }
            // The longest prefix wins.
            routes
                .prefixes
                .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        }
        Ok(Stack {
            routes: Arc::new(routes),
            circuits,
            #[cfg(feature = "redis")]
            shared_state,
        })
    }
}
