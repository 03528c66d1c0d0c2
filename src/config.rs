//! One configuration value for the whole stack: preset, layer settings,
//! targets and routes; from TOML (or any serde format), overridable from
//! environment variables, with errors that name the key and the reason.
//!
//! ```
//! use tower_llm::config::StackConfig;
//!
//! let config = StackConfig::from_toml(r#"
//!     preset = "high_availability"
//!
//!     [retry]
//!     max_attempts = 4
//!
//!     [[targets]]
//!     name = "openai"
//!     base_url = "https://api.openai.com/v1"
//!     api_key_env = "OPENAI_API_KEY"
//!
//!     [[targets]]
//!     name = "local"
//!     provider = "ollama"
//!     base_url = "http://127.0.0.1:11434/v1"
//!     model = "llama3.2"
//!
//!     [[routes]]
//!     model = "gpt-4o"
//!     targets = ["openai", "local"]
//! "#).unwrap();
//! assert_eq!(config.targets.len(), 2);
//!
//! // Deployment groups: one model on three keys, picked by latency, then a
//! // local model when all three are down, cooling down or paced out.
//! let config = StackConfig::from_toml(r#"
//!     [[targets]]
//!     name = "azure-eu"
//!     base_url = "https://eu.example.openai.azure.com/openai/v1"
//!     [[targets]]
//!     name = "azure-us"
//!     base_url = "https://us.example.openai.azure.com/openai/v1"
//!     [[targets]]
//!     name = "openai"
//!     base_url = "https://api.openai.com/v1"
//!     weight = 2
//!     [[targets]]
//!     name = "local"
//!     base_url = "http://127.0.0.1:11434/v1"
//!
//!     [[routes]]
//!     model = "gpt-4o"
//!     groups = [
//!         { strategy = "latency", targets = ["azure-eu", "azure-us", "openai"] },
//!         { targets = ["local"] },
//!     ]
//! "#).unwrap();
//! assert_eq!(config.routes[0].groups[0].targets.len(), 3);
//!
//! let error = StackConfig::from_toml("[retry]\nmax_attemps = 4").unwrap_err();
//! assert!(error.to_string().contains("max_attemps"), "{error}");
//! ```
//!
//! # Environment variables
//!
//! [`StackConfig::from_env`](crate::config::StackConfig::from_env) applies, over the file:
//!
//! | variable | sets |
//! |---|---|
//! | `TOWER_LLM_PRESET` | `preset` |
//! | `TOWER_LLM_RETRY_*` | `[retry]` (see [`tower_llm_retry::ENV_VARS`]) |
//! | `TOWER_LLM_CIRCUIT_*` | `[circuit]` (see [`tower_llm_circuit::ENV_VARS`]) |
//! | `TOWER_LLM_HEDGE_DELAY_MS`, `TOWER_LLM_HEDGE_RATIO` | `[fallback] hedge_delay_ms`, `hedge_ratio` |
//! | `TOWER_LLM_MAX_BODY_BYTES` | `[fallback] max_body_bytes` |
//! | `TOWER_LLM_STREAM_IDLE_TIMEOUT_MS` | `[classify] stream_idle_timeout_ms` |
//!
//! Keys are never in the file: a target names the variable that holds its
//! key (`api_key_env`), read when the stack is built.
//!
//! # Timeouts
//!
//! Every preset bounds how long a target may stay silent; the keys, all
//! in milliseconds:
//!
//! | key | bounds | `sdk_default` |
//! |---|---|---|
//! | `[retry] stream_head_timeout_ms` | a streamed request's wait for its response head | 30 s |
//! | `[retry] attempt_timeout_ms` | one attempt: its head, a stream's first content, a whole answer's end | 600 s |
//! | `[retry] first_content_timeout_ms` | a streamed request's wait for its first content | none |
//! | `[classify] stream_idle_timeout_ms` | a stream's time without a content event (pings do not count), after its first | 60 s |
//! | `[retry] deadline_ms` | all attempts and waits on one target | none |
//!
//! A silent attempt (no head, or no first content, in time) goes to the
//! next target of its route at once; the route's last target retries it.
//! Why these figures, and the other presets', is in
//! [`Preset`](crate::stack::Preset)'s docs.
//!
//! ```
//! use tower_llm::config::StackConfig;
//!
//! // Models that answer fast: move on after 20 s without a first token,
//! // end a stream silent for 30 s after its first token.
//! let config = StackConfig::from_toml(r#"
//!     [retry]
//!     first_content_timeout_ms = 20000
//!
//!     [classify]
//!     stream_idle_timeout_ms = 30000
//! "#).unwrap();
//! assert_eq!(config.stream_idle_timeout().unwrap().as_secs(), 30);
//! ```

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tower_llm_circuit::CircuitSettings;
use tower_llm_classify::env::parse_var;
use tower_llm_fallback::{Strategy, TargetSettings};
use tower_llm_retry::RetrySettings;

