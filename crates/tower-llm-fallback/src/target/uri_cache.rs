//! [`UriCache`]: the URLs a target made, kept per request path.

use http::Uri;

/// The URLs a target with a base URL made for the paths it was sent, so
/// that a path seen before costs its URL no formatting, parsing nor
/// allocation (a clone shares the parts). Only paths without a query,
/// and at most [`UriCache::MOST`] of them: a gateway forwards a handful
/// of API paths, and a caller sending many others only misses the cache.
#[derive(Debug, Default)]
pub(crate) struct UriCache(std::sync::RwLock<Vec<(Box<str>, Uri)>>);

impl UriCache {
    const MOST: usize = 32;

    pub(super) fn get(&self, path: &str) -> Option<Uri> {
        let kept = self.0.read().unwrap_or_else(|p| p.into_inner());
        kept.iter()
            .find(|(seen, _)| **seen == *path)
            .map(|(_, uri)| uri.clone())
    }

    pub(super) fn keep(&self, path: &str, uri: &Uri) {
        let mut kept = self.0.write().unwrap_or_else(|p| p.into_inner());
        if kept.len() < Self::MOST && !kept.iter().any(|(seen, _)| **seen == *path) {
            kept.push((path.into(), uri.clone()));
        }
    }
}
