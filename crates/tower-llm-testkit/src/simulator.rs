//! The simulator: a real HTTP/1.1 server on loopback, and its handle.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::capacity::{Capacity, Gate};
use crate::delay::Delay;
use crate::plan::FaultPlan;
use crate::prefill::{PrefillMode, PrefillModes};
use crate::record::{RecordedRequest, Stats};
use crate::reply::ReplyText;
use crate::server::{self, ActivePlan, Config, Shared};

/// The reply every healthy answer carries unless told otherwise.
const DEFAULT_REPLY: &str = "This is a simulated reply from tower-llm-testkit.";

/// A simulated LLM provider on `127.0.0.1`, serving OpenAI, Anthropic and
/// Ollama chat APIs, with faults chosen by a [`FaultPlan`].
///
/// It runs inside the current Tokio runtime (any flavour, paused time
/// included); dropping it closes the listener and every connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};
///
/// let sim = Simulator::builder()
///     .plan(FaultPlan::script([Fault::rate_limited(Duration::from_secs(2)), Fault::ok()]))
///     .start()
///     .await?;
/// let url = sim.url(Api::OpenAiChat); // http://127.0.0.1:PORT/v1/chat/completions
/// # assert!(url.starts_with("http://127.0.0.1:"));
///
/// // ... point a client at `url`; request 0 gets a 429, request 1 an answer ...
///
/// // Later, from the test: an outage starts, then ends.
/// sim.set_plan(FaultPlan::always(Fault::overloaded()));
/// sim.set_plan(FaultPlan::healthy());
/// assert_eq!(sim.requests().len(), 0);
/// sim.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<Server>>,
}

/// The running accept loop: dropping `stop` ends it.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Simulator {
    /// A builder with the defaults: healthy plan, no latency, unlimited
    /// capacity, recording on, any port.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    /// Starts a healthy simulator on an ephemeral port.
    pub async fn start() -> io::Result<Simulator> {
        Simulator::builder().start().await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full URL of `api`'s endpoint.
    pub fn url(&self, api: Api) -> String {
        format!("http://{}{}", self.addr, api.path())
    }

    /// The text every healthy answer carries, whole: an answer to a
    /// prefilled request is the part of it after the prefill, so a
    /// continued answer can be compared with it byte for byte.
    pub fn reply(&self) -> &str {
        self.shared.config.reply.text()
    }

    /// Installs a new plan; its request count starts at 0.
    pub fn set_plan(&self, plan: impl Into<FaultPlan>) {
        let active = ActivePlan::new(plan.into());
        *self.shared.plan.write().unwrap_or_else(|p| p.into_inner()) = active;
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.shared
            .plan
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .plan
            .clone()
    }

    /// Sets the latency every request gets before its headers (on top of
    /// its fault's own latency and the service time).
    pub fn set_latency(&self, latency: impl Into<Delay>) {
        *self
            .shared
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = latency.into();
    }

    /// Sets (or with `None` lifts) the capacity limit. Lowering it does not
    /// interrupt requests already in service; raising it admits waiters at once.
    pub fn set_capacity(&self, capacity: Option<Capacity>) {
        self.shared.gate.set_capacity(capacity);
    }

    /// The capacity limit in force.
    pub fn capacity(&self) -> Option<Capacity> {
        self.shared.gate.capacity()
    }

    /// Every request received so far (not `/health`), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.snapshot()
    }

    /// Every request received so far, clearing the record.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.take()
    }

    /// Counters of what was received and answered.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot(self.shared.gate.in_service())
    }

    /// Whether it is accepting connections.
    pub fn is_listening(&self) -> bool {
        self.lock_server().is_some()
    }

    /// Stops listening and closes every open connection, as a crashed
    /// provider does: new connections are refused until
    /// [`start_listening`](Self::start_listening). Returns once the port is
    /// closed.
    pub async fn stop_listening(&self) {
        let server = self.lock_server().take();
        if let Some(Server { stop, task }) = server {
            drop(stop);
            let _ = task.await;
        }
    }

    /// Listens again on the same address after
    /// [`stop_listening`](Self::stop_listening).
    pub async fn start_listening(&self) -> io::Result<()> {
        if self.is_listening() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        let server = spawn(listener, Arc::clone(&self.shared));
        *self.lock_server() = Some(server);
        Ok(())
    }

    /// Stops the server and waits until the listener and every connection
    /// are closed. Dropping the simulator does the same without waiting.
    pub async fn shutdown(self) {
        self.stop_listening().await;
    }

    fn lock_server(&self) -> std::sync::MutexGuard<'_, Option<Server>> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // Dropping the sender ends the accept loop, which closes every connection.
        self.lock_server().take();
    }
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .field("listening", &self.is_listening())
            .field("plan", &self.plan().to_string())
            .finish_non_exhaustive()
    }
}

fn spawn(listener: TcpListener, shared: Arc<Shared>) -> Server {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, shared, stopped));
    Server { stop, task }
}