use crate::stack::{LlmStack, ModelRoute, Preset};

/// The whole stack as data.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StackConfig {
    /// `sdk_default` (the default), `high_availability`, `cost_sensitive`
    /// or `development`: the starting point of `[retry]` and `[circuit]`.
    pub preset: Option<String>,
    /// The retry settings over the preset's.
    pub retry: RetrySettings,
    /// The breaker settings over the preset's.
    pub circuit: CircuitSettings,
    /// How streams are read (the stream idle timeout).
    pub classify: ClassifyOptions,
    /// What moves on, hedging, body limit.
    pub fallback: FallbackOptions,
    /// The targets (`[[targets]]`).
    pub targets: Vec<TargetSettings>,
    /// Which targets serve which model (`[[routes]]`); without routes every
    /// request goes to every target in order.
    pub routes: Vec<RouteSettings>,
}

/// The `[fallback]` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FallbackOptions {
    /// Whether a 401 moves on (default true: it is about the target's key).
    pub move_on_authentication: Option<bool>,
    /// Whether an invalid request moves on (default false).
    pub move_on_invalid_request: Option<bool>,
    /// Hedge to the next target after this many milliseconds without an
    /// answer (off when absent).
    pub hedge_delay_ms: Option<u64>,
    /// The largest fraction of calls that may hedge (default 0.1).
    pub hedge_ratio: Option<f64>,
    /// The largest request body read, in bytes (default 32 MiB).
    pub max_body_bytes: Option<usize>,
    /// How many times a streamed answer that breaks after content is
    /// continued by a target that can (default 4; 0: never).
    pub continue_streams: Option<u32>,
}

/// The `[classify]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClassifyOptions {
    /// How long a stream may go without a content event (pings and SSE
    /// comments do not count) before it fails, in milliseconds, counted
    /// from the response head (the preset's when absent; see
    /// [`LlmStack::stream_idle_timeout`]).
    pub stream_idle_timeout_ms: Option<u64>,
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteSettings {
    /// The model: exact, a prefix ending in `*`, or `*` for the rest.
    pub model: String,
    /// The targets, in order (each a group of one; or give `groups`).
    pub targets: Vec<String>,
    /// Groups of equivalent targets, in order (`[[routes.groups]]`): each
    /// request goes to the member the group's strategy picks among those
    /// available, then the others, before the next group.
    pub groups: Vec<GroupSettings>,
    /// Targets with a larger context window, for requests too long for the
    /// ones before.
    pub context_length: Vec<String>,
    /// Targets for requests an earlier target's content policy refused.
    pub content_filter: Vec<String>,
}

/// One `[[routes.groups]]` entry: deployments of one model, one picked
/// per request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GroupSettings {
    /// `latency` (the default: the power of two choices over a peak-EWMA
    /// of latency, weighed by the share of each deployment's rate limits
    /// left where they are known), `least_busy` (fewest requests in flight) or
    /// `weighted` (by each target's `weight`).
    pub strategy: Option<String>,
    /// The members (target names).
    pub targets: Vec<String>,
}

