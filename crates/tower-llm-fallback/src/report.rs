//! What a fallback tells about its work.

use std::sync::Arc;

use tower_llm_classify::{Classification, ErrorKind};

/// Which target served a call and what failed on the way; on the response's
/// extensions and on the final error's.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct FallbackReport {
    /// The target whose answer this is (`None` when every target failed).
    pub served_by: Option<Arc<str>>,
    /// Each target that failed, in order, with its classified failure.
    pub failures: Vec<(Arc<str>, Classification)>,
}

impl FallbackReport {
    /// The kinds of the failures passed on the way, with their targets.
    pub fn failed_kinds(&self) -> Vec<(&str, ErrorKind)> {
        self.failures
            .iter()
            .map(|(name, c)| (&**name, c.kind()))
            .collect()
    }
}

/// The tracing target of every event of this crate.
pub const TRACING_TARGET: &str = "tower_llm::fallback";
