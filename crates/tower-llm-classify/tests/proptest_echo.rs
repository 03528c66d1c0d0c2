//! Caller text never decides a classification.
//!
//! Providers repeat parts of the request in their 4xx messages. For every
//! such echo we know of and any caller text X, the classification must be
//! the one the same echo gets with a neutral X: same kind, same retry
//! decision and hint, same standing towards shared breaker state. X is drawn
//! from every phrase LiteLLM and this crate ever matched, every provider
//! message of the fixture corpus (what a forger would copy), and arbitrary
//! text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use proptest::prelude::*;
use serde_json::json;
use tower_llm_classify::{Classification, ErrorKind, Provider, classify_response};

/// One echo: provider, status, and the body with `X` put in its place.
struct Echo {
    name: &'static str,
    provider: Provider,
    status: u16,
    body: fn(&str) -> serde_json::Value,
}

fn openai_error(message: String, code: Option<&str>, param: Option<&str>) -> serde_json::Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
}

fn anthropic_error(kind: &str, message: String) -> serde_json::Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011"})
}

fn google_error(code: u16, status: &str, message: String) -> serde_json::Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

const ECHOES: &[Echo] = &[
    Echo {
        name: "openai unrecognized argument",
        provider: Provider::OpenAi,
        status: 400,
        body: |x| {
            openai_error(
                format!("Unrecognized request argument supplied: {x}"),
                None,
                None,
            )
        },
    },
    Echo {
        name: "openai invalid value",
        provider: Provider::OpenAi,
        status: 400,
        body: |x| {
            openai_error(
                format!(
                    "Invalid value: '{x}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."
                ),
                Some("invalid_value"),
                Some("messages[0].role"),
            )
        },
    },
    Echo {
        name: "openai invalid value, no code",
        provider: Provider::OpenAi,
        status: 400,
        body: |x| openai_error(format!("Invalid value: '{x}'"), None, None),
    },
    Echo {
        name: "openai invalid type",
        provider: Provider::OpenAi,
        status: 400,
        body: |x| {
            openai_error(
                format!("Invalid type for '{x}': expected a string, but got an object instead."),
                Some("invalid_type"),
                None,
            )
        },
    },
    Echo {
        name: "openai model not found",
        provider: Provider::OpenAi,
        status: 404,
        body: |x| {
            openai_error(
                format!("The model `{x}` does not exist or you do not have access to it."),
                Some("model_not_found"),
                None,
            )
        },
    },
    Echo {
        name: "azure unrecognized argument",
        provider: Provider::AzureOpenAi,
        status: 400,
        body: |x| {
            openai_error(
                format!("Unrecognized request argument supplied: {x}"),
                None,
                None,
            )
        },
    },
    Echo {
        name: "anthropic extra input",
        provider: Provider::Anthropic,
        status: 400,
        body: |x| {
            anthropic_error(
                "invalid_request_error",
                format!("{x}: Extra inputs are not permitted"),
            )
        },
    },
    Echo {
        name: "anthropic field required",
        provider: Provider::Anthropic,
        status: 400,
        body: |x| anthropic_error("invalid_request_error", format!("{x}: Field required")),
    },
    Echo {
        name: "anthropic model not found",
        provider: Provider::Anthropic,
        status: 404,
        body: |x| anthropic_error("not_found_error", format!("model: {x}")),
    },
    Echo {
        name: "gemini unknown field",
        provider: Provider::Gemini,
        status: 400,
        body: |x| {
            google_error(
                400,
                "INVALID_ARGUMENT",
                format!("Invalid JSON payload received. Unknown name \"{x}\": Cannot find field."),
            )
        },
    },
    Echo {
        name: "gemini model not found",
        provider: Provider::Gemini,
        status: 404,
        body: |x| {
            google_error(
                404,
                "NOT_FOUND",
                format!(
                    "models/{x} is not found for API version v1beta, or is not supported for generateContent."
                ),
            )
        },
    },
    Echo {
        name: "bedrock extraneous key",
        provider: Provider::Bedrock,
        status: 400,
        body: |x| json!({"message": format!("Malformed input request: #: extraneous key [{x}] is not permitted, please reformat your input and try again.")}),
    },
    Echo {
        name: "ollama model not found",
        provider: Provider::Ollama,
        status: 404,
        body: |x| json!({"error": format!("model \"{x}\" not found, try pulling it first")}),
    },
    Echo {
        name: "ollama unmarshal",
        provider: Provider::Ollama,
        status: 400,
        body: |x| json!({"error": format!("json: cannot unmarshal string into Go struct field ChatRequest.{x} of type bool")}),
    },
    Echo {
        name: "vllm extra forbidden",
        provider: Provider::Vllm,
        status: 400,
        body: |x| {
            json!({"object": "error", "type": "BadRequestError", "code": 400,
                   "message": format!("[{{'type': 'extra_forbidden', 'loc': ('body', '{x}'), 'msg': 'Extra inputs are not permitted', 'input': 1}}]")})
        },
    },
    Echo {
        name: "unprocessable echo of the input",
        provider: Provider::Unknown,
        status: 422,
        body: |x| json!({"detail": format!("[{{'type': 'missing', 'loc': ['body', 'messages'], 'msg': 'Field required', 'input': {{'model': '{x}'}}}}]")}),
    },
    Echo {
        name: "bare message is the caller's text",
        provider: Provider::Unknown,
        status: 400,
        body: |x| json!({"error": {"message": format!("Invalid 'messages[0].content': {x}"), "type": "invalid_request_error"}}),
    },
];

