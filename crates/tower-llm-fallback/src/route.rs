//! Where a failed request goes next, from its classification alone.

use tower_llm_classify::{Classification, ErrorKind};

/// What a failure of one target means for the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// Any later target may serve it.
    Next,
    /// Only later targets listed as larger-context, with a larger window.
    LargerContext,
    /// Only later targets listed for content-filter failures.
    ContentFilter,
    /// No target can: return the error (the request itself is wrong).
    Stop,
}

/// What moves on: tuned with [`FallbackBuilder`](crate::FallbackBuilder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoutePolicy {
    pub(crate) on_authentication: bool,
    pub(crate) on_invalid_request: bool,
}

impl RoutePolicy {
    /// The route for a failure with `c` (LiteLLM Router's three kinds of
    /// fallback: `fallbacks`, `context_window_fallbacks`,
    /// `content_policy_fallbacks`).
    pub(crate) fn route(&self, c: &Classification) -> Route {
        match c.kind() {
            ErrorKind::ContextLengthExceeded => Route::LargerContext,
            ErrorKind::ContentFiltered => Route::ContentFilter,
            ErrorKind::InvalidRequest | ErrorKind::PayloadTooLarge => {
                if self.on_invalid_request {
                    Route::Next
                } else {
                    Route::Stop
                }
            }
            ErrorKind::Authentication => {
                if self.on_authentication {
                    Route::Next
                } else {
                    Route::Stop
                }
            }
            ErrorKind::Cancelled => Route::Stop,
            // Overload, server errors, timeouts, transport, broken streams,
            // rate limits that outlasted the retries below, quota, an open
            // circuit, a spent budget, an unknown model, a refused region:
            // another target may serve it.
            _ => Route::Next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_kind() {
        let policy = RoutePolicy {
            on_authentication: false,
            on_invalid_request: false,
        };
        let route = |kind| policy.route(&Classification::new(kind));
        for kind in [
            ErrorKind::Overloaded,
            ErrorKind::ServerError,
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::Transport,
            ErrorKind::RateLimited,
            ErrorKind::QuotaExhausted,
            ErrorKind::CircuitOpen,
            ErrorKind::BudgetExhausted,
            ErrorKind::NotFound,
            ErrorKind::StreamIncomplete,
        ] {
            assert_eq!(route(kind), Route::Next, "{kind}");
        }
        assert_eq!(
            route(ErrorKind::ContextLengthExceeded),
            Route::LargerContext
        );
        assert_eq!(route(ErrorKind::ContentFiltered), Route::ContentFilter);
        assert_eq!(route(ErrorKind::InvalidRequest), Route::Stop);
        assert_eq!(route(ErrorKind::Authentication), Route::Stop);
        let lenient = RoutePolicy {
            on_authentication: true,
            on_invalid_request: true,
        };
        assert_eq!(
            lenient.route(&Classification::new(ErrorKind::Authentication)),
            Route::Next
        );
    }
}
