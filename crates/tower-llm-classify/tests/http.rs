#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins what `ClassifyLayer` makes of real HTTP/1.1 failures, over
//! 127.0.0.1 with hyper's server and hyper-util's legacy client: a refused
//! connection, a connection closed before the head, a 429 with `retry-after`,
//! a chunked stream cut after its first content event, and an Anthropic SSE
//! `error` event.

use std::convert::Infallible;
use std::error::Error as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{Layer, Service, ServiceExt};
use tower_llm_classify::hint::HintSource;
use tower_llm_classify::stream::{OutcomeHook, StreamOutcome};
use tower_llm_classify::{Classify, ClassifyLayer, ErrorKind, LlmError, Phase, Provider};

/// A hang guard, not a timing assertion: every test finishes in
/// milliseconds, and nothing in them sleeps.
const HANG_GUARD: Duration = Duration::from_secs(60);

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .expect("the test hung")
}

/// A one-connection test server, aborted when dropped.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection with hyper, answering every request with `answer()`.
async fn hyper_server(answer: fn() -> Response<Full<Bytes>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let service = service_fn(move |_request| async move { Ok::<_, Infallible>(answer()) });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    Server { addr, task }
}

/// Serves one connection by hand: reads the whole request, writes `bytes`
/// as they are, and closes the socket.
async fn raw_server(bytes: &'static [u8]) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        // Read it all first: closing a socket with unread input sends a reset,
        // which could discard what we wrote before the client reads it.
        read_request(&mut stream).await;
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    });
    Server { addr, task }
}

/// Reads a request head and its `content-length` body.
async fn read_request(stream: &mut TcpStream) {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 1024];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while received.len() < head_end + length {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client(layer: ClassifyLayer) -> Classify<HttpClient> {
    layer.layer(Client::builder(TokioExecutor::new()).build_http())
}

fn post(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

/// What the outcome hook saw: kind and phase of a failure, `None` otherwise.
type Failures = Arc<Mutex<Vec<Option<(ErrorKind, Phase)>>>>;

fn hook(request: &mut Request<Full<Bytes>>) -> Failures {
    let failures = Failures::default();
    let sink = failures.clone();
    request
        .extensions_mut()
        .insert(OutcomeHook::new(move |outcome: StreamOutcome<'_>| {
            let failure = match outcome {
                StreamOutcome::Failed(c) => Some((c.kind(), c.phase())),
                _ => None,
            };
            sink.lock().unwrap().push(failure);
        }));
    failures
}

async fn call(
    service: &mut Classify<HttpClient>,
    request: Request<Full<Bytes>>,
) -> Result<Response<tower_llm_classify::stream::ResponseBody<hyper::body::Incoming>>, LlmError> {
    service.ready().await?.call(request).await
}

/// Reads a body to its error: the data before it, and the error.
async fn data_then_error<B>(mut body: B) -> (Vec<u8>, B::Error)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut data = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    data.extend_from_slice(&chunk);
                }
            }
            Some(Err(error)) => return (data, error),
            None => panic!("the body ended without an error"),
        }
    }
}

#[tokio::test]
async fn connection_refused_is_connect_phase_and_retryable() {
    bounded(async {
        // A port that was just free and has nothing listening any more.
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let mut service = client(ClassifyLayer::new());
        let mut request = post(addr, "/v1/chat/completions");
        let failures = hook(&mut request);
        let error = call(&mut service, request).await.unwrap_err();

        let c = error.classification();
        assert_eq!(c.kind(), ErrorKind::Connect, "{error:?}");
        assert_eq!(c.phase(), Phase::Connect);
        assert!(c.retryable());
        assert_eq!(c.provider(), Provider::OpenAiCompatible);
        assert!(error.response_head().is_none());
        let source = error.source().unwrap();
        let client_error = source
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .unwrap();
        assert!(client_error.is_connect());
        assert_eq!(
            *failures.lock().unwrap(),
            [Some((ErrorKind::Connect, Phase::Connect))]
        );
    })
    .await;
}

#[tokio::test]
async fn reset_before_headers_is_transport() {
    bounded(async {
        // The server reads the request and closes without a byte of answer.
        let server = raw_server(b"").await;
        let mut service = client(ClassifyLayer::new().provider(Provider::OpenAi));
        let error = call(&mut service, post(server.addr, "/v1/chat/completions"))
            .await
            .unwrap_err();

        let c = error.classification();
        assert_eq!(c.kind(), ErrorKind::Transport, "{error:?}");
        assert_eq!(c.phase(), Phase::BeforeHeaders);
        assert!(c.retryable());
        assert_eq!(c.provider(), Provider::OpenAi);
        assert!(c.status().is_none());
        assert!(error.response_head().is_none());
    })
    .await;
}