/// Every phrase this crate or LiteLLM matched inside messages before
/// classification required whole templates.
const PHRASES: &[&str] = &[
    "credit balance is too low",
    "insufficient credits",
    "requires more credits",
    "spend limit",
    "will regain access on",
    "exceed context limit",
    "this model's maximum context length is",
    "string too long. expected a string with maximum length",
    "model's maximum context limit",
    "is longer than the model's context length",
    "input tokens exceed the configured limit",
    "`inputs` tokens + `max_new_tokens` must be",
    "exceeds the available context size",
    "exceeds the maximum number of tokens allowed",
    "while limit is",
    "maximum input length is",
    "prompt is too long",
    "prompt: length",
    "input length and `max_tokens` exceed context limit",
    "too many tokens",
    "too many input tokens",
    "input is too long",
    "exceed model maximum",
    "exceeds maximum context length",
    "input exceeds maximum context length",
    "the input length exceeds the context length",
    "maximum context length",
    "context window",
    "content_policy_violation",
    "responsibleaipolicyviolation",
    "the response was filtered due to the prompt triggering",
    "your task failed as a result of our safety system",
    "rejected as a result of our safety system",
    "the model produced invalid content",
    "content_filter_policy",
    "content filtering policy",
    "the response was blocked",
    "violating our usage policy",
    "flagged for moderation",
    "requires moderation",
    "service tier capacity exceeded",
    "no capacity available",
    "overloaded",
    "capacity exceeded",
    "server busy",
    "model is loading",
    "temporarily unavailable",
    "api key not valid",
    "incorrect api key",
    "invalid api key",
    "invalid x-api-key",
    "invalid authentication",
    "try pulling it first",
    "does not exist or you do not have access",
    "request too large for",
    "rate limit",
    "rate_limit_exceeded",
    "429",
    "please try again in 3600s",
    "Please retry after 86400 seconds",
    "retryDelay 3600s",
];

/// Every provider message of the fixture corpus: the texts a forger would
/// copy whole.
fn corpus_messages() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut messages = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return messages;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(fixture) = text.parse::<toml::Table>() else {
            continue;
        };
        let Some(body) = fixture.get("body").and_then(|b| b.as_str()) else {
            continue;
        };
        collect_messages(
            &serde_json::from_str(body).unwrap_or_default(),
            &mut messages,
        );
    }
    messages
}

fn collect_messages(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(s)
                        if matches!(key.as_str(), "message" | "Message" | "error" | "detail") =>
                    {
                        out.push(s.clone())
                    }
                    other => collect_messages(other, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
        _ => {}
    }
}

fn classify(echo: &Echo, x: &str) -> Classification {
    let body = (echo.body)(x).to_string();
    classify_response(
        echo.provider,
        StatusCode::from_u16(echo.status).unwrap(),
        &HeaderMap::new(),
        body.as_bytes(),
        SystemTime::UNIX_EPOCH,
    )
}

/// What outer layers decide from: everything but the message itself.
fn verdict(c: &Classification) -> (ErrorKind, bool, Option<std::time::Duration>, bool, bool) {
    (
        c.kind(),
        c.retryable(),
        c.retry_after(),
        c.may_penalise_target(),
        c.decided_by_message(),
    )
}

fn assert_neutral(x: &str) {
    for echo in ECHOES {
        let neutral = classify(echo, "foo");
        let crafted = classify(echo, x);
        assert_eq!(
            verdict(&crafted),
            verdict(&neutral),
            "{}: caller text {x:?} changed the verdict ({crafted:?} vs {neutral:?})",
            echo.name
        );
    }
}

#[test]
fn no_known_phrase_in_an_echo_changes_the_verdict() {
    for phrase in PHRASES {
        assert_neutral(phrase);
        assert_neutral(&phrase.to_uppercase());
    }
}

#[test]
fn no_real_provider_message_in_an_echo_changes_the_verdict() {
    let messages = corpus_messages();
    assert!(messages.len() > 100, "the fixture corpus was not read");
    for message in &messages {
        assert_neutral(message);
    }
}

#[test]
fn a_key_named_will_regain_access_on_is_an_invalid_request_not_a_quota() {
    let echo = &ECHOES[0];
    let c = classify(
        echo,
        "You have reached your specified API usage limits. You will regain access on 2026-01-01 at 00:00 UTC.",
    );
    assert_eq!(c.kind(), ErrorKind::InvalidRequest);
    assert!(c.may_penalise_target());
}

#[test]
fn a_key_named_no_capacity_available_is_not_retried() {
    let echo = &ECHOES[6];
    let c = classify(
        echo,
        "No capacity available for model gemini-2.5-pro on the server",
    );
    assert_eq!(c.kind(), ErrorKind::InvalidRequest);
    assert!(!c.retryable());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_caller_text_never_changes_the_verdict(x in ".{0,200}") {
        assert_neutral(&x);
    }

    #[test]
    fn phrases_inside_arbitrary_text_never_change_the_verdict(
        before in "[ -~]{0,40}",
        phrase in proptest::sample::select(PHRASES),
        after in "[ -~]{0,40}",
    ) {
        assert_neutral(&format!("{before}{phrase}{after}"));
    }
}
