//! Which breaker a request belongs to.

use std::fmt::{self, Write as _};
use std::hash::BuildHasher;
use std::sync::Arc;

use http::{HeaderMap, Uri};
use tower_llm_classify::RequestMeta;

/// What a key function sees of a request.
#[derive(Debug)]
#[non_exhaustive]
pub struct KeyInput<'a> {
    /// Provider, model, stream flag (computed once for the stack).
    pub meta: &'a RequestMeta,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers (credentials included: hash them, never print them).
    pub headers: &'a HeaderMap,
}

/// A custom key function: write the key into the buffer.
pub type KeyFn = dyn Fn(&KeyInput<'_>, &mut String) + Send + Sync;

/// How requests are grouped into breakers.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum KeyBy {
    /// `provider/model` (the default): a model that is down does not take
    /// the provider's other models with it.
    #[default]
    ProviderModel,
    /// The host (`api.openai.com`): one breaker per endpoint.
    Host,
    /// The host and a fingerprint of the API key: one breaker per key, for
    /// pools of keys with their own limits. The key itself is never kept.
    ApiKey,
    /// Anything else.
    Custom(Arc<KeyFn>),
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyBy::ProviderModel => "ProviderModel",
            KeyBy::Host => "Host",
            KeyBy::ApiKey => "ApiKey",
            KeyBy::Custom(_) => "Custom",
        })
    }
}

impl KeyBy {
    pub(crate) fn write(&self, input: &KeyInput<'_>, out: &mut String) {
        out.clear();
        match self {
            KeyBy::ProviderModel => {
                out.push_str(input.meta.provider.as_str());
                out.push('/');
                out.push_str(input.meta.model.as_deref().unwrap_or("-"));
            }
            KeyBy::Host => out.push_str(input.uri.host().unwrap_or("-")),
            KeyBy::ApiKey => {
                out.push_str(input.uri.host().unwrap_or("-"));
                let credential = ["authorization", "x-api-key", "api-key", "x-goog-api-key"]
                    .iter()
                    .find_map(|name| input.headers.get(*name));
                match credential {
                    Some(value) => {
                        let _ = write!(out, "/key-{:016x}", fingerprint(value.as_bytes()));
                    }
                    None => out.push_str("/no-key"),
                }
            }
            KeyBy::Custom(f) => f(input, out),
        }
    }
}

/// A keyed, per-process fingerprint of a credential.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::sync::OnceLock;
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(bytes)
}
