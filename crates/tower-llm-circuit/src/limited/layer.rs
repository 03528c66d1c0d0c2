//! `LimitedCircuitLayer`.

use tower_layer::Layer;

use super::service::LimitedCircuit;
use crate::layer::CircuitLayer;

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
        LimitedCircuit::new(self.circuit.layer(inner))
    }
}
