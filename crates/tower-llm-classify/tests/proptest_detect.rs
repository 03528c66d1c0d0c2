#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pins, for arbitrary URIs and `content-type` values, that
//! `Provider::detect` and `Framing::from_header_value` decide what the
//! straightforward code they replaced decided (kept below as the
//! reference, as it was at commit 6bcdfc8): reading the host without
//! http's string searches and matching domains by their last label first
//! change no verdict.

use http::{HeaderValue, Uri};
use proptest::prelude::*;
use proptest::sample::select;
use tower_llm_classify::Provider;
use tower_llm_classify::stream::Framing;

/// `Provider::detect` as it was (`src/provider.rs`).
fn reference_detect(uri: &Uri) -> Provider {
    let path = uri.path();
    if let Some(host) = uri.host()
        && let Some(provider) = reference_from_host(host)
    {
        return provider;
    }
    if path.starts_with("/api/chat")
        || path.starts_with("/api/generate")
        || path.starts_with("/api/embed")
    {
        return Provider::Ollama;
    }
    let is_local = |host: Option<&str>| {
        matches!(
            host,
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1" | "0.0.0.0")
        )
    };
    match uri.port_u16() {
        Some(11434) => return Provider::Ollama,
        Some(1234) => return Provider::LmStudio,
        Some(8000) if is_local(uri.host()) => return Provider::Vllm,
        Some(8080) if is_local(uri.host()) => return Provider::LlamaCpp,
        _ => {}
    }
    if path.ends_with("/messages") {
        return Provider::Anthropic;
    }
    if path.ends_with("/chat/completions")
        || path.ends_with("/completions")
        || path.ends_with("/responses")
        || path.ends_with("/embeddings")
    {
        return Provider::OpenAiCompatible;
    }
    Provider::Unknown
}

fn reference_from_host(host: &str) -> Option<Provider> {
    let host = host.trim_end_matches('.');
    let is = |domain: &str| {
        host.eq_ignore_ascii_case(domain)
            || (host.len() > domain.len()
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain))
    };
    let provider = if is("api.openai.com") {
        Provider::OpenAi
    } else if is("openai.azure.com")
        || is("cognitiveservices.azure.com")
        || is("services.ai.azure.com")
    {
        Provider::AzureOpenAi
    } else if is("api.anthropic.com") {
        Provider::Anthropic
    } else if is("generativelanguage.googleapis.com") {
        Provider::Gemini
    } else if host
        .to_ascii_lowercase()
        .ends_with("aiplatform.googleapis.com")
    {
        Provider::VertexAi
    } else if host.starts_with("bedrock-runtime") && is("amazonaws.com") {
        Provider::Bedrock
    } else if is("api.mistral.ai") {
        Provider::Mistral
    } else if is("openrouter.ai") {
        Provider::OpenRouter
    } else if is("api.groq.com") {
        Provider::Groq
    } else if is("api.x.ai") {
        Provider::Xai
    } else if is("api.together.xyz") || is("api.together.ai") {
        Provider::Together
    } else if is("api.deepseek.com") {
        Provider::DeepSeek
    } else if is("api.fireworks.ai") {
        Provider::Fireworks
    } else {
        return None;
    };
    Some(provider)
}

/// `Framing::from_header_value` as it was (`src/stream/mod.rs`).
fn reference_framing(value: &HeaderValue) -> Option<Framing> {
    let value = value.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or(value).trim();
    if essence.eq_ignore_ascii_case("text/event-stream") {
        Some(Framing::Sse)
    } else if essence.eq_ignore_ascii_case("application/x-ndjson")
        || essence.eq_ignore_ascii_case("application/jsonl")
        || essence.eq_ignore_ascii_case("application/json-seq")
    {
        Some(Framing::Ndjson)
    } else {
        None
    }
}

