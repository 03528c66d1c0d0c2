//! [`GateLayer`]: a check in front of the routes that answers a request at
//! once or lets it through, and may then touch its answer — the caller-key
//! check and the callers' limits.
//!
//! A tower service rather than axum's `middleware::from_fn`, which boxes
//! the rest of the route for its `Next` and its own future on every
//! request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;

/// What a [`Check`] decided for a request.
pub(crate) enum Passage<A> {
    /// Through to the route, with what to do to its answer, if anything.
    Through(Option<A>),
    /// Answered at once, with this.
    Refused(Response),
}

/// What a gate decides for each request.
pub(crate) trait Check {
    /// What it does to the answer of a request it let through.
    type After;

    /// Lets `request` through or answers it at once.
    fn check(&self, request: &mut Request) -> Passage<Self::After>;

    /// Does `after` to the answer.
    fn after(after: Self::After, response: &mut Response);
}

/// Puts [`Check`] `C` in front of a service.
#[derive(Clone, Debug)]
pub(crate) struct GateLayer<C>(pub(crate) C);

impl<S, C: Clone> tower::Layer<S> for GateLayer<C> {
    type Service = Gate<S, C>;

    fn layer(&self, inner: S) -> Gate<S, C> {
        Gate {
            inner,
            check: self.0.clone(),
        }
    }
}

/// See [`GateLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Gate<S, C> {
    inner: S,
    check: C,
}

impl<S, C> tower::Service<Request> for Gate<S, C>
where
    S: tower::Service<Request, Response = Response>,
    C: Check,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GateFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.check.check(&mut request) {
            Passage::Through(after) => GateFuture::Passed {
                future: self.inner.call(request),
                after,
            },
            Passage::Refused(response) => GateFuture::Refused {
                response: Some(response),
            },
        }
    }
}

pin_project! {
    /// The future of [`Gate`]: the route's answer, with the check's
    /// [`after`](Check::after) done to it, or the check's own answer.
    #[project = GateFutureProj]
    pub(crate) enum GateFuture<F, C: Check> {
        Passed { #[pin] future: F, after: Option<C::After> },
        Refused { response: Option<Response> },
    }
}

impl<F, C, E> Future for GateFuture<F, C>
where
    F: Future<Output = Result<Response, E>>,
    C: Check,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GateFutureProj::Passed { future, after } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(after) = after.take() {
                    C::after(after, &mut response);
                }
                Poll::Ready(Ok(response))
            }
            GateFutureProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(
                    // Polled again after it answered (which a caller must not
                    // do): an empty 500 rather than a panic.
                    || {
                        let mut response = Response::default();
                        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        response
                    },
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use http::StatusCode;
    use tower::{Layer, ServiceExt};

    use super::*;

    /// Lets `/open` through and marks its answer; refuses the rest.
    #[derive(Clone)]
    struct OpenOnly;

    impl Check for OpenOnly {
        type After = &'static str;

        fn check(&self, request: &mut Request) -> Passage<&'static str> {
            if request.uri().path() == "/open" {
                Passage::Through(Some("checked"))
            } else {
                let mut refusal = Response::default();
                *refusal.status_mut() = StatusCode::FORBIDDEN;
                Passage::Refused(refusal)
            }
        }

        fn after(mark: &'static str, response: &mut Response) {
            response
                .headers_mut()
                .insert("x-gate", http::HeaderValue::from_static(mark));
        }
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_route_and_a_passed_one_gets_its_mark() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let route = tower::service_fn(move |_: Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(
                Body::empty(),
            )))
        });
        let gate = GateLayer(OpenOnly).layer(route);
        let request = |path: &str| Request::get(path).body(Body::empty()).unwrap_or_default();

        let refused = gate.clone().oneshot(request("/closed")).await;
        assert!(matches!(&refused, Ok(r) if r.status() == StatusCode::FORBIDDEN));
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let passed = gate.oneshot(request("/open")).await;
        assert!(matches!(&passed, Ok(r) if r.headers()["x-gate"] == "checked"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
