//! [`UriCache`]: the URLs a target made, kept per request path.

use std::sync::OnceLock;

use http::{HeaderValue, Uri};

/// The URLs a target with a base URL made for the paths it was sent, so
/// that a path seen before costs its URL no formatting, parsing nor
/// allocation (a clone shares the parts). Only paths without a query,
/// and at most [`UriCache::MOST`] of them: a gateway forwards a handful
/// of API paths, and a caller sending many others only misses the cache.
#[derive(Debug, Default)]
pub(crate) struct UriCache {
    made: std::sync::RwLock<Vec<(Box<str>, Uri)>>,
    /// The base URL's `host` header value, made once (`None`: the base
    /// has no authority fit for one).
    host: OnceLock<Option<HeaderValue>>,
}

impl UriCache {
    const MOST: usize = 32;

    pub(super) fn get(&self, path: &str) -> Option<Uri> {
        let kept = self.made.read().unwrap_or_else(|p| p.into_inner());
        kept.iter()
            .find(|(seen, _)| **seen == *path)
            .map(|(_, uri)| uri.clone())
    }

    pub(super) fn keep(&self, path: &str, uri: &Uri) {
        let mut kept = self.made.write().unwrap_or_else(|p| p.into_inner());
        if kept.len() < Self::MOST && !kept.iter().any(|(seen, _)| **seen == *path) {
            kept.push((path.into(), uri.clone()));
        }
    }

    /// The `host` header for requests to `base`: its authority as the URL
    /// gives it (with a port it names), what an HTTP/1 client would write
    /// itself — made once and shared, where the client would format and
    /// allocate it for every request. `None` for an authority with user
    /// information (never sent as a host).
    pub(super) fn host(&self, base: &Uri) -> Option<HeaderValue> {
        self.host
            .get_or_init(|| {
                let authority = base.authority()?.as_str();
                if authority.contains('@') {
                    return None;
                }
                let value = HeaderValue::from_str(authority).ok()?;
                // Shared from the start: every later clone is a count.
                drop(value.clone());
                Some(value)
            })
            .clone()
    }
}
