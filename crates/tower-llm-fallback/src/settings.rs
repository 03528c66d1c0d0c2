//! The targets as data (with the `serde` feature: from a file), in the same
//! style as the other crates' `RetrySettings` and `CircuitSettings`.

use http::{HeaderName, HeaderValue};

use crate::ConfigError;
use crate::continuation::Continuation;
use crate::protocol::Protocol;
use crate::service::{Fallback, FallbackBuilder};
use crate::target::Target;

/// One target as data. Its key is never in the file: `api_key_env` names
/// the environment variable that holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct TargetSettings {
    /// The name (unique).
    pub name: String,
    /// Scheme, host and path prefix; the request's path follows it (see
    /// [`Target::base_url`]): with the gateway, the base URL an OpenAI SDK
    /// takes (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`).
    pub base_url: Option<String>,
    /// The model to ask this target for.
    pub model: Option<String>,
    /// The environment variable holding this target's API key.
    pub api_key_env: Option<String>,
    /// The header the key goes in: `authorization` (as `Bearer <key>`, the
    /// default), `x-api-key`, `api-key`.
    pub api_key_header: Option<String>,
    /// What the target is, for its defaults: `openai`, `azure` (key in
    /// `api-key`), `anthropic`, `gemini` (their OpenAI-compatible
    /// endpoints), `ollama`, `vllm`, `lmstudio`, `openai-compatible`.
    pub provider: Option<String>,
    /// The API family the target speaks: `openai` (the default: every
    /// OpenAI-compatible server, and the providers' OpenAI-compatible
    /// endpoints) or `anthropic` (Anthropic's native Messages API, base URL
    /// `https://api.anthropic.com/v1`: the key goes in `x-api-key` and
    /// `anthropic-version: 2023-06-01` is sent). See [`Protocol`].
    pub protocol: Option<String>,
    /// The context window, in tokens.
    pub context_window: Option<u64>,
    /// Serves requests too long for an earlier target.
    pub larger_context: bool,
    /// Serves requests an earlier target's content policy refused.
    pub content_filter: bool,
    /// How the target continues an answer that broke after content:
    /// `trailing_assistant` (Anthropic, Ollama, llama.cpp, LM Studio),
    /// `prefix` (DeepSeek, Mistral), `continue_final_message` (vLLM) or
    /// `none`. Unset: what `provider` (else the base URL's host) is known
    /// to support; OpenAI and unknown OpenAI-compatible servers: `none`.
    pub continuation: Option<String>,
    /// Its share of a `weighted` group's requests against the other
    /// members' (1 unless set; 0 is refused).
    pub weight: Option<u32>,
}

