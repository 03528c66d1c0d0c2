//! [`RequestToken`]: what every attempt of one caller's request shares, so
//! that a layer can tell a request's own retry from another request.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Request;

/// Tokens a thread hands out before it takes a new block.
const BLOCK: u64 = 1 << 16;

/// An identity for one caller's request, the same in each of its attempts.
///
/// Every [`RequestMeta`](crate::RequestMeta) has one (a request's metadata
/// is read once and copied into each attempt), so a stack pays nothing
/// more for it; a request without metadata can carry one as an extension
/// ([`get_or_insert`](Self::get_or_insert)). The circuit breaker reads it
/// to take half-open probes from different requests: a request whose
/// probe failed is not let probe again on its own retry.
///
/// ```
/// use tower_llm_classify::RequestToken;
///
/// let mut request = http::Request::new(());
/// let token = RequestToken::get_or_insert(&mut request);
/// assert_eq!(RequestToken::of(&request), Some(token));
/// assert_ne!(RequestToken::new(), token);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestToken(NonZeroU64);

impl RequestToken {
    /// A token no other request of this process has. Each thread takes
    /// blocks of 65,536 from a shared counter, so making one is a
    /// thread-local increment, not a contended atomic.
    pub fn new() -> Self {
        static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
        }
        let n = RANGE.with(|range| {
            let (mut next, mut end) = range.get();
            if next == end {
                next = NEXT_BLOCK
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_mul(BLOCK);
                end = next.saturating_add(BLOCK);
            }
            range.set((next + 1, end));
            next
        });
        // Block 0 is never handed out, so 0 never is; u64 tokens outlast
        // any process.
        RequestToken(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    /// The request's token: one set on it as an extension, else its
    /// metadata's.
    pub fn of<B>(request: &Request<B>) -> Option<RequestToken> {
        let extensions = request.extensions();
        extensions.get::<RequestToken>().copied().or_else(|| {
            extensions
                .get::<crate::RequestMeta>()
                .map(crate::RequestMeta::token)
        })
    }

    /// The request's token ([`of`](Self::of)), a new one inserted as an
    /// extension first if it has none.
    pub fn get_or_insert<B>(request: &mut Request<B>) -> RequestToken {
        if let Some(token) = RequestToken::of(request) {
            return token;
        }
        *request
            .extensions_mut()
            .get_or_insert_with(RequestToken::new)
    }

    /// The token as a number (never zero).
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl Default for RequestToken {
    /// A new token (as [`RequestToken::new`]).
    fn default() -> Self {
        RequestToken::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_made_on_several_threads_never_repeat() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..70_000)
                        .map(|_| RequestToken::new().get())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn a_request_sent_to_another_target_keeps_its_token() {
        let uri: http::Uri = "https://api.openai.com/v1/chat/completions"
            .parse()
            .unwrap();
        let headers = http::HeaderMap::new();
        let mut meta = crate::RequestMeta::from_request(&uri, &headers, Some(br#"{"model":"a"}"#));
        let token = meta.token();
        let local: http::Uri = "http://127.0.0.1:11434/v1/chat/completions"
            .parse()
            .unwrap();
        meta.retarget(&local, &headers, Some("b".into()));
        assert_eq!(meta.token(), token);
    }

    #[test]
    fn a_request_with_metadata_has_its_metadata_token() {
        let mut request = Request::post("https://api.openai.com/v1/chat/completions")
            .body(())
            .unwrap();
        let meta = crate::RequestMeta::get_or_insert(&mut request).clone();
        assert_eq!(RequestToken::of(&request), Some(meta.token()));
        assert_eq!(RequestToken::get_or_insert(&mut request), meta.token());
        assert!(request.extensions().get::<RequestToken>().is_none());
    }
}
