//! `StackConfig`: a TOML file, environment overrides, errors that name the
//! key and never the secret, and the stack it builds over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_llm::ErrorKind;
use tower_llm::circuit::CircuitSettings;
use tower_llm::config::{FallbackOptions, RouteSettings, StackConfig};
use tower_llm::fallback::TargetSettings;
use tower_llm::retry::{BudgetSettings, Jitter, ReplayBody, RetrySettings};
use tower_llm::stack::served_by;
use tower_llm_testkit::{Fault, Simulator};

type HttpClient = Client<HttpConnector, ReplayBody>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A lookup over fixed pairs, standing in for the process environment.
fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn chat(model: &str) -> Request<String> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .unwrap()
}

const PRODUCTION: &str = r#"
preset = "high_availability"

[retry]
max_attempts = 4
base_delay_ms = 250
max_delay_ms = 4000
jitter = "full"
deadline_ms = 60000

[retry.budget]
ttl_ms = 10000
min_per_second = 2
ratio = 0.2

[circuit]
preset = "fast_trip"
failure_rate = 40.0
consecutive_failures = 3
open_ms = 20000

[fallback]
move_on_authentication = true
move_on_invalid_request = false
hedge_delay_ms = 2000
hedge_ratio = 0.05
max_body_bytes = 1048576

[[targets]]
name = "openai"
provider = "openai"
base_url = "https://api.openai.com"
api_key_env = "OPENAI_API_KEY"
context_window = 128000

[[targets]]
name = "azure"
provider = "azure"
base_url = "https://example.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21"
api_key_env = "AZURE_OPENAI_API_KEY"

[[targets]]
name = "gemini"
provider = "gemini"
base_url = "https://generativelanguage.googleapis.com/v1beta/openai"
model = "gemini-2.5-pro"
api_key_env = "GEMINI_API_KEY"
context_window = 1000000

[[targets]]
name = "local"
provider = "ollama"
base_url = "http://127.0.0.1:11434"
model = "llama3.2"

[[routes]]
model = "gpt-4o"
targets = ["openai", "azure"]
context_length = ["gemini"]
content_filter = ["local"]

[[routes]]
model = "*"
targets = ["local"]
"#;

fn target(name: &str, provider: &str, base_url: &str) -> TargetSettings {
    let mut t = TargetSettings::default();
    t.name = name.into();
    t.provider = Some(provider.into());
    t.base_url = Some(base_url.into());
    t
}

/// The error building the stack `toml` describes, without environment.
fn refused(toml: &str) -> String {
    StackConfig::from_toml(toml)
        .unwrap()
        .stack_with_env(client(), no_env)
        .unwrap_err()
        .to_string()
}

fn production_env() -> impl Fn(&str) -> Option<String> {
    env(&[
        ("OPENAI_API_KEY", "sk-openai"),
        ("AZURE_OPENAI_API_KEY", "azure-key"),
        ("GEMINI_API_KEY", "gemini-key"),
    ])
}

#[test]
fn a_realistic_file_parses_into_every_section_and_builds_its_routes() {
    let config = StackConfig::from_toml(PRODUCTION).unwrap();

    let mut budget = BudgetSettings::default();
    budget.ttl_ms = Some(10_000);
    budget.min_per_second = Some(2);
    budget.ratio = Some(0.2);
    let mut retry = RetrySettings::default();
    retry.max_attempts = Some(4);
    retry.base_delay_ms = Some(250);
    retry.max_delay_ms = Some(4_000);
    retry.jitter = Some(Jitter::Full);
    retry.deadline_ms = Some(60_000);
    retry.budget = Some(budget);

    let mut circuit = CircuitSettings::default();
    circuit.preset = Some("fast_trip".into());
    circuit.failure_rate = Some(40.0);
    circuit.consecutive_failures = Some(3);
    circuit.open_ms = Some(20_000);

    let mut fallback = FallbackOptions::default();
    fallback.move_on_authentication = Some(true);
    fallback.move_on_invalid_request = Some(false);
    fallback.hedge_delay_ms = Some(2_000);
    fallback.hedge_ratio = Some(0.05);
    fallback.max_body_bytes = Some(1_048_576);

    let mut openai = target("openai", "openai", "https://api.openai.com");
    openai.api_key_env = Some("OPENAI_API_KEY".into());
    openai.context_window = Some(128_000);
    let mut azure = target(
        "azure",
        "azure",
        "https://example.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21",
    );
    azure.api_key_env = Some("AZURE_OPENAI_API_KEY".into());
    let mut gemini = target(
        "gemini",
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
    );
    gemini.model = Some("gemini-2.5-pro".into());
    gemini.api_key_env = Some("GEMINI_API_KEY".into());
    gemini.context_window = Some(1_000_000);
    let mut local = target("local", "ollama", "http://127.0.0.1:11434");
    local.model = Some("llama3.2".into());

    let mut gpt = RouteSettings::default();
    gpt.model = "gpt-4o".into();
    gpt.targets = vec!["openai".into(), "azure".into()];
    gpt.context_length = vec!["gemini".into()];
    gpt.content_filter = vec!["local".into()];
    let mut rest = RouteSettings::default();
    rest.model = "*".into();
    rest.targets = vec!["local".into()];

    let mut expected = StackConfig::default();
    expected.preset = Some("high_availability".into());
    expected.retry = retry;
    expected.circuit = circuit;
    expected.fallback = fallback;
    expected.targets = vec![openai, azure, gemini, local];
    expected.routes = vec![gpt, rest];
    assert_eq!(config, expected);

    // And the file describes a stack that holds together.
    let stack = config
        .stack_with_env(client(), production_env())
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        stack.targets_for(Some("gpt-4o")),
        Some(vec!["openai", "azure", "gemini", "local"])
    );
    assert_eq!(
        stack.targets_for(Some("mistral-large")),
        Some(vec!["local"])
    );
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let error = StackConfig::from_toml(
        r#"
        [[targets]]
        name = "openai"
        base_url = "https://api.openai.com"
        api_key_var = "OPENAI_API_KEY"
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("api_key_var"), "{error}");
}

