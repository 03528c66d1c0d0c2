//! The `LimitedCircuit` service.

use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_llm_classify::{Classified, LlmError};
use tower_service::Service;

use super::future::LimitedFuture;
use crate::adaptive::{LimitTicket, Queued, Waiting, refusal};
use crate::body::CircuitBody;
use crate::future::ResponseFuture;
use crate::service::Circuit;

/// A [`Circuit`] with its registry's adaptive concurrency limit in front,
/// in one layer: what [`AdaptiveLimit`](crate::AdaptiveLimit) above a
/// `Circuit` of the same registry does, call for call — room under the
/// limit first (waiting in the key's queue while it is full, refused
/// locally as overloaded when the wait runs out), then the circuit's
/// pacing and breaker, whose refusals free the room at once and teach the
/// limit nothing; the room is held to the end of the body, and the limit
/// learns from the same outcome the breaker records, after the breaker.
/// The call finds its key once, and its response has one future and one
/// body wrapper.
///
/// One difference, where no `Classify` is below (a stack always has one,
/// turning error statuses into errors): an error *status* that reaches
/// this layer as a response ends the call at its head for the limit as for
/// the breaker — a 4xx is counted as an answer (a 429 as nothing), and its
/// room is freed before its body is read — where the stacked limit held a
/// 4xx's room to the end of its body and counted it as a success.
///
/// # Clone
///
/// Clones share the keys' breakers and limits.
#[derive(Clone, Debug)]
pub struct LimitedCircuit<S> {
    circuit: Circuit<S>,
}

impl<S> LimitedCircuit<S> {
    pub(crate) fn new(circuit: Circuit<S>) -> Self {
        LimitedCircuit { circuit }
    }

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
                    return LimitedFuture::waiting(wait);
                }
            }
        }
        let ticket = LimitTicket::new(&found.breaker);
        let admission = self.circuit.admit(&mut request, found, Some(ticket));
        LimitedFuture::called(self.circuit.dispatch(request, admission))
    }
}