/// Configures a [`Simulator`].
#[derive(Clone)]
pub struct SimulatorBuilder {
    addr: SocketAddr,
    plan: FaultPlan,
    latency: Delay,
    token_delay: Delay,
    capacity: Option<Capacity>,
    seed: u64,
    reply: ReplyText,
    prefill: PrefillModes,
    api_key: Option<String>,
    context_window: Option<u64>,
    keepalive_interval: Duration,
    max_body: usize,
    record: bool,
    rate_limits: Option<crate::ProviderLimits>,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        SimulatorBuilder {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            plan: FaultPlan::healthy(),
            latency: Delay::ZERO,
            token_delay: Delay::ZERO,
            capacity: None,
            seed: 0,
            reply: split_reply(DEFAULT_REPLY),
            prefill: PrefillModes::default(),
            api_key: None,
            context_window: None,
            // Anthropic pings roughly every 10–15 s; shorter keeps tests quick.
            keepalive_interval: Duration::from_secs(5),
            // Anthropic's Messages limit is 32 MB (413 `request_too_large`,
            // platform.claude.com/docs/en/api/errors).
            max_body: 32 * 1024 * 1024,
            record: true,
            rate_limits: None,
        }
    }
}

impl fmt::Debug for SimulatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorBuilder")
            .field("addr", &self.addr)
            .field("plan", &self.plan.to_string())
            .field("latency", &self.latency)
            .field("token_delay", &self.token_delay)
            .field("capacity", &self.capacity)
            .field("seed", &self.seed)
            .field("reply_events", &self.reply.event_count())
            .field("prefill", &self.prefill)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("context_window", &self.context_window)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("max_body", &self.max_body)
            .field("record", &self.record)
            .finish()
    }
}

impl SimulatorBuilder {
    /// Listens on `addr` instead of `127.0.0.1:0`.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The fault plan (healthy by default).
    pub fn plan(mut self, plan: impl Into<FaultPlan>) -> Self {
        self.plan = plan.into();
        self
    }

    /// Latency of every request before its headers.
    pub fn latency(mut self, latency: impl Into<Delay>) -> Self {
        self.latency = latency.into();
        self
    }

    /// The delay between streamed events of every answer whose fault sets
    /// none (none by default).
    pub fn token_delay(mut self, delay: impl Into<Delay>) -> Self {
        self.token_delay = delay.into();
        self
    }

    /// A capacity limit (unlimited by default).
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The seed of latency draws and request ids (0 by default). The seed
    /// of a random plan is the plan's own.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The text of every healthy answer; each word (with its following
    /// space) is one streamed content event.
    pub fn reply(mut self, text: &str) -> Self {
        self.reply = split_reply(text);
        self
    }

    /// A reply of exactly `n` content events (`"token0 "`, `"token1 "`, …),
    /// for stream tests and throughput runs.
    pub fn reply_tokens(mut self, n: usize) -> Self {
        self.reply = ReplyText::new((0..n).map(|i| format!("token{i} ")));
        self
    }

    /// What every API does with a request that carries a prefill (the
    /// start of the assistant's answer): [`PrefillMode::Continue`] by
    /// default, so that continuation can be tested against any API. A
    /// fault's [`with_prefill`](crate::Fault::with_prefill) overrides it
    /// for the requests that get that fault.
    pub fn prefill(mut self, mode: PrefillMode) -> Self {
        for api in Api::ALL {
            self.prefill.set(api, mode);
        }
        self
    }

    /// What `api` does with a prefill, the other APIs unchanged: e.g.
    /// `prefill_for(Api::OpenAiChat, PrefillMode::Ignore)` for OpenAI's own
    /// API, which has no prefill.
    pub fn prefill_for(mut self, api: Api, mode: PrefillMode) -> Self {
        self.prefill.set(api, mode);
        self
    }

    /// Requires this API key (as `authorization: Bearer`, `x-api-key` or
    /// `api-key`); other requests get 401.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Answers 400 context length exceeded when the body, at 4 bytes per
    /// token, exceeds `tokens`.
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// How often a stalled stream sends a keep-alive (5 s by default).
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// The largest request body accepted (32 MiB by default); larger ones
    /// get 413.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Whether to keep every request (on by default; benchmarks turn it off).
    pub fn record(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Rate limits the simulated key enforces and reports in every answer's
    /// headers (none by default): see [`ProviderLimits`](crate::ProviderLimits).
    pub fn rate_limits(mut self, limits: crate::ProviderLimits) -> Self {
        self.rate_limits = Some(limits);
        self
    }

    /// Binds and starts serving in the current Tokio runtime.
    pub async fn start(self) -> io::Result<Simulator> {
        let listener = TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let gate = Gate::default();
        gate.set_capacity(self.capacity);
        let config = Config {
            seed: self.seed,
            reply: self.reply,
            prefill: self.prefill,
            api_key: self.api_key,
            context_window: self.context_window,
            keepalive_interval: self.keepalive_interval,
            max_body: self.max_body,
            token_delay: self.token_delay,
            instance: next_instance(),
            rate_window: self.rate_limits.map(crate::ratelimit::RateWindow::new),
        };
        let shared = Arc::new(Shared::new(
            config,
            self.plan,
            self.latency,
            gate,
            self.record,
        ));
        let server = spawn(listener, Arc::clone(&shared));
        Ok(Simulator {
            shared,
            addr,
            server: Mutex::new(Some(server)),
        })
    }
}

/// A number no other simulator of this process has.
fn next_instance() -> u64 {
    static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn split_reply(text: &str) -> ReplyText {
    ReplyText::new(text.split_inclusive(' '))
}
