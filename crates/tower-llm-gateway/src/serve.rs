//! Accepting connections and shutting down gracefully. A loop of its own
//! rather than `axum::serve`, for what that cannot give: hyper's
//! header-read timeout (it needs a timer, which `axum::serve` does not set,
//! so a caller sending its head a byte a minute held a connection forever)
//! and the send timeout on each connection.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::config::{GatewayOptions, LONGEST_TIMEOUT};
use crate::heartbeat::{AbortOnDrop, timer_heartbeat};
use crate::self_wake::PollAgain;
use crate::send_timeout::SendTimeout;
use crate::shutdown::Closing;

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests and streams finish for at most the grace period, then
/// ends those still running (through `closing`, the handle the router was
/// built with).
///
/// `shutdown` is [`shutdown_signal()`](crate::shutdown_signal) in a
/// process, any future in a test; `closing` the handle given to
/// [`router()`](crate::router()).
///
/// Refuses (an error, before accepting anything) to serve callers without
/// keys on a non-loopback address unless the options allow it.
pub fn serve(
    listener: TcpListener,
    router: Router,
    options: &GatewayOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    closing: Closing,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let exposure = listener.local_addr().and_then(|addr| {
        options
            .check_exposure(addr)
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout.min(LONGEST_TIMEOUT));
    let send_timeout = options.send_timeout;
    let grace = options.shutdown_grace;
    // Each connection holds one until it closes; with none left, new ones
    // wait in the kernel's listen backlog instead of being accepted.
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    async move {
        exposure?;
        // Aborted when serving ends, or when this future is dropped.
        let _heartbeat = AbortOnDrop(tokio::spawn(timer_heartbeat()));
        // Connection tasks hold a receiver each: `closed()` on the sender
        // resolves when the last one has ended.
        let (stopping, _) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                slot = connections.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // Never closed while serving.
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(error) => {
                        on_accept_error(error).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            tokio::spawn(connection(
                tcp,
                slot,
                http.clone(),
                router.clone(),
                send_timeout,
                stopping.subscribe(),
            ));
        }
        drop(listener);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: finishing in-flight requests"
        );
        stopping.send_replace(true);
        tokio::select! {
            () = stopping.closed() => return Ok(()),
            () = tokio::time::sleep(grace) => {}
        }
        tracing::warn!("grace period over: ending the requests and streams still running");
        closing.close();
        // Each request and stream now ends at once; the connections close
        // as they do.
        stopping.closed().await;
        Ok(())
    }
}

/// Serves one connection until it closes, finishing gracefully (the request
/// in flight answered, no further one read) once `stopping` turns true.
async fn connection(
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    http: http1::Builder,
    router: Router,
    send_timeout: Duration,
    stopping: watch::Receiver<bool>,
) {
    // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm
    // and the client's delayed ACK hold each one back ~40 ms.
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(SendTimeout::new(tcp, send_timeout));
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        router.clone().oneshot(request)
    });
    // A connection that wakes itself while polled (each request with a
    // body does) is polled again at once, not handed to another thread.
    let connection = PollAgain::new(http.serve_connection(io, service));
    tokio::pin!(connection);
    let mut signal = stopping.clone();
    let stop = async move {
        // The guard `wait_for` returns must not live across an await.
        let _ = signal.wait_for(|stopping| *stopping).await.map(drop);
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop => {
            connection.as_mut().inner().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        let stage = if error.is_timeout() {
            Some("header")
        } else if timed_out_sending(&error) {
            Some("send")
        } else {
            None
        };
        match stage {
            Some(stage) => {
                metrics::counter!("tower_llm_gateway_timeouts_total", "stage" => stage)
                    .increment(1);
                tracing::info!(stage, "connection closed: {error}");
            }
            None => tracing::debug!("connection ended: {error}"),
        }
    }
    // Only now does `serve` stop counting this connection as open.
    drop(stopping);
}

/// Whether the connection failed on the send timeout.
fn timed_out_sending(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// An accept that failed: a connection that died in the backlog is
/// skipped; anything else (out of file descriptors) is logged and waited
/// out for a second, as `axum::serve` does.
async fn on_accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept failed: {error}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
