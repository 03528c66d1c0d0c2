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
    /// A name of your choosing and the model, `name/model`: one breaker
    /// per model of each named target (a stack's targets, deployments).
    /// It spells what a [`Custom`](KeyBy::Custom) function writing the
    /// same would, and costs less per call: a key that can be compared in
    /// place need not be written first.
    TargetModel(Arc<str>),
    /// Anything else.
    Custom(Arc<KeyFn>),
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyBy::ProviderModel => "ProviderModel",
            KeyBy::Host => "Host",
            KeyBy::ApiKey => "ApiKey",
            KeyBy::TargetModel(_) => "TargetModel",
            KeyBy::Custom(_) => "Custom",
        })
    }
}

/// A key as its parts, `first` or `first/second`, read from the request
/// without writing it anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyParts<'a> {
    first: &'a str,
    second: Option<&'a str>,
}

impl KeyParts<'_> {
    /// Whether `key` is these parts, spelled out.
    #[inline]
    pub(crate) fn spell(&self, key: &str) -> bool {
        match self.second {
            None => key == self.first,
            Some(second) => {
                key.len() == self.first.len() + 1 + second.len()
                    && key.starts_with(self.first)
                    && key.as_bytes().get(self.first.len()) == Some(&b'/')
                    && key.ends_with(second)
            }
        }
    }

    fn write(&self, out: &mut String) {
        out.push_str(self.first);
        if let Some(second) = self.second {
            out.push('/');
            out.push_str(second);
        }
    }
}

impl KeyBy {
    /// The key's parts, for the ways of keying whose key the request holds
    /// as it is (`None` for those that compute it).
    #[inline]
    pub(crate) fn parts<'a>(&'a self, input: &KeyInput<'a>) -> Option<KeyParts<'a>> {
        let model = || Some(model_part(input.meta.model.as_deref()));
        match self {
            KeyBy::ProviderModel => Some(KeyParts {
                first: input.meta.provider.as_str(),
                second: model(),
            }),
            KeyBy::Host => Some(KeyParts {
                first: input.uri.host().unwrap_or("-"),
                second: None,
            }),
            KeyBy::TargetModel(name) => Some(KeyParts {
                first: name,
                second: model(),
            }),
            KeyBy::ApiKey | KeyBy::Custom(_) => None,
        }
    }

    /// The key [`KeyBy::TargetModel`]`(target)` gives a request for
    /// `model`: `target/model`, or `target/-` without one (for a layer
    /// that reads a stack's breakers, such as its attempt spans).
    pub fn target_model_key(target: &str, model: Option<&str>) -> String {
        format!("{target}/{}", model_part(model))
    }

    /// Writes the key into `out` (cleared first).
    pub(crate) fn write(&self, input: &KeyInput<'_>, out: &mut String) {
        out.clear();
        if let Some(parts) = self.parts(input) {
            parts.write(out);
            return;
        }
        match self {
            KeyBy::ApiKey => {
                out.push_str(input.uri.host().unwrap_or("-"));
                let credential = tower_llm_classify::redact::API_KEY_HEADERS
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
            KeyBy::ProviderModel | KeyBy::Host | KeyBy::TargetModel(_) => {}
        }
    }
}

/// A key's model part: the model, or `-` without one. A name longer than
/// any model's (a stack's router refuses it) is keyed as no model: a key
/// is never as large as a caller's body.
fn model_part(model: Option<&str>) -> &str {
    model
        .filter(|model| model.len() <= RequestMeta::MAX_MODEL_LEN)
        .unwrap_or("-")
}

/// A keyed, per-process fingerprint of a credential.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::sync::OnceLock;
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(key_by: &KeyBy, input: &KeyInput<'_>) -> String {
        let mut key = String::new();
        key_by.write(input, &mut key);
        key
    }

