//! [`StreamProgress`]: what Classify's scan of a stream found, published
//! for the layers above so that none of them scans the stream again.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

const CONTENT: u8 = 1;
const FAILED: u8 = 2;

/// What [`Classify`](crate::Classify) has seen of a streamed response
/// (SSE or NDJSON) so far: whether a content event went by, whether an
/// in-band error event did.
///
/// Classify puts it in the extensions of every streamed response it scans.
/// A layer above that needs to know when content starts — the retry
/// layer's first-content guard, the circuit breaker's time-to-first-content
/// — reads it after each frame it polls instead of running a scanner of its
/// own: the stream is read once. The flags are set before the frame that
/// carried the event is handed up, so a layer that just polled a frame
/// sees them. After [`failed`](StreamProgress::failed) is set, the next
/// poll of the body returns the classified error (what of the frame that
/// carried it the body passes on comes first; see
/// [`ResponseBody`](super::ResponseBody)).
///
/// Whole (non-streamed) responses carry none: their body is content.
///
/// ```
/// use tower_llm_classify::stream::StreamProgress;
///
/// let progress = StreamProgress::default();
/// assert!(!progress.content_seen());
/// ```
#[derive(Clone, Default)]
pub struct StreamProgress(Arc<AtomicU8>);

impl StreamProgress {
    /// Whether a content event has gone by (text, a tool call, a
    /// completion).
    pub fn content_seen(&self) -> bool {
        self.0.load(Ordering::Relaxed) & CONTENT != 0
    }

    /// Whether an in-band error event has gone by: the next poll of the
    /// body returns it.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Relaxed) & FAILED != 0
    }

    pub(crate) fn set_content(&self) {
        self.0.fetch_or(CONTENT, Ordering::Relaxed);
    }

    pub(crate) fn set_failed(&self) {
        self.0.fetch_or(FAILED, Ordering::Relaxed);
    }
}

impl fmt::Debug for StreamProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProgress")
            .field("content_seen", &self.content_seen())
            .field("failed", &self.failed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_what_was_seen() {
        let progress = StreamProgress::default();
        let seen_by_a_layer_above = progress.clone();
        progress.set_content();
        assert!(seen_by_a_layer_above.content_seen());
        assert!(!seen_by_a_layer_above.failed());
        progress.set_failed();
        assert!(seen_by_a_layer_above.failed());
    }
}
