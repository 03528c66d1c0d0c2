//! The gateway's own settings: the `[gateway]` section of its file, checked
//! into [`GatewayOptions`] (every error names its key; nothing panics on a
//! bad or huge value).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tower_llm::config::StackConfig;

use crate::auth::CallerKeys;
use crate::limits::{RateLimitSection, RateLimits};
use crate::shared::SharedSection;
use crate::telemetry::TelemetrySection;

/// The most requests in flight a gateway may be configured for.
pub const MAX_CONCURRENCY: usize = 1_000_000;

/// The longest any of the gateway's timeouts is taken to be: a value past
/// it (up to `Duration::MAX`) means "no limit in practice", and clamping
/// keeps `Instant + timeout` well inside what every platform's clock can
/// represent (hyper adds the header timeout to `now()` unchecked).
pub const LONGEST_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The `[gateway]` section of the configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySection {
    /// Where to listen (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Requests (and streams) in flight at once; more are refused with 503.
    pub max_concurrency: Option<usize>,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: Option<usize>,
    /// The largest request body, in bytes; larger ones get 413.
    pub max_body_bytes: Option<usize>,
    /// How long in-flight requests and streams may run on after a shutdown
    /// signal.
    pub shutdown_grace_ms: Option<u64>,
    /// How long a caller may take to send a request head (and how long an
    /// idle keep-alive connection stays open).
    pub header_read_timeout_ms: Option<u64>,
    /// How long a caller may take to send a whole request body; then 408.
    pub request_body_timeout_ms: Option<u64>,
    /// How long a response may go without a byte from upstream before it is
    /// ended; at least the stack's stream idle timeout (see
    /// [`GatewaySection::fit_idle_timeout`]).
    pub stream_idle_timeout_ms: Option<u64>,
    /// How long a write to a caller may make no progress (the caller does
    /// not read) before the connection is closed.
    pub send_timeout_ms: Option<u64>,
    /// The environment variable holding the keys callers must send
    /// (comma-separated).
    pub api_keys_env: Option<String>,
    /// Listen beyond loopback without caller keys (something in front of
    /// the gateway authenticates callers).
    pub allow_unauthenticated: Option<bool>,
    /// `GET /health/ready` answers 503 while some route has no target
    /// able to take traffic (default `false`: 200, the route named as
    /// degraded). See [`GatewayOptions::ready_requires_upstreams`].
    pub ready_requires_upstreams: Option<bool>,
    /// The file's `[telemetry]` section (a table of its own beside
    /// `[gateway]`, read by [`parse_file`]).
    #[serde(skip)]
    pub telemetry: TelemetrySection,
    /// The file's `[shared]` section: circuit decisions shared with other
    /// replicas through Redis (read by [`parse_file`]).
    #[serde(skip)]
    pub shared: SharedSection,
    /// Requests and tokens per minute, per caller key and endpoint
    /// (`[gateway.rate_limits]`).
    pub rate_limits: Option<RateLimitSection>,
}