    #[test]
    fn a_key_compared_in_place_is_the_key_written() {
        let uri: Uri = "https://api.openai.com/v1/chat/completions"
            .parse()
            .unwrap();
        let headers = HeaderMap::new();
        let meta = RequestMeta::from_request(&uri, &headers, Some(br#"{"model":"gpt-4o"}"#));
        let input = KeyInput {
            meta: &meta,
            uri: &uri,
            headers: &headers,
        };
        for key_by in [
            KeyBy::ProviderModel,
            KeyBy::Host,
            KeyBy::TargetModel("primary".into()),
        ] {
            let key = written(&key_by, &input);
            let parts = key_by.parts(&input).unwrap();
            assert!(parts.spell(&key), "{key}");
            let mut near = vec![
                format!("{key}o"),
                key[..key.len() - 1].to_owned(),
                String::new(),
            ];
            if let Some(slash) = key.find('/') {
                // The same letters, the parts split elsewhere or not at all.
                let (first, second) = (&key[..slash], &key[slash + 1..]);
                near.push(format!("{first}{}/{}", &second[..1], &second[1..]));
                near.push(format!("{first}-{second}"));
            }
            for other in near {
                assert!(!parts.spell(&other), "{key} spelled as {other}");
            }
        }
        assert_eq!(
            written(&KeyBy::TargetModel("primary".into()), &input),
            "primary/gpt-4o"
        );
        // Computed keys are written, not compared in place.
        assert!(KeyBy::ApiKey.parts(&input).is_none());
    }

    #[test]
    fn a_model_name_longer_than_any_models_keys_as_no_model() {
        let uri: Uri = "https://api.openai.com/v1/chat/completions"
            .parse()
            .unwrap();
        let headers = HeaderMap::new();
        let body = format!(
            r#"{{"model":"{}"}}"#,
            "x".repeat(RequestMeta::MAX_MODEL_LEN + 1)
        );
        let meta = RequestMeta::from_request(&uri, &headers, Some(body.as_bytes()));
        let input = KeyInput {
            meta: &meta,
            uri: &uri,
            headers: &headers,
        };
        assert_eq!(written(&KeyBy::ProviderModel, &input), "openai/-");
        assert_eq!(
            written(&KeyBy::TargetModel("primary".into()), &input),
            "primary/-"
        );
        // The key a reader of a stack's breakers computes is the same.
        assert_eq!(
            KeyBy::target_model_key("primary", meta.model.as_deref()),
            "primary/-"
        );
        assert_eq!(
            KeyBy::target_model_key("primary", Some("gpt-4o")),
            "primary/gpt-4o"
        );
    }

    #[test]
    fn api_keys_are_told_apart_in_every_provider_header_and_never_written() {
        let uri: Uri = "https://gw.example.com/openai/v1/chat/completions"
            .parse()
            .unwrap();
        let key_of = |name: &str, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            let meta = RequestMeta::from_request(&uri, &headers, None);
            let input = KeyInput {
                meta: &meta,
                uri: &uri,
                headers: &headers,
            };
            written(&KeyBy::ApiKey, &input)
        };
        for name in tower_llm_classify::redact::API_KEY_HEADERS {
            let (a, b) = (key_of(name, "sk-team-a"), key_of(name, "sk-team-b"));
            assert_ne!(a, b, "two keys in {name} share a breaker");
            assert!(a.starts_with("gw.example.com/key-"), "{a}");
            assert!(!a.contains("sk-team"), "the key itself is in {a}");
        }
        assert_eq!(key_of("x-request-id", "r1"), "gw.example.com/no-key");
    }

    #[test]
    fn a_target_and_model_are_keyed_as_a_custom_function_writing_them_would() {
        let uri: Uri = "http://127.0.0.1:11434/api/chat".parse().unwrap();
        let headers = HeaderMap::new();
        let custom = KeyBy::Custom(Arc::new(|input: &KeyInput<'_>, out: &mut String| {
            out.push_str("local/");
            out.push_str(input.meta.model.as_deref().unwrap_or("-"));
        }));
        for body in [&br#"{"model":"llama3.2"}"#[..], b"{}"] {
            let meta = RequestMeta::from_request(&uri, &headers, Some(body));
            let input = KeyInput {
                meta: &meta,
                uri: &uri,
                headers: &headers,
            };
            assert_eq!(
                written(&KeyBy::TargetModel("local".into()), &input),
                written(&custom, &input)
            );
        }
    }
}
