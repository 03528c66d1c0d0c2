//! [`AdmitLayer`]: the callers' limits in front of the API endpoints, as a
//! tower layer.
//!
//! A service of its own rather than axum's `middleware::from_fn`, which
//! boxes the rest of the route for its `Next` and its own future on every
//! request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;

use super::{Admission, Limiter, Standings, admit};

/// Admits each API request against its caller's limits, or answers 429 at
/// once; sets the standing of the caller's limits on every answer.
#[derive(Clone, Debug)]
pub(crate) struct AdmitLayer(pub(crate) Arc<Limiter>);

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            limiter: Arc::clone(&self.0),
        }
    }
}

/// See [`AdmitLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Admit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> tower::Service<Request> for Admit<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AdmitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match admit(&self.limiter, &mut request) {
            Admission::Refused(response) => AdmitFuture::Refused {
                response: Some(response),
            },
            Admission::Passed(standings) => AdmitFuture::Passed {
                future: self.inner.call(request),
                standings,
            },
        }
    }
}

pin_project! {
    /// The future of [`Admit`]: the route's answer with the caller's
    /// standing set on it, or the refusal.
    #[project = AdmitFutureProj]
    pub(crate) enum AdmitFuture<F> {
        Passed { #[pin] future: F, standings: Option<Standings> },
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for AdmitFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitFutureProj::Passed { future, standings } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(standings) = standings.take() {
                    standings.apply(&mut response);
                }
                Poll::Ready(Ok(response))
            }
            AdmitFutureProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it answered (which a caller must not
                // do): an empty answer rather than a panic.
                None => Poll::Ready(Ok(Response::default())),
            },
        }
    }
}
