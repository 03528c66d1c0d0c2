//! Several replicas of one stack sharing their circuit decisions through
//! Redis (feature `redis`): see [`tower_llm_redis`].

use tower_llm_redis::SharedState;

use super::{LlmStack, Stack, StackError};

impl LlmStack {
    /// Shares this stack's circuit decisions — a key opened until an
    /// instant, cooling down until an instant, closed again — with the
    /// other replicas on the same Redis and key prefix, and applies theirs
    /// (feature `redis`). No call waits on Redis; when it is down, the
    /// stack decides alone, as without it
    /// ([`SharedStatus::Degraded`](tower_llm_redis::SharedStatus::Degraded)).
    /// A stack with one target keeps its rate-limit cooldown when it
    /// shares (see [`build`](LlmStack::build)), Redis up or down: the
    /// fleet waits out a 429's hint, not only the request that met it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use hyper_util::client::legacy::Client;
    /// use hyper_util::rt::TokioExecutor;
    /// use tower_llm::redis::{SharedState, SharedStatus};
    /// use tower_llm::stack::LlmStack;
    ///
    /// // The URL usually comes from an environment variable (it may hold a
    /// // password); nothing listens on port 1 here, and the stack works on
    /// // its own decisions meanwhile.
    /// let shared = SharedState::connect("redis://127.0.0.1:1/", "my-gateway")?;
    /// let client = Client::builder(TokioExecutor::new()).build_http();
    /// let stack = LlmStack::high_availability()
    ///     .target("openai", client, |t| t.base_url("https://api.openai.com/v1".parse().unwrap()))
    ///     .shared_state(shared)
    ///     .build()?;
    /// let status = stack.shared_state().map(|shared| shared.status());
    /// assert_ne!(status, Some(SharedStatus::Connected));
    /// # Ok(())
    /// # }
    /// ```
    pub fn shared_state(mut self, shared: SharedState) -> Self {
        self.shared_state = Some(shared);
        self
    }
}

impl Stack {
    /// The shared state this stack's decisions go through, if any (its
    /// [`status`](SharedState::status) and counts, for `/health`).
    pub fn shared_state(&self) -> Option<&SharedState> {
        self.shared_state.as_ref()
    }
}

/// Attaches `shared` to the built stack's breakers.
pub(super) fn attach(
    shared: Option<SharedState>,
    circuits: &tower_llm_circuit::CircuitHandle,
) -> Result<Option<SharedState>, StackError> {
    match shared {
        Some(shared) => {
            shared
                .attach(circuits)
                .map_err(|e| StackError(e.to_string()))?;
            Ok(Some(shared))
        }
        None => Ok(None),
    }
}
