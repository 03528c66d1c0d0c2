//! Configuration as data: from a file (with the `serde` feature) and from
//! environment variables, with errors that name the key.

use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::policy::{ConfigError, RetryPolicy, RetryPolicyBuilder};

/// A retry policy as plain data: a preset and the settings that override
/// it. Every field is optional.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use tower_llm_retry::RetrySettings;
///
/// let config: RetrySettings = serde_json::from_str(
///     r#"{"preset": "high_availability", "max_attempts": 5, "deadline_ms": 90000}"#,
/// ).unwrap();
/// let policy = config.build().unwrap();
/// assert_eq!(policy.max_attempts(), 5);
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct RetrySettings {
    /// `sdk_default` (the default), `high_availability`, `cost_sensitive` or `development`.
    pub preset: Option<String>,
    /// Attempts in all, the first included.
    pub max_attempts: Option<u32>,
    /// The first backoff delay, in milliseconds.
    pub base_delay_ms: Option<u64>,
    /// The largest backoff delay, in milliseconds.
    pub max_delay_ms: Option<u64>,
    /// The backoff growth factor.
    pub multiplier: Option<f64>,
    /// `full`, `equal`, `decorrelated` or `none`.
    pub jitter: Option<Jitter>,
    /// The longest server hint honoured, in milliseconds.
    pub max_hint_ms: Option<u64>,
    /// The deadline over all attempts, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// The limit on one attempt, in milliseconds.
    pub attempt_timeout_ms: Option<u64>,
    /// The limit on a streamed request's wait for its response head, in
    /// milliseconds.
    pub stream_head_timeout_ms: Option<u64>,
    /// The limit on a streamed request's wait for its first content, in
    /// milliseconds.
    pub first_content_timeout_ms: Option<u64>,
    /// Whether streams are held back until their first content.
    pub first_content_guard: Option<bool>,
    /// The largest request body kept for replay, in bytes.
    pub max_body_bytes: Option<usize>,
    /// The retry budget; `enabled = false` turns it off.
    pub budget: Option<BudgetSettings>,
}

/// The retry budget as data.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct BudgetSettings {
    /// `false` turns the budget off (default `true`).
    pub enabled: Option<bool>,
    /// The window, in milliseconds (1 000 to 60 000).
    pub ttl_ms: Option<u64>,
    /// Retries allowed per second whatever the traffic.
    pub min_per_second: Option<u32>,
    /// Retries allowed per request.
    pub ratio: Option<f64>,
    /// Whether a retry that succeeds gives its withdrawal back (default
    /// `true`; see [`RetryPolicyBuilder::refund_successful_retries`]).
    pub refund_successful_retries: Option<bool>,
}

impl BudgetSettings {
    /// Each setting given, over `builder`'s budget: a value not given is
    /// the starting budget's (the default budget's when it has none).
    fn apply_to(&self, mut builder: RetryPolicyBuilder) -> RetryPolicyBuilder {
        if let Some(refund) = self.refund_successful_retries {
            builder = builder.refund_successful_retries(refund);
        }
        if self.enabled == Some(false) {
            return builder.no_budget();
        }
        // `enabled = true` alone turns on the starting budget, or the
        // default one on a policy that has none.
        if self.ttl_ms.is_none()
            && self.min_per_second.is_none()
            && self.ratio.is_none()
            && self.enabled != Some(true)
        {
            return builder;
        }
        let (ttl, min_per_second, ratio) = builder.budget_params();
        builder.budget(
            self.ttl_ms.map_or(ttl, Duration::from_millis),
            self.min_per_second.unwrap_or(min_per_second),
            self.ratio.unwrap_or(ratio),
        )
    }
}

/// The environment variables [`RetrySettings::from_env`] reads.
pub const ENV_VARS: [&str; 5] = [
    "TOWER_LLM_RETRY_MAX_ATTEMPTS",
    "TOWER_LLM_RETRY_BASE_DELAY_MS",
    "TOWER_LLM_RETRY_MAX_DELAY_MS",
    "TOWER_LLM_RETRY_MAX_HINT_MS",
    "TOWER_LLM_RETRY_DEADLINE_MS",
];

impl RetrySettings {
    /// Overrides from the process environment (see [`ENV_VARS`]).
    pub fn from_env(self) -> Result<Self, ConfigError> {
        self.from_env_with(|name| std::env::var(name).ok())
    }

