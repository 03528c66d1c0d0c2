//! [`TargetService`]: one target's stack behind a shared pointer, so that
//! targets over different clients sit in one fallback and a call clones a
//! reference count instead of boxing a copy of the service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::ServiceExt;
use tower_llm_classify::LlmError;
use tower_service::Service;

use super::TargetBody;

/// The future of one call to a [`TargetService`].
pub type TargetFuture =
    Pin<Box<dyn Future<Output = Result<Response<TargetBody>, LlmError>> + Send + 'static>>;

/// One target's stack (Retry → Circuit → Classify → client), type-erased.
///
/// `tower::util::BoxCloneSyncService` boxes a copy of the service on every
/// clone, and the fallback clones a target's service for each call (the
/// clone-then-call pattern tower's docs prescribe). This one shares the
/// service behind an `Arc`: a clone is a reference count, and a call
/// clones the concrete service (its own shared state is in `Arc`s too)
/// into the one boxed future the erasure needs. The service's readiness is
/// awaited inside that future, so `poll_ready` is always ready: one busy
/// target never holds up the fallback's choice of another.
#[derive(Clone)]
pub struct TargetService(Arc<dyn Erased>);

impl TargetService {
    /// Erases `service`.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<TargetBody>, Error = LlmError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        TargetService(Arc::new(Holder(service)))
    }
}

impl fmt::Debug for TargetService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TargetService")
    }
}

impl Service<Request<Full<Bytes>>> for TargetService {
    type Response = Response<TargetBody>;
    type Error = LlmError;
    type Future = TargetFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> TargetFuture {
        self.0.call(request)
    }
}

/// The object-safe face of a target's service.
trait Erased: Send + Sync {
    fn call(&self, request: Request<Full<Bytes>>) -> TargetFuture;
}

struct Holder<S>(S);

impl<S> Erased for Holder<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<TargetBody>, Error = LlmError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, request: Request<Full<Bytes>>) -> TargetFuture {
        Box::pin(self.0.clone().oneshot(request))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;

    use super::*;

    /// Ready only on its second poll, counting calls.
    #[derive(Clone)]
    struct SlowToReady {
        polls: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    impl Service<Request<Full<Bytes>>> for SlowToReady {
        type Response = Response<TargetBody>;
        type Error = LlmError;
        type Future = std::future::Ready<Result<Response<TargetBody>, LlmError>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
            if self.polls.fetch_add(1, Ordering::SeqCst) == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let body = Full::new(Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed_unsync();
            std::future::ready(Ok(Response::new(body)))
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_call_waits_for_the_targets_readiness_inside_its_future() {
        let inner = SlowToReady {
            polls: Arc::default(),
            calls: Arc::default(),
        };
        let mut service = TargetService::new(inner.clone());
        let mut clone = service.clone();
        assert!(
            clone.ready().await.is_ok(),
            "the erased service is always ready"
        );
        let response = service.call(Request::new(Full::default())).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert_eq!(inner.polls.load(Ordering::SeqCst), 2, "polled until ready");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }
}
