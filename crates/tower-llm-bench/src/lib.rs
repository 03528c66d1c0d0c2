//! tower-llm's benchmarks beside its peers, in a crate of their own so that
//! the peer crates (tower-resilience, reqwest-retry, …) and the chart
//! library stay out of the facade's dependency tree.
//!
//! Nothing here is meant to be used; the benches are the content:
//!
//! ```text
//! cargo bench -p tower-llm-bench --bench chaos    # the chaos suite: rewrites BENCHMARKS.md's tables and charts
//! cargo bench -p tower-llm-bench --bench stack    # the stack's cost beside tower-resilience and tower::retry
//! ```