const DOMAINS: &[&str] = &[
    "api.openai.com",
    "openai.azure.com",
    "cognitiveservices.azure.com",
    "services.ai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "us-central1-aiplatform.googleapis.com",
    "amazonaws.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "api.mistral.ai",
    "openrouter.ai",
    "api.groq.com",
    "api.x.ai",
    "api.together.xyz",
    "api.together.ai",
    "api.deepseek.com",
    "api.fireworks.ai",
    "x.ai",
    "ai",
    "com",
    "example.com",
    "openai.com.example",
    "localhost",
    "127.0.0.1",
    "0.0.0.0",
    "gpu-box",
];

const PREFIXES: &[&str] = &[
    "",
    "",
    "eu.",
    "my-res.",
    "not",
    "bedrock-runtime.",
    "bedrock-runtime",
    "BEDROCK-RUNTIME.",
    "x",
    "api.",
];

/// Flips the case of the letters whose bit is set in `mask`.
fn recase(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn authority() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        (
            select(PREFIXES),
            select(DOMAINS),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(prefix, domain, mask, dot)| {
                let host = recase(&format!("{prefix}{domain}"), mask);
                if dot { format!("{host}.") } else { host }
            }),
        Just("[::1]".to_owned()),
        Just("[2001:db8::1]".to_owned()),
        "[a-zA-Z0-9.-]{1,30}",
    ];
    (
        select(&["", "user@", "user:pass@", "a@b@", "api.openai.com@"][..]),
        host,
        select(&["", ":11434", ":1234", ":8000", ":8080", ":443", ":"][..]),
    )
        .prop_map(|(user, host, port)| format!("{user}{host}{port}"))
}

const PATHS: &[&str] = &[
    "",
    "/",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/health",
    "/v1beta/models/gemini-2.5-pro:generateContent",
];

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        (select(&["http", "https"][..]), authority(), select(PATHS))
            .prop_filter_map("a URI http parses", |(scheme, authority, path)| {
                format!("{scheme}://{authority}{path}").parse().ok()
            }),
        select(PATHS).prop_filter_map("a path http parses", |path| path.parse().ok()),
        authority().prop_filter_map("an authority http parses", |a| a.parse().ok()),
    ]
}

const MEDIA_PARTS: &[&str] = &[
    "text/event-stream",
    "TEXT/Event-Stream",
    "application/x-ndjson",
    "application/jsonl",
    "application/json-seq",
    "application/json",
    "application/grpc",
    "text/plain",
    ";",
    "; charset=utf-8",
    " ",
    "\t",
    "x",
    "\u{e9}",
];

fn content_type() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        proptest::collection::vec(select(MEDIA_PARTS), 0..5).prop_map(|parts| parts.concat()),
        ".{0,30}",
    ]
    .prop_filter_map("a header value", |text| {
        HeaderValue::from_bytes(text.as_bytes()).ok()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_provider_is_the_one_the_reference_detects(uri in uri()) {
        prop_assert_eq!(Provider::detect(&uri), reference_detect(&uri), "{}", uri);
    }

    #[test]
    fn the_framing_is_the_one_the_reference_reads(value in content_type()) {
        prop_assert_eq!(Framing::from_header_value(&value), reference_framing(&value), "{:?}", value);
    }
}

#[test]
fn a_bare_host_a_user_and_a_port_are_read_as_http_reads_them() {
    for (uri, provider) in [
        (
            "https://key@api.openai.com/v1/chat/completions",
            Provider::OpenAi,
        ),
        (
            "https://api.openai.com@evil.example/v1/chat/completions",
            Provider::OpenAiCompatible,
        ),
        (
            "https://api.openai.com:443/v1/chat/completions",
            Provider::OpenAi,
        ),
        ("http://[::1]:8000/v1/chat/completions", Provider::Vllm),
        (
            "http://u:p@localhost:8080/v1/chat/completions",
            Provider::LlamaCpp,
        ),
        (
            "https://API.Anthropic.COM./v1/messages",
            Provider::Anthropic,
        ),
    ] {
        let uri: Uri = uri.parse().unwrap();
        assert_eq!(Provider::detect(&uri), provider, "{uri}");
        assert_eq!(reference_detect(&uri), provider, "{uri}");
    }
}
