//! The `[shared]` section: several gateway replicas sharing their circuit
//! decisions (open until, cooling down until, closed again) through Redis
//! (see [`tower_llm::redis`]). Absent, each replica decides alone.
//!
//! ```toml
//! [shared]
//! redis_url_env = "GATEWAY_REDIS_URL"   # redis://[:password@]host:port/db
//! key_prefix = "tower-llm"              # one per fleet sharing a Redis
//! ```

use serde::Deserialize;
use tower_llm::redis::SharedState;

/// The key prefix when the file gives none.
pub const DEFAULT_KEY_PREFIX: &str = "tower-llm";

/// The `[shared]` section of the configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedSection {
    /// The environment variable holding the Redis URL (read from the
    /// environment, as keys are: it may hold a password). Unset: nothing
    /// is shared.
    pub redis_url_env: Option<String>,
    /// The prefix of every Redis key and channel (default `tower-llm`), so
    /// several gateways can share one Redis.
    pub key_prefix: Option<String>,
}

impl SharedSection {
    /// The shared state this section asks for, its URL read from the
    /// process environment; `None` when the section names no variable.
    /// Redis need not be up: the state connects when it can.
    ///
    /// # Errors
    ///
    /// The variable is unset or empty, the URL is not a Redis URL, or the
    /// prefix is not usable (every message names the key, never the URL).
    pub fn connect(&self) -> Result<Option<SharedState>, String> {
        self.connect_with_env(|name| std::env::var(name).ok())
    }

    /// As [`connect`](Self::connect), the URL read with `env`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<SharedState>, String> {
        let Some(variable) = &self.redis_url_env else {
            return Ok(None);
        };
        let url = env(variable)
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| {
                format!("[shared] redis_url_env: the environment variable `{variable}` is not set")
            })?;
        let prefix = self.key_prefix.as_deref().unwrap_or(DEFAULT_KEY_PREFIX);
        SharedState::connect(url.trim(), prefix)
            .map(Some)
            .map_err(|e| format!("[shared] {e} (`{variable}`, key_prefix `{prefix}`)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> SharedSection {
        toml::from_str(text).unwrap()
    }

    #[tokio::test]
    async fn no_variable_shares_nothing() {
        assert!(section("").connect_with_env(|_| None).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_missing_variable_is_named_and_a_bad_url_is_not_shown() {
        let shared = section(r#"redis_url_env = "GW_REDIS""#);
        let error = shared.connect_with_env(|_| None).unwrap_err();
        assert!(error.contains("GW_REDIS"), "{error}");
        let error = shared
            .connect_with_env(|_| Some("http://user:secret@host/".into()))
            .unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }

    #[tokio::test]
    async fn a_url_and_a_prefix_connect_in_the_background() {
        let shared = section("redis_url_env = \"GW_REDIS\"\nkey_prefix = \"fleet-a\"");
        let state = shared
            .connect_with_env(|_| Some("redis://127.0.0.1:1/".into()))
            .unwrap();
        assert!(state.is_some());
        let error = section("redis_url_env = \"GW_REDIS\"\nkey_prefix = \"two words\"")
            .connect_with_env(|_| Some("redis://127.0.0.1:1/".into()))
            .unwrap_err();
        assert!(error.contains("prefix"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<SharedSection>("redis_url = \"redis://x\"").is_err());
    }
}