/// A configuration that cannot be used: the key (or variable) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    fn at(section: &str, error: impl fmt::Display) -> Self {
        ConfigError(format!("[{section}] {error}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The environment variables [`StackConfig::from_env`] reads itself (the
/// layers' own are listed in their crates).
pub const ENV_VARS: [&str; 5] = [
    "TOWER_LLM_PRESET",
    "TOWER_LLM_HEDGE_DELAY_MS",
    "TOWER_LLM_HEDGE_RATIO",
    "TOWER_LLM_MAX_BODY_BYTES",
    "TOWER_LLM_STREAM_IDLE_TIMEOUT_MS",
];

impl StackConfig {
    /// Parses TOML. Errors give the line, the key and the reason
    /// (unknown keys are refused, so a typo does not go unnoticed).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Overrides from the process environment (see the module docs).
    pub fn from_env(self) -> Result<Self, ConfigError> {
        self.from_env_with(|name| std::env::var(name).ok())
    }

    /// Overrides from `lookup` (the environment, or a map in tests).
    pub fn from_env_with(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = |e: String| ConfigError(format!("environment: {e}"));
        if let Some(preset) = lookup(ENV_VARS[0]) {
            preset
                .parse::<Preset>()
                .map_err(|e| env(format!("{}: {e}", ENV_VARS[0])))?;
            self.preset = Some(preset.trim().to_owned());
        }
        let f = &mut self.fallback;
        f.hedge_delay_ms = parse_var(ENV_VARS[1], &lookup)
            .map_err(env)?
            .or(f.hedge_delay_ms);
        f.hedge_ratio = parse_var(ENV_VARS[2], &lookup)
            .map_err(env)?
            .or(f.hedge_ratio);
        f.max_body_bytes = parse_var(ENV_VARS[3], &lookup)
            .map_err(env)?
            .or(f.max_body_bytes);
        let c = &mut self.classify;
        c.stream_idle_timeout_ms = parse_var(ENV_VARS[4], &lookup)
            .map_err(env)?
            .or(c.stream_idle_timeout_ms);
        self.retry = self
            .retry
            .from_env_with(&lookup)
            .map_err(|e| env(e.to_string()))?;
        self.circuit = self
            .circuit
            .from_env_with(&lookup)
            .map_err(|e| env(e.to_string()))?;
        Ok(self)
    }

    /// The preset, checked.
    pub fn preset(&self) -> Result<Preset, ConfigError> {
        self.preset
            .as_deref()
            .map_or(Ok(Preset::SdkDefault), str::parse)
            .map_err(|e| ConfigError(format!("preset: {e}")))
    }

    /// The stream idle timeout the stack will have: `[classify]
    /// stream_idle_timeout_ms`, else the preset's.
    pub fn stream_idle_timeout(&self) -> Result<Duration, ConfigError> {
        match self.classify.stream_idle_timeout_ms {
            Some(0) => Err(ConfigError::at(
                "classify",
                "stream_idle_timeout_ms: 0 would end every stream at once; give milliseconds \
                 (at least 1; a very large value means no limit in practice)",
            )),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(self.preset()?.stream_idle_timeout()),
        }
    }

    /// The retry policy: `[retry]` over the stack preset's (timeouts
    /// included), or over the preset `[retry] preset` names.
    fn retry_policy(&self, preset: Preset) -> Result<tower_llm_retry::RetryPolicy, ConfigError> {
        let start = match self.retry.preset.as_deref() {
            Some(name) => name
                .parse::<Preset>()
                .map_err(|e| ConfigError::at("retry", format!("preset: {e}")))?,
            None => preset,
        };
        self.retry
            .apply_to(start.retry().to_builder())
            .build()
            .map_err(|e| ConfigError::at("retry", e))
    }

    /// The stack this describes over `client` (one client for every
    /// target: a hyper-util client with TLS, a
    /// [`ReqwestClient`](crate::stack::ReqwestClient), …), keys read from
    /// the process environment. More targets can be added to the returned
    /// builder before [`build`](LlmStack::build).
    pub fn stack<C, B>(&self, client: C) -> Result<LlmStack, ConfigError>
    where
        C: tower_service::Service<
                http::Request<tower_llm_retry::ReplayBody>,
                Response = http::Response<B>,
            > + Clone
            + Send
            + Sync
            + 'static,
        C::Future: Send + 'static,
        C::Error: Into<tower_llm_classify::BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tower_llm_classify::BoxError>,
    {
        self.stack_with_env(client, |name| std::env::var(name).ok())
    }

    /// As [`stack`](StackConfig::stack), keys read with `env`.
    pub fn stack_with_env<C, B>(
        &self,
        client: C,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LlmStack, ConfigError>
    where
        C: tower_service::Service<
                http::Request<tower_llm_retry::ReplayBody>,
                Response = http::Response<B>,
            > + Clone
            + Send
            + Sync
            + 'static,
        C::Future: Send + 'static,
        C::Error: Into<tower_llm_classify::BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tower_llm_classify::BoxError>,
    {
        let preset = self.preset()?;
        let retry = self.retry_policy(preset)?;
        let idle = self.stream_idle_timeout()?;
        let mut circuit = self.circuit.clone();
        circuit.preset = circuit
            .preset
            .or_else(|| Some(preset.circuit_preset().to_owned()));
        let circuit = circuit.build().map_err(|e| ConfigError::at("circuit", e))?;
        // A stack's keys are `target/model`: a pace limit for a name no
        // target has (a typo) would pace nothing, silently.
        if !self.targets.is_empty() {
            for key in self.circuit.pace_limits.keys() {
                let target = key.split('/').next().unwrap_or(key);
                if !self.targets.iter().any(|t| t.name == target) {
                    let known: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
                    return Err(ConfigError(format!(
                        "[circuit.pace_limits] `{key}`: no target is named `{target}` (targets: {})",
                        known.join(", ")
                    )));
                }
            }
        }

        let mut stack = LlmStack::preset(preset)
            .retry(retry)
            .circuit(circuit)
            .stream_idle_timeout(idle);
        let f = &self.fallback;
        if let Some(on) = f.move_on_authentication {
            stack = stack.move_on_authentication(on);
        }
        if let Some(on) = f.move_on_invalid_request {
            stack = stack.move_on_invalid_request(on);
        }
        if let Some(bytes) = f.max_body_bytes {
            stack = stack.max_body(bytes);
        }
        if let Some(times) = f.continue_streams {
            stack = stack.continue_streams(times);
        }
        match (f.hedge_delay_ms, f.hedge_ratio) {
            (_, Some(ratio)) if !(0.0..=1.0).contains(&ratio) => {
                return Err(ConfigError::at(
                    "fallback",
                    format!("hedge_ratio: {ratio} is not between 0 and 1"),
                ));
            }
            (Some(ms), ratio) => {
                stack = stack.hedge(Duration::from_millis(ms), ratio.unwrap_or(0.1));
            }
            (None, Some(_)) => {
                return Err(ConfigError::at(
                    "fallback",
                    "hedge_ratio: set hedge_delay_ms too, or hedging stays off",
                ));
            }
            (None, None) => {}
        }
        if self.targets.is_empty() {
            return Err(ConfigError(
                "targets: at least one [[targets]] entry is needed".into(),
            ));
        }
        for (i, settings) in self.targets.iter().enumerate() {
            if settings.base_url.is_none() {
                return Err(ConfigError(format!(
                    "targets[{i}] (`{}`): base_url is required",
                    settings.name
                )));
            }
            // The settings are applied (and checked) now, so an error is
            // about the file and not the build; the service comes later.
            let prepared = settings
                .apply(
                    tower_llm_fallback::Target::new(settings.name.as_str(), ()),
                    &env,
                )
                .map_err(|e| ConfigError(format!("targets[{i}]: {e}")))?;
            stack = stack.target(&settings.name, client.clone(), |_| prepared);
        }
        for (i, route) in self.routes.iter().enumerate() {
            if route.model.trim().is_empty() {
                return Err(ConfigError(format!(
                    "routes[{i}]: model is required (a name, `prefix*` or `*`)"
                )));
            }
            if !route.targets.is_empty() && !route.groups.is_empty() {
                return Err(ConfigError(format!(
                    "routes[{i}] (`{}`): give targets or groups, not both \
                     (a target alone is a group: `{{ targets = [\"name\"] }}`)",
                    route.model
                )));
            }
            let mut model_route = ModelRoute::new(route.model.clone(), route.targets.clone());
            for (g, group) in route.groups.iter().enumerate() {
                let strategy = match group.strategy.as_deref() {
                    Some(name) => name
                        .parse::<Strategy>()
                        .map_err(|e| ConfigError(format!("routes[{i}].groups[{g}]: {e}")))?,
                    None => Strategy::default(),
                };
                if group.targets.is_empty() {
                    return Err(ConfigError(format!(
                        "routes[{i}].groups[{g}]: a group needs at least one target"
                    )));
                }
                model_route = model_route.group(strategy, group.targets.clone());
            }
            stack = stack.route(
                model_route
                    .context_length(route.context_length.clone())
                    .content_filter(route.content_filter.clone()),
            );
        }
        Ok(stack)
    }

    /// The stack this describes, built.
    pub fn build<C, B>(&self, client: C) -> Result<crate::stack::Stack, ConfigError>
    where
        C: tower_service::Service<
                http::Request<tower_llm_retry::ReplayBody>,
                Response = http::Response<B>,
            > + Clone
            + Send
            + Sync
            + 'static,
        C::Future: Send + 'static,
        C::Error: Into<tower_llm_classify::BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tower_llm_classify::BoxError>,
    {
        self.stack(client)?
            .build()
            .map_err(|e| ConfigError(e.to_string()))
    }
}
