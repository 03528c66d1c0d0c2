//! The HTTP side: the accept loop, each connection, and the state they share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::body::ConnState;
use crate::capacity::Gate;
use crate::conn::ConnIo;
use crate::delay::Delay;
use crate::fault::Fault;
use crate::handle::handle;
use crate::plan::FaultPlan;
use crate::prefill::PrefillModes;
use crate::record::{Counters, Recorder};
use crate::reply::ReplyText;

/// What does not change while a simulator runs.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) seed: u64,
    pub(crate) reply: ReplyText,
    /// What each API does with a prefill, unless the fault says.
    pub(crate) prefill: PrefillModes,
    pub(crate) api_key: Option<String>,
    pub(crate) context_window: Option<u64>,
    pub(crate) keepalive_interval: Duration,
    pub(crate) max_body: usize,
    /// The delay between streamed events of faults that set none.
    pub(crate) token_delay: Delay,
    /// Distinguishes the request ids of simulators in one process.
    pub(crate) instance: u64,
    /// The key's rate limits and the requests they counted.
    pub(crate) rate_window: Option<crate::ratelimit::RateWindow>,
}

/// A plan with its own request count (and, for a plan drawn per request,
/// how many times each body has come).
#[derive(Debug)]
pub(crate) struct ActivePlan {
    pub(crate) plan: FaultPlan,
    next: AtomicU64,
    arrivals: Mutex<HashMap<Bytes, u64>>,
}

impl ActivePlan {
    pub(crate) fn new(plan: FaultPlan) -> Arc<Self> {
        Arc::new(ActivePlan {
            plan,
            next: AtomicU64::new(0),
            arrivals: Mutex::new(HashMap::new()),
        })
    }
}

/// State shared by the accept loop, every connection and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) plan: RwLock<Arc<ActivePlan>>,
    pub(crate) latency: Mutex<Delay>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) recorder: Recorder,
    pub(crate) counters: Counters,
    pub(crate) next_index: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        plan: FaultPlan,
        latency: Delay,
        gate: Gate,
        record: bool,
    ) -> Self {
        Shared {
            config,
            plan: RwLock::new(ActivePlan::new(plan)),
            latency: Mutex::new(latency),
            gate: Arc::new(gate),
            recorder: Recorder::new(record),
            counters: Counters::default(),
            next_index: AtomicU64::new(0),
        }
    }

    /// The fault of the request with `body` that reaches the plan now, and,
    /// for a plan drawn per request, the key its other draws (latencies,
    /// pacing) take instead of the arrival index.
    pub(crate) fn next_fault(&self, body: &Bytes) -> (Fault, Option<u64>) {
        let active = Arc::clone(&self.plan.read().unwrap_or_else(|p| p.into_inner()));
        let n = active.next.fetch_add(1, Ordering::Relaxed);
        if !active.plan.is_per_request() {
            return (active.plan.fault_for(n).clone(), None);
        }
        let k = {
            let mut arrivals = active.arrivals.lock().unwrap_or_else(|p| p.into_inner());
            let count = arrivals.entry(body.clone()).or_insert(0);
            *count += 1;
            *count - 1
        };
        let (fault, draw) = active.plan.draw_for_request(body, k);
        (fault.clone(), Some(draw))
    }

    pub(crate) fn latency(&self) -> Delay {
        *self.latency.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Accepts connections until `stop` fires (or its sender is dropped), then
/// closes the listener and every connection before returning.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: back off a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let conn = Arc::new(ConnState::default());
    let io = TokioIo::new(ConnIo {
        stream,
        conn: Arc::clone(&conn),
    });
    let service =
        service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&conn), request));
    // Errors here are the faults themselves (reset, close, cut) or the
    // client going away: nothing to report.
    let _ = http1::Builder::new().serve_connection(io, service).await;
}