    /// Overrides from `lookup` (the environment, or a map in tests).
    pub fn from_env_with(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let number = |name: &str| {
            tower_llm_classify::env::parse_var::<u64>(name, &lookup).map_err(ConfigError)
        };
        if let Some(n) = number(ENV_VARS[0])? {
            let n = u32::try_from(n)
                .map_err(|_| ConfigError(format!("{}: {n} is too large", ENV_VARS[0])))?;
            self.max_attempts = Some(n);
        }
        self.base_delay_ms = number(ENV_VARS[1])?.or(self.base_delay_ms);
        self.max_delay_ms = number(ENV_VARS[2])?.or(self.max_delay_ms);
        self.max_hint_ms = number(ENV_VARS[3])?.or(self.max_hint_ms);
        self.deadline_ms = number(ENV_VARS[4])?.or(self.deadline_ms);
        Ok(self)
    }

    /// The builder this describes: the preset, then each setting given.
    pub fn builder(&self) -> Result<RetryPolicyBuilder, ConfigError> {
        Ok(self.apply_to(self.preset_policy()?.to_builder()))
    }

    /// The preset this names (`sdk_default` when none).
    fn preset_policy(&self) -> Result<RetryPolicy, ConfigError> {
        let preset = match self.preset.as_deref().unwrap_or("sdk_default") {
            "sdk_default" => RetryPolicy::sdk_default(),
            "high_availability" => RetryPolicy::high_availability(),
            "cost_sensitive" => RetryPolicy::cost_sensitive(),
            "development" => RetryPolicy::development(),
            other => {
                return Err(ConfigError(format!(
                    "preset: `{other}` is not one of sdk_default, high_availability, cost_sensitive, development"
                )));
            }
        };
        Ok(preset)
    }

