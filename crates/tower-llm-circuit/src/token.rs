//! [`RequestToken`]: what every attempt of one caller's request carries, so
//! that a breaker tells a request's own retries from other requests.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Request;

/// The identity of one caller's request across its attempts: put it in the
/// request's extensions above the retry layer (which copies the extensions
/// into every attempt) and every attempt carries the same token; another
/// request carries another.
///
/// The circuit reads it in half-open only: a request whose probe of a key
/// failed is refused as open if it comes back to probe that key again
/// (its own retry), so that the key's few probes come from different
/// requests, and the request moves on to a fallback at once instead of
/// spending the probes that would have found the key recovered. Without a
/// token, every attempt may probe (as before).
///
/// ```
/// use tower_llm_circuit::RequestToken;
///
/// let mut request = http::Request::new(());
/// let token = RequestToken::get_or_insert(&mut request);
/// // What the retry layer does for each attempt: the extensions are copied.
/// let attempt = request.clone();
/// assert_eq!(attempt.extensions().get::<RequestToken>(), Some(&token));
/// assert_ne!(RequestToken::new(), token);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestToken(NonZeroU64);

impl RequestToken {
    /// A token no other request of this process has (a counter: no
    /// allocation, no clock).
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // 2^64 requests are never reached; 0 would be skipped anyway.
        RequestToken(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN))
    }

    /// The request's token, inserted first if it has none.
    pub fn get_or_insert<B>(request: &mut Request<B>) -> RequestToken {
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