#[tokio::test]
async fn rate_limit_429_over_the_wire_is_classified_with_the_retry_after_hint() {
    bounded(async {
        const BODY: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let server = hyper_server(|| {
            Response::builder()
                .status(429)
                .header("content-type", "application/json")
                .header("retry-after", "7")
                .header("x-request-id", "req_wire_429")
                .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                .unwrap()
        })
        .await;
        let mut service = client(ClassifyLayer::new().provider(Provider::OpenAi));
        let error = call(&mut service, post(server.addr, "/v1/chat/completions"))
            .await
            .unwrap_err();

        let c = error.classification();
        assert_eq!(c.kind(), ErrorKind::RateLimited, "{error:?}");
        assert!(c.retryable());
        assert_eq!(c.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(c.phase(), Phase::AfterHeaders);
        let hint = c.hint().unwrap();
        assert_eq!(hint.delay, Duration::from_secs(7));
        assert_eq!(hint.source, HintSource::RetryAfter);
        assert_eq!(c.code(), Some("rate_limit_exceeded"));
        assert_eq!(c.request_id(), Some("req_wire_429"));
        assert_eq!(error.body().as_ref(), BODY.as_bytes());
        assert!(!error.body_truncated());
    })
    .await;
}

#[tokio::test]
async fn stream_cut_after_a_content_event_is_a_mid_stream_body_error_and_not_retryable() {
    bounded(async {
        const EVENT: &[u8] =
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n";
        // 0x3d = 61 bytes: the event's length, as a chunk size.
        assert_eq!(EVENT.len(), 0x3d);
        const WIRE: &[u8] = b"HTTP/1.1 200 OK\r\n\
            content-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\
            x-request-id: req_cut\r\n\
            \r\n\
            3d\r\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n\
            \r\n";
        // ...and the connection closes: no `0\r\n\r\n`, no `[DONE]`.
        let server = raw_server(WIRE).await;
        let mut service = client(ClassifyLayer::new().provider(Provider::OpenAi));
        let mut request = post(server.addr, "/v1/chat/completions");
        let failures = hook(&mut request);
        let response = call(&mut service, request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(failures.lock().unwrap().is_empty());

        let (data, error) = data_then_error(response.into_body()).await;
        assert_eq!(data, EVENT, "the content reached the caller first");
        let c = error.classification();
        assert_eq!(c.kind(), ErrorKind::Transport, "{error:?}");
        assert_eq!(c.phase(), Phase::MidStream);
        assert!(!c.retryable(), "content reached the caller: never replay");
        assert_eq!(c.provider(), Provider::OpenAi);
        assert_eq!(c.request_id(), Some("req_cut"));
        assert!(error.source().is_some(), "the hyper error is kept");
        assert_eq!(
            *failures.lock().unwrap(),
            [Some((ErrorKind::Transport, Phase::MidStream))]
        );
    })
    .await;
}

#[tokio::test]
async fn anthropic_sse_error_event_over_the_wire_is_classified() {
    bounded(async {
        const STREAM: &[u8] = b"event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}\n\n\
            event: ping\n\
            data: {\"type\": \"ping\"}\n\n\
            event: error\n\
            data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let server = hyper_server(|| {
            Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
                .body(Full::new(Bytes::from_static(STREAM)))
                .unwrap()
        })
        .await;
        // Detected from the path: `/v1/messages` speaks Anthropic.
        let mut service = client(ClassifyLayer::new());
        let mut request = post(server.addr, "/v1/messages");
        let failures = hook(&mut request);
        let response = call(&mut service, request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let (data, error) = data_then_error(response.into_body()).await;
        assert_eq!(data, STREAM, "the error event's bytes reach the caller");
        let c = error.classification();
        assert_eq!(c.kind(), ErrorKind::Overloaded, "{error:?}");
        assert_eq!(c.phase(), Phase::AfterHeaders);
        assert!(c.retryable(), "only keep-alives came before it");
        assert_eq!(c.provider(), Provider::Anthropic);
        assert_eq!(c.code(), Some("overloaded_error"));
        assert_eq!(c.request_id(), Some("req_011CSHoEeqs5C35K2UUqR7Fy"));
        assert_eq!(
            *failures.lock().unwrap(),
            [Some((ErrorKind::Overloaded, Phase::AfterHeaders))]
        );
    })
    .await;
}
