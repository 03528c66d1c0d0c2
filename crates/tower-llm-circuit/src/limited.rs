//! [`LimitedCircuit`]: the adaptive concurrency limit and the circuit
//! breaker of one registry as one layer.
//!
//! Stacked as two layers (`circuit.adaptive_limit()` above `circuit`), a
//! call finds its key twice, and its response goes through two futures and
//! its body through two wrappers, each holding the key's breaker. Here the
//! limit's room rides in the circuit's own permit: one lookup, one future,
//! one body, and the same decisions in the same order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_llm_classify::{Classified, LlmError};
use tower_service::Service;

use crate::adaptive::{LimitTicket, Queued, Waiting, poll_grant, refusal};
use crate::body::CircuitBody;
use crate::future::ResponseFuture;
use crate::layer::CircuitLayer;
use crate::service::Circuit;

/// Builds [`LimitedCircuit`]s; made by [`CircuitLayer::with_adaptive_limit`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use tower_llm_circuit::{CircuitConfig, CircuitLayer};
/// use tower_llm_classify::{ClassifyLayer, ErrorKind};
/// use tower_llm_testkit::{Api, Fault, Simulator};
///
/// let sim = Simulator::builder().plan(Fault::overloaded()).start().await?;
/// let circuit = CircuitLayer::new(CircuitConfig::builder().count_overload(false).build()?);
/// let handle = circuit.handle();
/// // What `.layer(circuit.adaptive_limit()).layer(circuit)` does, as one layer.
/// let mut service = ServiceBuilder::new()
///     .layer(circuit.with_adaptive_limit())
///     .layer(ClassifyLayer::new())
///     .service(Client::builder(TokioExecutor::new()).build_http());
///
/// let request = || {
///     http::Request::post(sim.url(Api::OpenAiChat))
///         .body(Full::<bytes::Bytes>::from(r#"{"model":"gpt-4o","messages":[]}"#))
/// };
/// // Six shed answers in a window of twenty turn the key's limit on.
/// for (calls, enabled) in [(5, false), (1, true)] {
///     for _ in 0..calls {
///         let error = service.ready().await?.call(request()?).await.unwrap_err();
///         assert_eq!(error.kind(), ErrorKind::Overloaded);
///     }
///     assert_eq!(handle.snapshot()[0].limit.enabled, enabled);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LimitedCircuitLayer {
    circuit: CircuitLayer,
}

impl LimitedCircuitLayer {
    pub(crate) fn new(circuit: CircuitLayer) -> Self {
        LimitedCircuitLayer { circuit }
    }

    /// A handle on the breakers and their limits.
    pub fn handle(&self) -> crate::CircuitHandle {
        self.circuit.handle()
    }
}

impl<S> Layer<S> for LimitedCircuitLayer {
    type Service = LimitedCircuit<S>;

    fn layer(&self, inner: S) -> LimitedCircuit<S> {
        LimitedCircuit {
            circuit: self.circuit.layer(inner),
        }
    }
}

/// A [`Circuit`] with its registry's adaptive concurrency limit in front,
/// in one layer: what [`AdaptiveLimit`](crate::AdaptiveLimit) above a
/// `Circuit` of the same registry does, call for call — room under the
/// limit first (waiting in the key's queue while it is full, refused
/// locally as overloaded when the wait runs out), then the circuit's
/// pacing and breaker, whose refusals free the room at once and teach the
/// limit nothing; the room is held to the end of the body, and the limit
/// learns from the same outcome the breaker records. The call finds its
/// key once, and its response has one future and one body wrapper.
///
/// # Clone
///
/// Clones share the keys' breakers and limits.
#[derive(Clone, Debug)]
pub struct LimitedCircuit<S> {
    circuit: Circuit<S>,
}

impl<S> LimitedCircuit<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.circuit.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.circuit.get_mut()
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.circuit.into_inner()
    }

    /// A handle on the breakers and their limits.
    pub fn handle(&self) -> crate::CircuitHandle {
        self.circuit.handle()
    }
}

impl<S, B, RB> Service<Request<B>> for LimitedCircuit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<LlmError>,
    B: 'static,
    RB: Body,
    RB::Error: Classified,
{
    type Response = Response<CircuitBody<RB>>;
    type Error = LlmError;
    type Future = LimitedFuture<S, Request<B>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Service::<Request<B>>::poll_ready(&mut self.circuit, cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let found = self.circuit.find(&mut request, None);
        let limiter = found.breaker.limiter();
        if !limiter.try_acquire() {
            match limiter.enqueue(found.breaker.registry_limit()) {
                Queued::Admitted => {}
                Queued::Full => {
                    let error = refusal(&found.breaker, None);
                    return LimitedFuture::called(ResponseFuture::rejected(error));
                }
                Queued::Waiting(waiter) => {
                    let wait = Waiting::new(found.breaker, waiter, &mut self.circuit, request);
                    return LimitedFuture {
                        state: State::Waiting { wait },
                    };
                }
            }
        }
        let ticket = LimitTicket::new(&found.breaker);
        let admission = self.circuit.admit(&mut request, found, Some(ticket));
        LimitedFuture::called(self.circuit.dispatch(request, admission))
    }
}

pin_project! {
    /// The future of [`LimitedCircuit`]: while the key is at its limit, it
    /// waits for room (holding the request and a ready clone of the
    /// circuit); then it is the circuit's.
    pub struct LimitedFuture<S, R, F> {
        #[pin]
        state: State<S, R, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R, F> {
        Waiting { wait: Waiting<Circuit<S>, R> },
        Called {
            #[pin]
            future: ResponseFuture<F>,
        },
    }
}

impl<S, R, F> LimitedFuture<S, R, F> {
    #[inline]
    fn called(future: ResponseFuture<F>) -> Self {
        LimitedFuture {
            state: State::Called { future },
        }
    }
}

impl<S, R, F> std::fmt::Debug for LimitedFuture<S, R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = matches!(self.state, State::Waiting { .. });
        f.debug_struct("LimitedFuture")
            .field("waiting", &waiting)
            .finish_non_exhaustive()
    }
}

impl<S, B, F, RB> Future for LimitedFuture<S, Request<B>, F>
where
    S: Service<Request<B>, Response = Response<RB>, Future = F>,
    F: Future<Output = Result<Response<RB>, S::Error>>,
    S::Error: Into<LlmError>,
    B: 'static,
    RB: Body,
    RB::Error: Classified,
{
    type Output = Result<Response<CircuitBody<RB>>, LlmError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Waiting { wait } => {
                    let future = match ready!(poll_grant(wait, cx)) {
                        // Room is ours from here: the ticket frees it.
                        Ok((mut circuit, mut request)) => {
                            let known = Some(Arc::clone(&wait.breaker));
                            let found = circuit.find(&mut request, known);
                            let ticket = LimitTicket::new(&found.breaker);
                            let admission = circuit.admit(&mut request, found, Some(ticket));
                            circuit.dispatch(request, admission)
                        }
                        Err(error) => ResponseFuture::rejected(error),
                    };
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => return future.poll(cx),
            }
        }
    }
}