/// How the gateway's own side behaves.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Requests (and streams) in flight at once.
    pub max_concurrency: usize,
    /// Connections open at once. Bodies are read before a request takes
    /// one of the `max_concurrency` slots, so this (times `max_body_bytes`)
    /// is what bounds the memory slow senders can hold.
    pub max_connections: usize,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// The grace period after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The time a caller has to send a request head; an idle keep-alive
    /// connection is closed after it too (hyper's
    /// `http1::Builder::header_read_timeout`).
    pub header_read_timeout: Duration,
    /// The time a caller has to send the whole request body, counted from
    /// the end of its head.
    pub request_body_timeout: Duration,
    /// The longest a response body may go without a byte from upstream: a
    /// backstop behind the stack's own (content) idle timeout, which fires
    /// first (see [`GatewaySection::fit_idle_timeout`]).
    pub stream_idle_timeout: Duration,
    /// The longest a write to the caller may make no progress.
    pub send_timeout: Duration,
    /// The keys callers must send; `None`: anyone who can connect is served.
    pub caller_keys: Option<CallerKeys>,
    /// Serve beyond loopback without caller keys.
    pub allow_unauthenticated: bool,
    /// Whether `GET /health/ready` fails (503) while a route has no target
    /// able to take traffic (every breaker of every target open).
    ///
    /// Off by default: a provider's outage is seen by every replica alike
    /// (at once, with `[shared]`), so failing readiness on it takes the
    /// whole fleet out of rotation together; callers then meet the load
    /// balancer's bare 503 instead of the gateway's own answer, and the
    /// routes whose providers are up go dark with the one that is down.
    /// Readiness then says 200 with `"status": "degraded"` and the routes.
    /// On for replicas that see providers differently, as in several
    /// regions behind one global load balancer: a region that cannot reach
    /// a provider leaves rotation while another can.
    pub ready_requires_upstreams: bool,
    /// Requests and tokens per minute, per caller key and endpoint (none
    /// by default).
    pub rate_limits: RateLimits,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_concurrency: 1024,
            max_connections: 4096,
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            // hyper's own default, once a timer is given.
            header_read_timeout: Duration::from_secs(30),
            request_body_timeout: Duration::from_secs(30),
            // Long: a reasoning model may think for minutes before its
            // first token, and the retry layer's own timeouts cover the
            // wait for the response head. Raised to the stack's stream
            // idle timeout when that is longer (`fit_idle_timeout`).
            stream_idle_timeout: Duration::from_secs(300),
            // nginx's `send_timeout` (60 s between two successive writes).
            send_timeout: Duration::from_secs(60),
            caller_keys: None,
            allow_unauthenticated: false,
            ready_requires_upstreams: false,
            rate_limits: RateLimits::default(),
        }
    }
}

impl GatewayOptions {
    /// Refuses to serve callers on a non-loopback `addr` without caller
    /// keys, unless `allow_unauthenticated` says so.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), String> {
        let loopback = addr.ip().to_canonical().is_loopback();
        if loopback || self.caller_keys.is_some() || self.allow_unauthenticated {
            return Ok(());
        }
        Err(format!(
            "refusing to listen on {addr} without caller keys: anyone who can reach it would \
             spend the upstream keys. Set [gateway] api_keys_env to an environment variable \
             holding the keys callers must send (comma-separated), or listen on 127.0.0.1, or \
             set [gateway] allow_unauthenticated = true if something in front of the gateway \
             authenticates callers"
        ))
    }
}

impl GatewaySection {
    /// The options, checked, with caller keys from the process environment.
    pub fn options(&self) -> Result<GatewayOptions, String> {
        self.options_with_env(|name| std::env::var(name).ok())
    }

