//! Shutting down gracefully: the signals that start it, and the handle
//! that ends what still runs once the grace period is over.

use std::future::Future;

/// Tells every request and stream still running that the grace period
/// after a shutdown signal is over: they end at once (a request waiting on
/// its upstream gets a 503, a stream an error that closes its connection).
///
/// Give the same handle to [`router()`](crate::router()) and
/// [`serve()`](crate::serve()).
///
/// # Clone
///
/// Cheap: clones share one state.
/// A `watch` rather than tokio-util's `CancellationToken`, whose owned
/// future would save the response body a box: every request and stream
/// watches this one signal, and a token locks one mutex, shared by all of
/// them, on each clone, drop and poll, where a watch's readers take a read
/// lock and wait on sharded notifiers (tried, and turned back after review).
#[derive(Clone, Debug)]
pub struct Closing(tokio::sync::watch::Sender<bool>);

impl Closing {
    /// A handle, not closing yet.
    pub fn new() -> Self {
        Closing(tokio::sync::watch::Sender::new(false))
    }

    /// Ends every request and stream still running.
    pub(crate) fn close(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once closing (at once if already).
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut watch = self.0.subscribe();
        async move {
            let _ = watch.wait_for(|closed| *closed).await;
        }
    }
}

impl Default for Closing {
    fn default() -> Self {
        Closing::new()
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what an orchestrator sends):
/// the `shutdown` future to give [`serve()`](crate::serve()).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
