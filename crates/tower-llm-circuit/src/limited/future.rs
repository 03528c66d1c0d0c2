//! The `LimitedCircuit` response future: waits for room, then is the
//! circuit's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_llm_classify::{Classified, LlmError};
use tower_service::Service;

use crate::adaptive::{LimitTicket, Waiting, poll_grant};
use crate::body::CircuitBody;
use crate::future::ResponseFuture;
use crate::service::Circuit;

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
    pub(crate) fn called(future: ResponseFuture<F>) -> Self {
        LimitedFuture {
            state: State::Called { future },
        }
    }

    pub(crate) fn waiting(wait: Waiting<Circuit<S>, R>) -> Self {
        LimitedFuture {
            state: State::Waiting { wait },
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
