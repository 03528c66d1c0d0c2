//! The HTTP side: accept loop, connections, and what each request gets.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::api::{Api, EventWriter, Exchange, full_body};
use crate::body::{ConnState, Cut, SimBody, Tail};
use crate::capacity::{Gate, Slot};
use crate::delay::{Delay, key};
use crate::failure::{ErrorReply, Failure};
use crate::fault::{Action, Cut as StreamCut, Fault, StreamShape};
use crate::plan::FaultPlan;
use crate::record::{Counters, RecordedRequest, Recorder};
use crate::wire::{push_json_str, rfc3339};

/// What does not change while a simulator runs.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) seed: u64,
    pub(crate) reply: Arc<[String]>,
    pub(crate) api_key: Option<String>,
    pub(crate) context_window: Option<u64>,
    pub(crate) keepalive_interval: Duration,
    pub(crate) max_body: usize,
    /// The delay between streamed events of faults that set none.
    pub(crate) token_delay: Delay,
    /// Distinguishes the request ids of simulators in one process.
    pub(crate) instance: u64,
}

/// A plan with its own request count.
#[derive(Debug)]
pub(crate) struct ActivePlan {
    pub(crate) plan: FaultPlan,
    next: AtomicU64,
}

impl ActivePlan {
    pub(crate) fn new(plan: FaultPlan) -> Arc<Self> {
        Arc::new(ActivePlan {
            plan,
            next: AtomicU64::new(0),
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
    next_index: AtomicU64,
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

    fn next_fault(&self) -> Fault {
        let active = Arc::clone(&self.plan.read().unwrap_or_else(|p| p.into_inner()));
        let n = active.next.fetch_add(1, Ordering::Relaxed);
        active.plan.fault_for(n).clone()
    }

    fn latency(&self) -> Delay {
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

/// The socket, with the two ways a fault can end it: a failed flush after
/// the bytes so far went out, and RST instead of FIN on close.
#[derive(Debug)]
struct ConnIo {
    stream: TcpStream,
    conn: Arc<ConnState>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.conn.reset.load(Ordering::Acquire) {
            // SO_LINGER 0: the close sends RST. Zero linger never blocks.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        if self.conn.abort_after_flush.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The fields of a request body the simulator looks at.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

type Reply = Result<Response<SimBody>, Cut>;

async fn handle(shared: Arc<Shared>, conn: Arc<ConnState>, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if path == "/health" {
        return Ok(health(&shared, &parts.method));
    }
    let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
    let config = &shared.config;
    let seed = config.seed;
    // Unique across simulators of one process, repeatable within one.
    let request_id = format!(
        "req_{:016x}{:016x}",
        key(seed ^ config.instance, index, 4),
        key(seed, index, 5)
    );
    let now = SystemTime::now();
    let api = Api::from_path(path);
    Counters::bump(&shared.counters.requests);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path, |p| p.as_str())
        .to_owned();
    let record = |body: Bytes| {
        let recorder = &shared.recorder;
        let headers = parts.headers.clone();
        recorder.enabled().then(|| {
            RecordedRequest::new(
                index,
                parts.method.clone(),
                path_and_query.clone(),
                headers,
                body,
            )
        })
    };

    // Read the whole body, as a provider does before answering; refuse an
    // announced length over the limit without reading it.
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = announced.is_some_and(|len| len > config.max_body as u64);
    let body = if too_large {
        None
    } else {
        match http_body_util::Limited::new(body, config.max_body)
            .collect()
            .await
        {
            Ok(collected) => Some(collected.to_bytes()),
            Err(error)
                if error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                None
            }
            // The client went away mid-body.
            Err(_) => return Err(Cut),
        }
    };
    let Some(body) = body else {
        shared.recorder.push_opt(record(Bytes::new()));
        let ex = exchange(
            api.unwrap_or(Api::OpenAiChat),
            "",
            &request_id,
            now,
            0,
            false,
        );
        return Ok(error_response(&shared, &ex, &Failure::Status(413), None));
    };
    let mut record = record(body.clone());

    let Some(api) = api else {
        shared.recorder.push_opt(record);
        return Ok(not_found(&shared, &parts.method, path, &request_id));
    };
    let fields = serde_json::from_slice::<Fields<'_>>(&body);
    let prompt_tokens = (body.len() as u64).div_ceil(4);
    let (model, stream, include_usage) = match &fields {
        Ok(f) => (
            f.model.as_deref().unwrap_or_default(),
            f.stream.unwrap_or(api.streams_by_default()),
            f.stream_options.as_ref().is_some_and(|o| o.include_usage),
        ),
        Err(_) => ("", false, false),
    };
    let ex = exchange(api, model, &request_id, now, prompt_tokens, include_usage);
    if let Some(record) = record.as_mut() {
        record.model = (!model.is_empty()).then(|| model.to_owned());
        record.stream = stream;
    }

    // What a provider checks before it looks at load: method, key, body, size.
    let refusal = if parts.method != Method::POST {
        Some(Failure::Status(405))
    } else if !authorized(config, &parts.headers) {
        Some(Failure::Unauthorized)
    } else if fields.is_err() {
        Some(Failure::InvalidRequest(
            "We could not parse the JSON body of your request.".into(),
        ))
    } else if model.is_empty() {
        Some(Failure::InvalidRequest(missing_model(api).into()))
    } else if config
        .context_window
        .is_some_and(|window| prompt_tokens > window)
    {
        Some(Failure::ContextLengthExceeded)
    } else {
        None
    };
    if let Some(failure) = refusal {
        shared.recorder.push_opt(record);
        return Ok(error_response(&shared, &ex, &failure, None));
    }

    // Load: wait for a slot, or be shed without reaching the plan.
    let (slot, service_time) = match shared.gate.admit().await {
        Ok(admitted) => admitted,
        Err(_) => {
            Counters::bump(&shared.counters.shed);
            if let Some(record) = record.as_mut() {
                record.shed = true;
            }
            shared.recorder.push_opt(record);
            return Ok(error_response(&shared, &ex, &Failure::Overloaded, None));
        }
    };
    let fault = shared.next_fault();
    if let Some(record) = record.as_mut() {
        record.fault = Some(fault.clone());
    }
    shared.recorder.push_opt(record);

    // Latency is spent in the slot: a slow provider is slow while busy.
    let wait = shared
        .latency()
        .sample(key(seed, index, 1))
        .saturating_add(fault.latency.sample(key(seed, index, 2)))
        .saturating_add(service_time.sample(key(seed, index, 3)));
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }

    match &fault.action {
        Action::Stall => {
            Counters::bump(&shared.counters.stalled);
            let _slot = slot;
            std::future::pending::<()>().await;
            Err(Cut)
        }
        Action::Reset => {
            Counters::bump(&shared.counters.dropped);
            conn.reset.store(true, Ordering::Release);
            Err(Cut)
        }
        Action::Close => {
            Counters::bump(&shared.counters.dropped);
            Err(Cut)
        }
        Action::Fail(failure) => Ok(error_response(&shared, &ex, failure, Some(slot))),
        Action::Raw(raw) => {
            let counter = if raw.status.is_success() {
                &shared.counters.answered
            } else {
                &shared.counters.errors
            };
            Counters::bump(counter);
            // Verbatim: not even a request id is added.
            let mut response = Response::new(SimBody::full(raw.body.clone(), Some(slot)));
            *response.status_mut() = raw.status;
            *response.headers_mut() = raw.headers.clone();
            Ok(response)
        }
        Action::Answer(shape) => Ok(answer(
            &shared,
            &ex,
            shape,
            stream,
            wait,
            key(seed, index, 6),
            conn,
            slot,
        )),
    }
}

/// A healthy answer, whole or streamed, possibly cut as `shape` says.
#[allow(clippy::too_many_arguments)]
fn answer(
    shared: &Shared,
    ex: &Exchange<'_>,
    shape: &StreamShape,
    stream: bool,
    took: Duration,
    delay_seed: u64,
    conn: Arc<ConnState>,
    slot: Slot,
) -> Response<SimBody> {
    let tokens = &shared.config.reply;
    if let (false, Some(StreamCut::Error(_, failure))) = (stream, &shape.cut) {
        // A whole-body request cannot carry an in-band error: it gets the status.
        return error_response(shared, ex, failure, Some(slot));
    }
    let counter = if shape.cut.is_some() {
        &shared.counters.broken_streams
    } else {
        &shared.counters.answered
    };
    Counters::bump(counter);
    let mut headers = HeaderMap::new();
    let body = if stream {
        let shown = match &shape.cut {
            Some(StreamCut::Error(n, _) | StreamCut::Drop(n) | StreamCut::Stall(n)) => {
                (*n).min(tokens.len())
            }
            _ => tokens.len(),
        };
        let mut writer = EventWriter::new(ex, shown);
        // An error before any content is the stream's very first event.
        if !matches!(shape.cut, Some(StreamCut::Error(0, _))) {
            writer.preamble();
        }
        for token in &tokens[..shown] {
            writer.content(token);
        }
        let tail = match &shape.cut {
            None => {
                writer.finish();
                Tail::Finish
            }
            Some(StreamCut::Error(_, failure)) => {
                writer.raw(&failure.in_band_event(ex));
                Tail::Finish
            }
            Some(StreamCut::NoTerminal) => Tail::Finish,
            Some(StreamCut::Drop(_)) => Tail::Abort,
            Some(StreamCut::Stall(_)) => Tail::Stall {
                keepalive: ex
                    .api
                    .keepalive()
                    .map(|bytes| (bytes, shared.config.keepalive_interval)),
            },
        };
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ex.api.stream_content_type()),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let token_delay = if shape.token_delay.is_zero() {
            shared.config.token_delay
        } else {
            shape.token_delay
        };
        SimBody::events(
            writer.into_events(),
            token_delay,
            delay_seed,
            tail,
            None,
            conn,
            Some(slot),
        )
    } else {
        let whole = full_body(ex, tokens);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &shape.cut {
            None | Some(StreamCut::Error(..)) => SimBody::full(whole, Some(slot)),
            Some(cut) => {
                // Announce the whole length, send half of it, then stop.
                let len = whole.len() as u64;
                let events = crate::api::Events {
                    data: whole.slice(..whole.len() / 2),
                    breaks: Vec::new(),
                };
                let tail = match cut {
                    StreamCut::Stall(_) => Tail::Stall { keepalive: None },
                    _ => Tail::Abort,
                };
                SimBody::events(
                    events,
                    Delay::ZERO,
                    delay_seed,
                    tail,
                    Some(len),
                    conn,
                    Some(slot),
                )
            }
        }
    };
    success_headers(&mut headers, ex, took);
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}

fn exchange<'a>(
    api: Api,
    model: &'a str,
    request_id: &'a str,
    now: SystemTime,
    prompt_tokens: u64,
    include_usage: bool,
) -> Exchange<'a> {
    Exchange {
        api,
        model,
        request_id,
        now,
        prompt_tokens,
        include_usage,
    }
}

fn error_response(
    shared: &Shared,
    ex: &Exchange<'_>,
    failure: &Failure,
    slot: Option<Slot>,
) -> Response<SimBody> {
    Counters::bump(&shared.counters.errors);
    let ErrorReply {
        status,
        mut headers,
        body,
    } = failure.render(ex, shared.config.context_window);
    insert_request_id(&mut headers, ex.api, ex.request_id);
    let mut response = Response::new(SimBody::full(body, slot));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn insert_request_id(headers: &mut HeaderMap, api: Api, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(api.request_id_header(), value);
    }
}

/// The headers of a healthy answer: request id and the provider's
/// rate-limit headers, with room to spare.
fn success_headers(headers: &mut HeaderMap, ex: &Exchange<'_>, took: Duration) {
    insert_request_id(headers, ex.api, ex.request_id);
    match ex.api {
        Api::OpenAiChat => {
            headers.insert(
                "openai-processing-ms",
                HeaderValue::from(took.as_millis() as u64),
            );
            insert_static(headers, OPENAI_SUCCESS_HEADERS);
        }
        Api::AnthropicMessages => {
            insert_static(headers, ANTHROPIC_SUCCESS_HEADERS);
            let reset = rfc3339(ex.now + Duration::from_secs(1), 0);
            if let Ok(reset) = HeaderValue::from_str(&reset) {
                headers.insert("anthropic-ratelimit-requests-reset", reset.clone());
                headers.insert("anthropic-ratelimit-tokens-reset", reset);
            }
        }
        Api::OllamaChat => {}
    }
}

/// The rate-limit headers of a healthy OpenAI answer: plenty of room left.
const OPENAI_SUCCESS_HEADERS: &[(&str, &str)] = &[
    ("openai-version", "2020-10-01"),
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-tokens", "29999000"),
    ("x-ratelimit-reset-tokens", "2ms"),
];

/// The rate-limit headers of a healthy Anthropic answer (resets added per request).
const ANTHROPIC_SUCCESS_HEADERS: &[(&str, &str)] = &[
    ("anthropic-ratelimit-requests-limit", "4000"),
    ("anthropic-ratelimit-requests-remaining", "3999"),
    ("anthropic-ratelimit-tokens-limit", "2000000"),
    ("anthropic-ratelimit-tokens-remaining", "1999000"),
];

fn insert_static(headers: &mut HeaderMap, pairs: &[(&'static str, &'static str)]) {
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_static(value));
    }
}