    /// Each setting given, over `builder` (its `preset` is not read): for
    /// a caller whose starting point is not one of this crate's presets,
    /// such as a stack's preset with its timeouts.
    pub fn apply_to(&self, mut builder: RetryPolicyBuilder) -> RetryPolicyBuilder {
        if let Some(n) = self.max_attempts {
            builder = builder.max_attempts(n);
        }
        let b = *builder.backoff_ref();
        let backoff = Backoff::exponential(
            self.base_delay_ms.map_or(b.base(), Duration::from_millis),
            self.max_delay_ms.map_or(b.cap(), Duration::from_millis),
        )
        .with_multiplier(self.multiplier.unwrap_or(b.multiplier()))
        .with_jitter(self.jitter.unwrap_or(b.jitter()));
        builder = builder.backoff(backoff);
        if let Some(ms) = self.max_hint_ms {
            builder = builder.max_hint(Duration::from_millis(ms));
        }
        if let Some(ms) = self.deadline_ms {
            builder = builder.deadline(Duration::from_millis(ms));
        }
        if let Some(ms) = self.attempt_timeout_ms {
            builder = builder.attempt_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.stream_head_timeout_ms {
            builder = builder.stream_head_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.first_content_timeout_ms {
            builder = builder.first_content_timeout(Duration::from_millis(ms));
        }
        if let Some(on) = self.first_content_guard {
            builder = builder.first_content_guard(on);
        }
        if let Some(bytes) = self.max_body_bytes {
            builder = builder.max_body(bytes);
        }
        if let Some(budget) = &self.budget {
            builder = budget.apply_to(builder);
        }
        builder
    }

    /// The policy this describes, checked.
    pub fn build(&self) -> Result<RetryPolicy, ConfigError> {
        self.builder()?.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_variables_override_the_preset() {
        let config = RetrySettings::default()
            .from_env_with(env(&[
                ("TOWER_LLM_RETRY_MAX_ATTEMPTS", "5"),
                ("TOWER_LLM_RETRY_BASE_DELAY_MS", "100"),
                ("TOWER_LLM_RETRY_MAX_DELAY_MS", "2000"),
                ("TOWER_LLM_RETRY_MAX_HINT_MS", "30000"),
                ("TOWER_LLM_RETRY_DEADLINE_MS", "45000"),
            ]))
            .unwrap();
        let policy = config.build().unwrap();
        assert_eq!(policy.max_attempts(), 5);
        assert_eq!(policy.backoff().base(), Duration::from_millis(100));
        assert_eq!(policy.backoff().cap(), Duration::from_secs(2));
        assert_eq!(policy.max_hint(), Duration::from_secs(30));
        assert_eq!(policy.deadline(), Some(Duration::from_secs(45)));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let error = RetrySettings::default()
            .from_env_with(env(&[("TOWER_LLM_RETRY_DEADLINE_MS", "soon")]))
            .unwrap_err();
        assert!(
            error.to_string().contains("TOWER_LLM_RETRY_DEADLINE_MS")
                && error.to_string().contains("soon"),
            "{error}"
        );
        let error = RetrySettings {
            preset: Some("yolo".into()),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("preset"), "{error}");
        let error = RetrySettings {
            base_delay_ms: Some(9000),
            ..Default::default()
        }
        .build()
        .unwrap_err();
        assert!(error.to_string().contains("cap"), "{error}");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_config_file_with_an_unknown_key_is_refused_by_name() {
        let error = serde_json::from_str::<RetrySettings>(r#"{"max_attempt": 4}"#).unwrap_err();
        assert!(error.to_string().contains("max_attempt"), "{error}");
        let config: RetrySettings = serde_json::from_str(
            r#"{"preset":"cost_sensitive","jitter":"decorrelated","budget":{"ratio":0.2}}"#,
        )
        .unwrap();
        let policy = config.build().unwrap();
        assert_eq!(policy.max_attempts(), 2);
        assert_eq!(policy.backoff().jitter(), Jitter::Decorrelated);
    }

    #[test]
    fn stream_limits_apply_over_any_starting_point() {
        let settings = RetrySettings {
            stream_head_timeout_ms: Some(15_000),
            first_content_timeout_ms: Some(45_000),
            ..Default::default()
        };
        let policy = settings.build().unwrap();
        assert_eq!(policy.stream_head_timeout(), Some(Duration::from_secs(15)));
        assert_eq!(
            policy.first_content_timeout(),
            Some(Duration::from_secs(45))
        );
        // Over another starting point, what it has and the settings do not
        // name is kept.
        let start = RetryPolicy::builder()
            .max_attempts(5)
            .attempt_timeout(Duration::from_secs(600));
        let policy = settings.apply_to(start).build().unwrap();
        assert_eq!(policy.max_attempts(), 5);
        assert_eq!(policy.attempt_timeout(), Some(Duration::from_secs(600)));
        assert_eq!(policy.stream_head_timeout(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn the_budget_can_be_turned_off_or_tuned() {
        let off = RetrySettings {
            budget: Some(BudgetSettings {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(off.build().unwrap().budget().is_none());
        let bad = RetrySettings {
            budget: Some(BudgetSettings {
                ratio: Some(-1.0),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(bad.build().unwrap_err().to_string().contains("ratio"));
    }

    #[test]
    fn enabled_alone_turns_the_default_budget_on_over_a_preset_without_one() {
        let on = RetrySettings {
            preset: Some("development".into()),
            budget: Some(BudgetSettings {
                enabled: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let policy = on.build().unwrap();
        assert!(
            policy.budget().is_some(),
            "development has no budget of its own"
        );
    }

    #[test]
    fn a_budget_setting_changes_only_what_it_names() {
        // Over high_availability (10 s, 2/s, 20 %): a ratio alone keeps its
        // window and floor, and refunds alone keep its budget.
        let ratio_only = RetrySettings {
            preset: Some("high_availability".into()),
            budget: Some(BudgetSettings {
                ratio: Some(0.3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let budget = ratio_only.build().unwrap().budget().unwrap().clone();
        assert_eq!(
            (budget.ttl(), budget.min_per_second(), budget.ratio()),
            (Duration::from_secs(10), 2, 0.3)
        );
        let no_refunds = RetrySettings {
            preset: Some("high_availability".into()),
            budget: Some(BudgetSettings {
                refund_successful_retries: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let policy = no_refunds.build().unwrap();
        assert!(!policy.refunds_successful_retries());
        let budget = policy.budget().unwrap();
        assert_eq!((budget.min_per_second(), budget.ratio()), (2, 0.2));
        assert!(
            RetrySettings::default()
                .build()
                .unwrap()
                .refunds_successful_retries()
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn refunds_are_a_budget_key() {
        let config: RetrySettings = serde_json::from_str(
            r#"{"budget":{"ttl_ms":30000,"ratio":0.14,"refund_successful_retries":false}}"#,
        )
        .unwrap();
        let policy = config.build().unwrap();
        assert!(!policy.refunds_successful_retries());
        assert_eq!(policy.budget().unwrap().ttl(), Duration::from_secs(30));
    }
}