#[test]
fn a_pace_limit_for_a_name_no_target_has_is_refused() {
    // A typo would pace nothing, silently.
    let error = refused(
        r#"
        [[targets]]
        name = "openai"
        base_url = "http://127.0.0.1:9"

        [circuit.pace_limits.opnai]
        rpm = 10
        "#,
    );
    assert!(
        error.contains("opnai") && error.contains("openai"),
        "{error}"
    );
    // The target's own name, or one of its models, is fine.
    for key in ["openai", "openai/gpt-4o"] {
        let config = StackConfig::from_toml(&format!(
            "[[targets]]\nname = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n\n[circuit.pace_limits.\"{key}\"]\nrpm = 10\n"
        ))
        .unwrap();
        assert!(config.stack_with_env(client(), no_env).is_ok(), "{key}");
    }
}

#[test]
fn an_unknown_preset_is_refused_by_name() {
    let error = refused(
        r#"
        preset = "fastest"
        [[targets]]
        name = "local"
        base_url = "http://127.0.0.1:11434"
        "#,
    );
    assert!(error.contains("fastest"), "{error}");
    assert!(error.contains("high_availability"), "{error}");
}

const SMALL: &str = r#"
preset = "sdk_default"

[retry]
max_attempts = 2
base_delay_ms = 100

[fallback]
hedge_ratio = 0.2

[[targets]]
name = "local"
base_url = "http://127.0.0.1:11434"
"#;

#[test]
fn environment_variables_override_the_file() {
    let config = StackConfig::from_toml(SMALL)
        .unwrap()
        .from_env_with(env(&[
            ("TOWER_LLM_PRESET", "high_availability"),
            ("TOWER_LLM_RETRY_MAX_ATTEMPTS", "5"),
            ("TOWER_LLM_HEDGE_DELAY_MS", "1500"),
        ]))
        .unwrap();
    assert_eq!(config.preset.as_deref(), Some("high_availability"));
    assert_eq!(config.retry.max_attempts, Some(5));
    assert_eq!(config.retry.base_delay_ms, Some(100), "not overridden");
    assert_eq!(config.fallback.hedge_delay_ms, Some(1_500));
    assert_eq!(config.fallback.hedge_ratio, Some(0.2), "not overridden");
    // The file's lone hedge_ratio is now complete.
    config.stack_with_env(client(), no_env).unwrap();
}