    /// The options, checked, with caller keys from `env`.
    pub fn options_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<GatewayOptions, String> {
        let mut options = GatewayOptions::default();
        if let Some(listen) = &self.listen {
            options.listen = listen.parse().map_err(|_| {
                format!("[gateway] listen: `{listen}` is not an address like 127.0.0.1:8080")
            })?;
        }
        if let Some(n) = self.max_concurrency {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(format!(
                    "[gateway] max_concurrency: {n} is not between 1 and {MAX_CONCURRENCY}"
                ));
            }
            options.max_concurrency = n;
        }
        if let Some(n) = self.max_connections {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(format!(
                    "[gateway] max_connections: {n} is not between 1 and {MAX_CONCURRENCY}"
                ));
            }
            options.max_connections = n;
        }
        if let Some(bytes) = self.max_body_bytes {
            options.max_body_bytes = bytes;
        }
        if let Some(ms) = self.shutdown_grace_ms {
            options.shutdown_grace = Duration::from_millis(ms);
        }
        let timeouts = [
            (
                "header_read_timeout_ms",
                self.header_read_timeout_ms,
                &mut options.header_read_timeout,
            ),
            (
                "request_body_timeout_ms",
                self.request_body_timeout_ms,
                &mut options.request_body_timeout,
            ),
            (
                "stream_idle_timeout_ms",
                self.stream_idle_timeout_ms,
                &mut options.stream_idle_timeout,
            ),
            (
                "send_timeout_ms",
                self.send_timeout_ms,
                &mut options.send_timeout,
            ),
        ];
        for (key, ms, field) in timeouts {
            match ms {
                None => {}
                Some(0) => {
                    return Err(format!(
                        "[gateway] {key}: 0 would time out at once; give milliseconds (at \
                         least 1; a very large value means no limit in practice)"
                    ));
                }
                Some(ms) => *field = Duration::from_millis(ms),
            }
        }
        if let Some(name) = &self.api_keys_env {
            options.caller_keys = Some(CallerKeys::from_env(name, env(name))?);
        }
        options.allow_unauthenticated = self.allow_unauthenticated.unwrap_or(false);
        options.ready_requires_upstreams = self.ready_requires_upstreams.unwrap_or(false);
        if let Some(limits) = &self.rate_limits {
            options.rate_limits = limits.limits()?;
        }
        Ok(options)
    }

    /// Fits the gateway's idle timer to the stack's, so that the two never
    /// contradict each other: the stack's fires first.
    ///
    /// The stack's (`[classify] stream_idle_timeout_ms`, or the preset's)
    /// counts time without *content*: its timer starts at the upstream's
    /// response head and only a content event resets it, so a stream kept
    /// alive by pings is still ended, with a typed `stream_incomplete`
    /// error that says why (and, before content, the next target is
    /// tried). The gateway's counts time without *bytes*: its timer starts
    /// when the stack hands the response over and any byte resets it. Over
    /// any stretch of silence the stack's timer was last reset no later
    /// than the gateway's, so with a gateway limit at least the stack's,
    /// the stack's fires first (at the same instant it still wins: the
    /// gateway reads the stack's body before its own timer). The gateway's
    /// stays a backstop for what the stack does not watch: bodies that are
    /// not SSE or NDJSON streams.
    ///
    /// Unset, the gateway's is raised to the stack's when that is longer;
    /// set shorter than the stack's, it is refused: it would cut a silent
    /// stream with a bare connection error before the stack could report
    /// (or, later, continue) it.
    pub fn fit_idle_timeout(
        &self,
        options: &mut GatewayOptions,
        stack_idle: Duration,
    ) -> Result<(), String> {
        let stack_idle = stack_idle.min(LONGEST_TIMEOUT);
        match self.stream_idle_timeout_ms {
            None => {
                options.stream_idle_timeout = options.stream_idle_timeout.max(stack_idle);
                Ok(())
            }
            Some(_) if options.stream_idle_timeout < stack_idle => Err(format!(
                "[gateway] stream_idle_timeout_ms ({} ms) is shorter than the stack's stream \
                 idle timeout ({} ms: [classify] stream_idle_timeout_ms, or the preset's): the \
                 gateway would cut a silent stream before the stack can say why. Raise it to \
                 at least {} or lower [classify] stream_idle_timeout_ms",
                options.stream_idle_timeout.as_millis(),
                stack_idle.as_millis(),
                stack_idle.as_millis()
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Splits a gateway file into its `[gateway]` section (with `[telemetry]`
/// in [`GatewaySection::telemetry`], `[shared]` in
/// [`GatewaySection::shared`]) and the stack's configuration (every
/// other key), each checked for unknown keys.
pub fn parse_file(text: &str) -> Result<(GatewaySection, StackConfig), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut gateway = match table.remove("gateway") {
        Some(value) => value
            .try_into::<GatewaySection>()
            .map_err(|e| format!("[gateway] {e}"))?,
        None => GatewaySection::default(),
    };
    if let Some(value) = table.remove("telemetry") {
        gateway.telemetry = value
            .try_into::<TelemetrySection>()
            .map_err(|e| format!("[telemetry] {e}"))?;
    }
    if let Some(value) = table.remove("shared") {
        gateway.shared = value
            .try_into::<SharedSection>()
            .map_err(|e| format!("[shared] {e}"))?;
    }
    let stack = toml::Value::Table(table)
        .try_into::<StackConfig>()
        .map_err(|e| e.to_string())?;
    Ok((gateway, stack))
}
