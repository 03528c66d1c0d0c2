//! [`Stack`]: the assembled stack as a `Service`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_llm_circuit::CircuitHandle;
use tower_llm_classify::{BoxError, LlmError};
use tower_llm_fallback::{Fallback, GroupSnapshot, Protocol};
use tower_service::Service;

use super::routes::Routes;
use super::{ResponseFuture, StackBody};

/// The assembled stack: routes a request by its `model` to a
/// [`Fallback`] over the route's targets.
///
/// # Clone
///
/// Clones share everything: breakers, retry budgets, hedging budgets.
#[derive(Clone)]
pub struct Stack {
    pub(super) routes: Arc<Routes>,
    pub(super) circuits: CircuitHandle,
    #[cfg(feature = "redis")]
    pub(super) shared_state: Option<tower_llm_redis::SharedState>,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut models: Vec<String> = self.routes.exact.keys().map(|k| k.to_string()).collect();
        models.extend(self.routes.prefixes.iter().map(|(p, _)| format!("{p}*")));
        if self.routes.default.is_some() {
            models.push("*".into());
        }
        f.debug_struct("Stack")
            .field("routes", &models)
            .field("circuits", &self.circuits)
            .finish()
    }
}

impl Stack {
    /// The handle on every target's breakers (state, force open, `/health`).
    pub fn circuits(&self) -> &CircuitHandle {
        &self.circuits
    }

    /// The targets a request for `model` would go to, in order (`None`:
    /// no route serves it).
    pub fn targets_for(&self, model: Option<&str>) -> Option<Vec<&str>> {
        self.routes.pick(model).map(Fallback::target_names)
    }

    /// Every route: the model it serves (`gpt-4o`, a prefix as `gpt-*`, the
    /// default as `*`) and its targets in order, exact names first (sorted),
    /// then prefixes (longest first), then the default.
    pub fn routes(&self) -> Vec<(String, Vec<&str>)> {
        self.each_route(Fallback::target_names)
    }

    /// Every route's groups, in the order of [`routes`](Self::routes):
    /// each group's strategy and its deployments now (requests in flight,
    /// picks, latency estimate, how long one is still skipped), for
    /// `/health`. A target named alone is a group of one, which counts
    /// nothing.
    pub fn groups(&self) -> Vec<(String, Vec<GroupSnapshot>)> {
        self.each_route(Fallback::groups)
    }

    /// The [`Protocol`] every target of every route speaks, when they all
    /// speak one: a caller (the gateway) need not name it in a request's
    /// extensions, since every target would take the request either way.
    pub fn common_protocol(&self) -> Option<Protocol> {
        let mut routes = self
            .each_route(Fallback::common_protocol)
            .into_iter()
            .map(|(_, protocol)| protocol);
        let first = routes.next()??;
        routes.all(|p| p == Some(first)).then_some(first)
    }

    /// `read` of every route, named by the model it serves, in match order:
    /// exact names (sorted), prefixes (longest first), the default.
    fn each_route<'a, T>(
        &'a self,
        read: impl Fn(&'a Fallback<crate::stack::TargetService>) -> T,
    ) -> Vec<(String, T)> {
        let mut exact: Vec<_> = self
            .routes
            .exact
            .iter()
            .map(|(model, fallback)| (model.to_string(), read(fallback)))
            .collect();
        exact.sort_by(|a, b| a.0.cmp(&b.0));
        let prefixes = self
            .routes
            .prefixes
            .iter()
            .map(|(prefix, fallback)| (format!("{prefix}*"), read(fallback)));
        let default = self
            .routes
            .default
            .iter()
            .map(|fallback| ("*".to_owned(), read(fallback)));
        exact.into_iter().chain(prefixes).chain(default).collect()
    }
}

impl<B> Service<Request<B>> for Stack
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<StackBody>;
    type Error = LlmError;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        <&Stack as Service<Request<B>>>::poll_ready(&mut &*self, cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        <&Stack as Service<Request<B>>>::call(&mut &*self, request)
    }
}

/// A shared reference serves as the stack does, without a clone per call
/// (a server holding the stack in its state calls `(&stack).oneshot(..)`):
/// the stack is always ready and its calls share nothing mutable.
impl<B> Service<Request<B>> for &Stack
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<StackBody>;
    type Error = LlmError;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        // Fallback is always ready: each target's readiness is awaited
        // inside its own call, so one busy target never blocks the others.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::new(Arc::clone(&self.routes), request)
    }
}