impl TargetSettings {
    /// Applies these settings to `target` (its service already chosen): base
    /// URL, model, key (read with `env` from the variable `api_key_env`
    /// names), context window and routes. Errors name the target and the
    /// setting, never the key.
    pub fn apply<S>(
        &self,
        mut target: Target<S>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Target<S>, ConfigError> {
        let t = self;
        if t.name.is_empty() {
            return Err(ConfigError("a target needs a name".into()));
        }
        let provider = t.provider.as_deref().map(str::to_ascii_lowercase);
        let default_header = match provider.as_deref() {
            None => "authorization",
            Some("azure") => "api-key",
            Some(
                "openai" | "anthropic" | "gemini" | "ollama" | "vllm" | "lmstudio"
                | "openai-compatible",
            ) => "authorization",
            Some(other) => {
                return Err(ConfigError(format!(
                    "target `{}`: provider `{other}` is not one of openai, azure, anthropic, \
                     gemini, ollama, vllm, lmstudio, openai-compatible",
                    t.name
                )));
            }
        };
        let protocol = match t.protocol.as_deref().map(str::to_ascii_lowercase) {
            None => Protocol::OpenAi,
            Some(name) => match name.as_str() {
                "openai" => Protocol::OpenAi,
                "anthropic" => Protocol::Anthropic,
                other => {
                    return Err(ConfigError(format!(
                        "target `{}`: protocol `{other}` is not one of openai, anthropic",
                        t.name
                    )));
                }
            },
        };
        // Anthropic's native API takes its key in `x-api-key` and needs a
        // version (docs.claude.com, "Versions": 2023-06-01 is current).
        let default_header = match protocol {
            Protocol::Anthropic => "x-api-key",
            _ => default_header,
        };
        target = target.protocol(protocol);
        if protocol == Protocol::Anthropic {
            target = target.header(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static("2023-06-01"),
            );
        }
        if let Some(base) = &t.base_url {
            let uri = base
                .parse::<http::Uri>()
                .ok()
                .filter(|u| u.scheme().is_some() && u.authority().is_some())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "target `{}`: base_url `{}` is not an absolute URL",
                        t.name,
                        tower_llm_classify::redact::url_to_show(base)
                    ))
                })?;
            target = target.base_url(uri);
        }
        if let Some(model) = &t.model {
            target = target.model(model.as_str());
        }
        if t.api_key_env.is_none() && t.api_key_header.is_some() {
            return Err(ConfigError(format!(
                "target `{}`: api_key_header is set but api_key_env (the variable holding the key) is not",
                t.name
            )));
        }
        if let Some(var) = &t.api_key_env {
            let key = env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                ConfigError(format!(
                    "target `{}`: the environment variable {var} is not set",
                    t.name
                ))
            })?;
            let header = t
                .api_key_header
                .as_deref()
                .unwrap_or(default_header)
                .to_ascii_lowercase();
            let value = if header == "authorization" {
                format!("Bearer {key}")
            } else {
                key
            };
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                ConfigError(format!(
                    "target `{}`: api_key_header `{header}` is not a header name",
                    t.name
                ))
            })?;
            // The key itself is never put in an error message.
            let value = HeaderValue::from_str(&value).map_err(|_| {
                ConfigError(format!(
                    "target `{}`: the key in {var} is not a valid header value",
                    t.name
                ))
            })?;
            target = target.credential(name, value);
        }
        if let Some(window) = t.context_window {
            target = target.context_window(window);
        }
        if t.larger_context {
            target = target.larger_context();
        }
        if t.content_filter {
            target = target.for_content_filter();
        }
        let continuation = match t.continuation.as_deref().map(str::to_ascii_lowercase) {
            Some(how) => Some(match how.as_str() {
                "trailing_assistant" => Continuation::TrailingAssistant,
                "prefix" => Continuation::PrefixFlag,
                "continue_final_message" => Continuation::ContinueFinalMessage,
                "none" => Continuation::Unsupported,
                other => {
                    return Err(ConfigError(format!(
                        "target `{}`: continuation `{other}` is not one of trailing_assistant, \
                         prefix, continue_final_message, none",
                        t.name
                    )));
                }
            }),
            None => match provider.as_deref() {
                Some("vllm") => Some(Continuation::ContinueFinalMessage),
                Some("ollama" | "lmstudio") => Some(Continuation::TrailingAssistant),
                Some("openai" | "azure" | "gemini" | "openai-compatible") => {
                    Some(Continuation::Unsupported)
                }
                // Anthropic's OpenAI-compatible endpoint is not documented
                // to continue a prefill: its URL decides (the native
                // Messages API does).
                _ => None,
            },
        };
        if let Some(how) = continuation {
            target = target.continuation(how);
        }
        match t.weight {
            Some(0) => {
                return Err(ConfigError(format!(
                    "target `{}`: weight 0 would never be picked; leave it out of the group",
                    t.name
                )));
            }
            Some(weight) => target = target.weight(weight),
            None => {}
        }
        Ok(target)
    }
}

/// A fallback as data: its targets in order and what moves on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct FallbackSettings {
    /// The targets, first first.
    pub targets: Vec<TargetSettings>,
    /// Whether a 401 moves on.
    pub move_on_authentication: Option<bool>,
    /// Whether an invalid request moves on.
    pub move_on_invalid_request: Option<bool>,
}