fn authorized(config: &Config, headers: &HeaderMap) -> bool {
    let Some(key) = &config.api_key else {
        return true;
    };
    let matches = |name: &str, prefix: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix(prefix))
                .is_some_and(|v| v == key)
        })
    };
    matches("authorization", "Bearer ") || matches("x-api-key", "") || matches("api-key", "")
}

fn missing_model(api: Api) -> &'static str {
    match api {
        Api::OpenAiChat => "you must provide a model parameter",
        Api::AnthropicMessages => "model: Field required",
        Api::OllamaChat => "model is required",
    }
}

fn health(shared: &Shared, method: &Method) -> Response<SimBody> {
    let (status, body) = if method == Method::GET || method == Method::HEAD {
        let stats = shared.counters.snapshot(shared.gate.in_service());
        let body = format!(
            "{{\"status\":\"ok\",\"requests\":{},\"in_service\":{},\"queued\":{}}}",
            stats.requests, stats.in_service, stats.queued
        );
        (StatusCode::OK, Bytes::from(body))
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"{\"status\":\"method not allowed\"}"),
        )
    };
    let mut response = Response::new(SimBody::full(body, None));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found(shared: &Shared, method: &Method, path: &str, request_id: &str) -> Response<SimBody> {
    Counters::bump(&shared.counters.errors);
    let mut body = String::from("{\"error\":{\"message\":");
    push_json_str(&mut body, &format!("Invalid URL ({method} {path})"));
    body.push_str(",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
    let mut response = Response::new(SimBody::full(Bytes::from(body), None));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    insert_request_id(response.headers_mut(), Api::OpenAiChat, request_id);
    response
}