#[test]
fn a_bad_environment_variable_is_named() {
    for (name, value) in [
        ("TOWER_LLM_PRESET", "fastest"),
        ("TOWER_LLM_RETRY_MAX_ATTEMPTS", "three"),
        ("TOWER_LLM_HEDGE_DELAY_MS", "soon"),
    ] {
        let error = StackConfig::from_toml(SMALL)
            .unwrap()
            .from_env_with(env(&[(name, value)]))
            .unwrap_err()
            .to_string();
        assert!(error.contains(name), "{name}: {error}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_attempts_from_the_environment_reach_the_built_stack() {
    let sim = Simulator::builder()
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let config = StackConfig::from_toml(&format!(
        "preset = \"development\"\n[[targets]]\nname = \"only\"\nbase_url = \"{}\"\n",
        sim.base_url()
    ))
    .unwrap()
    .from_env_with(env(&[("TOWER_LLM_RETRY_MAX_ATTEMPTS", "1")]))
    .unwrap();
    let stack = config
        .stack_with_env(client(), no_env)
        .unwrap()
        .build()
        .unwrap();
    let error = stack.oneshot(chat("gpt-4o")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert_eq!(sim.requests().len(), 1, "one attempt, no retry");
}

#[test]
fn a_missing_key_variable_is_named() {
    let error = refused(
        r#"
        [[targets]]
        name = "openai"
        base_url = "https://api.openai.com"
        api_key_env = "OPENAI_API_KEY"
        "#,
    );
    assert!(
        error.contains("OPENAI_API_KEY") && error.contains("openai"),
        "{error}"
    );
}

#[test]
fn no_error_ever_contains_the_key() {
    const SECRET: &str = "sk-live-0123456789abcdef";
    let key_target = |extra: &str| {
        format!(
            "[[targets]]\nname = \"openai\"\nbase_url = \"https://api.openai.com\"\napi_key_env = \"KEY\"\n{extra}\n"
        )
    };
    let cases = [
        // The key is not a valid header value.
        (key_target(""), format!("{SECRET}\n")),
        (key_target("api_key_header = \"x api key\""), SECRET.into()),
        (
            key_target("").replace("https://api.openai.com", "not a url"),
            SECRET.into(),
        ),
        (key_target("provider = \"azzure\""), SECRET.into()),
        (
            format!("{}{}", key_target(""), key_target("")),
            SECRET.into(),
        ),
        (
            format!(
                "{}[[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"azure\"]\n",
                key_target("")
            ),
            SECRET.into(),
        ),
        (
            format!("[fallback]\nhedge_ratio = 0.1\n{}", key_target("")),
            SECRET.into(),
        ),
    ];
    for (file, key) in cases {
        let config = StackConfig::from_toml(&file).unwrap();
        let lookup = env(&[("KEY", &key)]);
        let error = match config.stack_with_env(client(), lookup) {
            Err(error) => format!("{error} {error:?}"),
            Ok(stack) => {
                let error = stack.build().unwrap_err();
                format!("{error} {error:?}")
            }
        };
        assert!(!error.contains("sk-live"), "{file}: {error}");
    }
}

#[test]
fn a_hedge_ratio_without_a_hedge_delay_is_refused() {
    let error = refused(
        r#"
        [fallback]
        hedge_ratio = 0.1
        [[targets]]
        name = "local"
        base_url = "http://127.0.0.1:11434"
        "#,
    );
    assert!(
        error.contains("hedge_ratio") && error.contains("hedge_delay_ms"),
        "{error}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_target_key_reaches_only_its_own_provider_and_the_callers_never_leaves() {
    let primary = Simulator::builder()
        .api_key("sk-primary")
        .plan(Fault::overloaded())
        .start()
        .await
        .unwrap();
    let backup = Simulator::builder()
        .api_key("sk-ant-backup")
        .start()
        .await
        .unwrap();
    let config = StackConfig::from_toml(&format!(
        r#"
        preset = "development"

        [[targets]]
        name = "primary"
        provider = "openai"
        base_url = "{}"
        api_key_env = "PRIMARY_KEY"

        [[targets]]
        name = "backup"
        provider = "anthropic"
        base_url = "{}"
        model = "llama3.2"
        api_key_env = "BACKUP_KEY"
        api_key_header = "x-api-key"
        "#,
        primary.base_url(),
        backup.base_url()
    ))
    .unwrap();
    let stack = config
        .stack_with_env(
            client(),
            env(&[
                ("PRIMARY_KEY", "sk-primary"),
                ("BACKUP_KEY", "sk-ant-backup"),
            ]),
        )
        .unwrap()
        .build()
        .unwrap();

    let mut request = chat("gpt-4o");
    let headers = request.headers_mut();
    headers.insert("authorization", "Bearer sk-caller".parse().unwrap());
    headers.insert("x-api-key", "sk-caller".parse().unwrap());
    let response = stack.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), Some("backup"));

    let to_primary = primary.requests();
    let to_backup = backup.requests();
    assert!(!to_primary.is_empty() && !to_backup.is_empty());
    for sent in &to_primary {
        assert!(sent.carries_credential("sk-primary"));
        assert!(!sent.carries_credential("sk-ant-backup"));
        assert!(!sent.carries_credential("sk-caller"));
        let names: Vec<&str> = sent.credential_headers().map(|h| h.as_str()).collect();
        assert_eq!(names, ["authorization"]);
    }
    for sent in &to_backup {
        assert!(sent.carries_credential("sk-ant-backup"));
        assert!(!sent.carries_credential("sk-primary"));
        assert!(!sent.carries_credential("sk-caller"));
        let names: Vec<&str> = sent.credential_headers().map(|h| h.as_str()).collect();
        assert_eq!(names, ["x-api-key"]);
        assert_eq!(sent.model.as_deref(), Some("llama3.2"));
    }
}

#[test]
fn each_setting_that_cannot_work_is_refused_naming_its_key() {
    let cases = [
        (
            "[[targets]]\nname = \"openai\"\n",
            &["targets[0]", "base_url"][..],
        ),
        (
            "[fallback]\nhedge_delay_ms = 100\nhedge_ratio = 1.5\n[[targets]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\n",
            &["hedge_ratio", "1.5"][..],
        ),
        (
            "[[targets]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[[routes]]\nmodel = \" \"\ntargets = [\"a\"]\n",
            &["routes[0]", "model"][..],
        ),
        (
            "[[targets]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\napi_key_header = \"x-api-key\"\n",
            &["api_key_header", "api_key_env"][..],
        ),
    ];
    for (text, words) in cases {
        let config = StackConfig::from_toml(text).unwrap();
        let error = config
            .stack_with_env(client(), no_env)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        for word in words {
            assert!(error.contains(word), "{text}: {error}");
        }
    }
}