impl FallbackSettings {
    /// The fallback these settings describe, each target's service made by
    /// `service` (from its settings) and its key read with `env` (the
    /// process environment: `|name| std::env::var(name).ok()`).
    pub fn build<S>(
        &self,
        mut service: impl FnMut(&TargetSettings) -> S,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Fallback<S>, ConfigError> {
        let mut builder: FallbackBuilder<S> = Fallback::builder();
        for t in &self.targets {
            let target = Target::new(t.name.as_str(), service(t));
            builder = builder.target(t.apply(target, &env)?);
        }
        if let Some(on) = self.move_on_authentication {
            builder = builder.move_on_authentication(on);
        }
        if let Some(on) = self.move_on_invalid_request {
            builder = builder.move_on_invalid_request(on);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FallbackSettings {
        FallbackSettings {
            targets: vec![
                TargetSettings {
                    name: "openai".into(),
                    base_url: Some("https://api.openai.com".into()),
                    api_key_env: Some("OPENAI_KEY".into()),
                    ..Default::default()
                },
                TargetSettings {
                    name: "local".into(),
                    base_url: Some("http://127.0.0.1:11434".into()),
                    model: Some("llama3.2".into()),
                    context_window: Some(128_000),
                    larger_context: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn settings_build_targets_in_order_with_their_keys() {
        let env = |name: &str| (name == "OPENAI_KEY").then(|| "sk-test".to_owned());
        let fallback = settings().build(|_| (), env).unwrap();
        assert_eq!(fallback.target_names(), ["openai", "local"]);
    }

    #[test]
    fn a_missing_key_or_bad_url_names_the_target_and_never_the_key() {
        let error = settings().build(|_| (), |_| None).unwrap_err().to_string();
        assert!(
            error.contains("openai") && error.contains("OPENAI_KEY"),
            "{error}"
        );
        let mut bad = settings();
        bad.targets[1].base_url = Some("not a url".into());
        let error = bad
            .build(|_| (), |_| Some("sk-secret".into()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("local") && !error.contains("sk-secret"),
            "{error}"
        );
        let mut newline = settings();
        newline.targets[0].api_key_header = Some("x-api-key".into());
        let error = newline
            .build(|_| (), |_| Some("sk-bad\nkey".into()))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("sk-bad"), "{error}");
        // A key in the base URL's query (Gemini's `?key=`), or a password
        // in it, is not echoed either.
        let mut keyed = settings();
        keyed.targets[1].base_url = Some("user:pw@example.com/v1beta?key=AIzaSECRET".into());
        let error = keyed
            .build(|_| (), |_| Some("sk-secret".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("example.com/v1beta"), "{error}");
        assert!(
            !error.contains("AIzaSECRET") && !error.contains("pw@"),
            "{error}"
        );
    }

    #[test]
    fn an_azure_target_sends_its_key_in_api_key_and_an_unknown_provider_is_named() {
        let mut azure = TargetSettings {
            name: "azure".into(),
            base_url: Some("https://res.openai.azure.com/openai/deployments/gpt4o".into()),
            api_key_env: Some("AZURE_KEY".into()),
            provider: Some("azure".into()),
            ..Default::default()
        };
        let target = azure
            .apply(Target::new("azure", ()), &|_| Some("k".into()))
            .unwrap();
        assert_eq!(
            target.credential.as_ref().map(|(name, _)| name.as_str()),
            Some("api-key")
        );
        azure.provider = Some("azzure".into());
        let error = azure
            .apply(Target::new("azure", ()), &|_| Some("k".into()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("azzure") && error.contains("azure"),
            "{error}"
        );
    }

    #[test]
    fn a_targets_continuation_comes_from_its_setting_its_provider_or_its_host() {
        let target = |settings: TargetSettings| {
            settings
                .apply(Target::new("t", ()), &|_| None)
                .unwrap()
                .continuation_capability()
        };
        let base = |url: &str| TargetSettings {
            name: "t".into(),
            base_url: Some(url.into()),
            ..Default::default()
        };
        assert_eq!(
            target(base("https://api.anthropic.com")),
            Continuation::TrailingAssistant
        );
        assert_eq!(
            target(base("https://api.openai.com/v1")),
            Continuation::Unsupported
        );
        let vllm = TargetSettings {
            provider: Some("vllm".into()),
            ..base("http://10.0.0.5:8000/v1")
        };
        assert_eq!(target(vllm), Continuation::ContinueFinalMessage);
        let told = TargetSettings {
            continuation: Some("prefix".into()),
            ..base("https://api.openai.com/v1")
        };
        assert_eq!(target(told), Continuation::PrefixFlag);
        let refused = TargetSettings {
            continuation: Some("none".into()),
            ..base("https://api.anthropic.com")
        };
        assert_eq!(target(refused), Continuation::Unsupported);
        let error = TargetSettings {
            continuation: Some("sometimes".into()),
            ..base("https://api.anthropic.com")
        }
        .apply(Target::new("t", ()), &|_| None)
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("sometimes") && error.contains("trailing_assistant"),
            "{error}"
        );
    }

    #[test]
    fn an_anthropic_protocol_target_sends_its_key_in_x_api_key_with_a_version() {
        let env = |_: &str| Some("sk-ant-test".to_owned());
        let settings = TargetSettings {
            name: "claude".into(),
            base_url: Some("https://api.anthropic.com/v1".into()),
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
            protocol: Some("anthropic".into()),
            ..Default::default()
        };
        let target = settings.apply(Target::new("claude", ()), &env).unwrap();
        assert_eq!(target.speaks(), Protocol::Anthropic);
        let (name, _) = target.credential.as_ref().unwrap();
        assert_eq!(name, "x-api-key");
        assert!(
            target
                .headers
                .iter()
                .any(|(n, v)| n == "anthropic-version" && v == "2023-06-01")
        );
        let openai = TargetSettings {
            protocol: None,
            ..settings.clone()
        }
        .apply(Target::new("o", ()), &env)
        .unwrap();
        assert_eq!(openai.speaks(), Protocol::OpenAi);
        let error = TargetSettings {
            protocol: Some("grpc".into()),
            ..settings
        }
        .apply(Target::new("x", ()), &env)
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("grpc") && error.contains("anthropic"),
            "{error}"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_settings_file_with_an_unknown_key_is_refused_by_name() {
        let error =
            serde_json::from_str::<FallbackSettings>(r#"{"targets":[{"name":"a","modle":"x"}]}"#)
                .unwrap_err();
        assert!(error.to_string().contains("modle"), "{error}");
    }
}
