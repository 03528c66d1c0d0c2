//! Shutting down gracefully: the signals that start it, and the handle
//! that ends what still runs once the grace period is over.

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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
#[derive(Clone, Debug)]
pub struct Closing(CancellationToken);

/// The future [`Closing::closed`] gives: named, so a response body holds it
/// pinned in place (no box per request).
pub(crate) type Closed = WaitForCancellationFutureOwned;

impl Closing {
    /// A handle, not closing yet.
    pub fn new() -> Self {
        Closing(CancellationToken::new())
    }

    /// Ends every request and stream still running.
    pub(crate) fn close(&self) {
        self.0.cancel();
    }

    /// Resolves once closing (at once if already).
    pub(crate) fn closed(&self) -> Closed {
        self.0.clone().cancelled_owned()
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
