//! [`Provider`]: who answered, detected from the request or set explicitly.

use std::fmt;

use crate::bytes::{contains_any, find};

/// The LLM provider (or server software) a request goes to.
///
/// It decides which headers carry the request id and rate-limit hints and how
/// a stream ends. Error bodies are recognised whatever the provider, since
/// OpenAI-compatible hosts and gateways mix the shapes; the provider breaks
/// ties.
///
/// Detected from the request URI by [`Provider::detect`]; set it explicitly
/// with [`ClassifyLayer::provider`](crate::ClassifyLayer::provider) when a
/// proxy hides the real host.
///
/// ```
/// use tower_llm_classify::Provider;
///
/// let uri: http::Uri = "https://api.anthropic.com/v1/messages".parse().unwrap();
/// assert_eq!(Provider::detect(&uri), Provider::Anthropic);
/// let uri: http::Uri = "http://localhost:11434/api/chat".parse().unwrap();
/// assert_eq!(Provider::detect(&uri), Provider::Ollama);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI (`api.openai.com`).
    OpenAi,
    /// Azure OpenAI / Microsoft Foundry.
    AzureOpenAi,
    /// Anthropic's Claude API.
    Anthropic,
    /// Google Gemini API (AI Studio).
    Gemini,
    /// Google Vertex AI.
    VertexAi,
    /// AWS Bedrock Runtime.
    Bedrock,
    /// Mistral AI.
    Mistral,
    /// OpenRouter.
    OpenRouter,
    /// Groq.
    Groq,
    /// xAI.
    Xai,
    /// Together AI.
    Together,
    /// DeepSeek.
    DeepSeek,
    /// Fireworks AI.
    Fireworks,
    /// Ollama (native API or its `/v1` OpenAI-compatible API).
    Ollama,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// llama.cpp's server.
    LlamaCpp,
    /// LM Studio's local server.
    LmStudio,
    /// Any other server that speaks the OpenAI API.
    OpenAiCompatible,
    /// Unknown.
    Unknown,
}

impl Provider {
    /// Every provider, in declaration order.
    pub const ALL: [Provider; 19] = [
        Provider::OpenAi,
        Provider::AzureOpenAi,
        Provider::Anthropic,
        Provider::Gemini,
        Provider::VertexAi,
        Provider::Bedrock,
        Provider::Mistral,
        Provider::OpenRouter,
        Provider::Groq,
        Provider::Xai,
        Provider::Together,
        Provider::DeepSeek,
        Provider::Fireworks,
        Provider::Ollama,
        Provider::Vllm,
        Provider::LlamaCpp,
        Provider::LmStudio,
        Provider::OpenAiCompatible,
        Provider::Unknown,
    ];

    /// The stable `snake_case` name, used in logs, metrics and configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::AzureOpenAi => "azure_openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::VertexAi => "vertex_ai",
            Provider::Bedrock => "bedrock",
            Provider::Mistral => "mistral",
            Provider::OpenRouter => "openrouter",
            Provider::Groq => "groq",
            Provider::Xai => "xai",
            Provider::Together => "together",
            Provider::DeepSeek => "deepseek",
            Provider::Fireworks => "fireworks",
            Provider::Ollama => "ollama",
            Provider::Vllm => "vllm",
            Provider::LlamaCpp => "llama_cpp",
            Provider::LmStudio => "lm_studio",
            Provider::OpenAiCompatible => "openai_compatible",
            Provider::Unknown => "unknown",
        }
    }

    /// Detects the provider from the request URI: the host for hosted APIs,
    /// the path (and conventional port) for local servers.
    ///
    /// Local servers are told apart by their default ports (Ollama 11434,
    /// LM Studio 1234, vLLM 8000, llama.cpp 8080) only when the path does not
    /// already say it; anything else on an OpenAI-style path is
    /// [`OpenAiCompatible`](Provider::OpenAiCompatible).
    pub fn detect(uri: &http::Uri) -> Provider {
        let host = uri.authority().map(|authority| host_of(authority.as_str()));
        if let Some(host) = host
            && let Some(provider) = Self::from_host(host)
        {
            return provider;
        }
        let path = uri.path();
        if path.starts_with("/api/chat")
            || path.starts_with("/api/generate")
            || path.starts_with("/api/embed")
        {
            return Provider::Ollama;
        }
        match uri.port_u16() {
            Some(11434) => return Provider::Ollama,
            Some(1234) => return Provider::LmStudio,
            Some(8000) if is_local(host) => return Provider::Vllm,
            Some(8080) if is_local(host) => return Provider::LlamaCpp,
            _ => {}
        }
        if path.ends_with("/messages") {
            // Anthropic's wire format behind a proxy or gateway.
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

    /// The hosted API `host` belongs to: the domain itself or a subdomain
    /// of it, in any ASCII case, with or without the root's trailing dot.
    fn from_host(host: &str) -> Option<Provider> {
        let host = host.trim_end_matches('.').as_bytes();
        let is = |domain: &str| is_domain_or_subdomain(host, domain.as_bytes());
        // Every domain below ends with its top-level label, so that label
        // picks the few to compare with.
        let top = host
            .iter()
            .rposition(|&b| b == b'.')
            .map_or(host, |dot| &host[dot + 1..]);
        let provider = if top.eq_ignore_ascii_case(b"com") {
            if is("api.openai.com") {
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
            } else if ends_with_ignoring_ascii_case(host, b"aiplatform.googleapis.com") {
                // Regional endpoints: `us-central1-aiplatform.googleapis.com`.
                Provider::VertexAi
            } else if host.starts_with(b"bedrock-runtime") && is("amazonaws.com") {
                Provider::Bedrock
            } else if is("api.groq.com") {
                Provider::Groq
            } else if is("api.deepseek.com") {
                Provider::DeepSeek
            } else {
                return None;
            }
        } else if top.eq_ignore_ascii_case(b"ai") {
            if is("api.mistral.ai") {
                Provider::Mistral
            } else if is("openrouter.ai") {
                Provider::OpenRouter
            } else if is("api.x.ai") {
                Provider::Xai
            } else if is("api.together.ai") {
                Provider::Together
            } else if is("api.fireworks.ai") {
                Provider::Fireworks
            } else {
                return None;
            }
        } else if top.eq_ignore_ascii_case(b"xyz") && is("api.together.xyz") {
            Provider::Together
        } else {
            return None;
        };
        Some(provider)
    }

    /// The response header that carries the provider's request id.
    pub(crate) fn request_id_headers(self) -> &'static [&'static str] {
        match self {
            Provider::Anthropic => &["request-id", "x-request-id"],
            Provider::Bedrock => &["x-amzn-requestid", "x-amzn-request-id"],
            Provider::AzureOpenAi => &["apim-request-id", "x-request-id", "x-ms-request-id"],
            _ => &["x-request-id", "request-id", "x-amzn-requestid"],
        }
    }
}

/// The host of a URI's authority, as [`http::uri::Authority::host`] reads
/// it: after the last `@`, up to the first `:` after it, or through the `]`
/// of an IPv6 literal. A bare host is told in a word or two, and the rest
/// found a word at a time, where http's string searches cost most of what
/// detecting a provider did.
fn host_of(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    // Most authorities are a bare host: no user, no port, no IPv6 literal.
    if !contains_any(bytes, b"@:[") {
        return authority;
    }
    let start = match bytes.iter().rposition(|&b| b == b'@') {
        Some(at) => at + 1,
        None => 0,
    };
    let host_port = &bytes[start..];
    let end = if host_port.first() == Some(&b'[') {
        find(host_port, b']').map_or(host_port.len(), |at| at + 1)
    } else {
        find(host_port, b':').unwrap_or(host_port.len())
    };
    &authority[start..start + end]
}

/// Whether `host` is `domain` or a subdomain of it, in any ASCII case.
fn is_domain_or_subdomain(host: &[u8], domain: &[u8]) -> bool {
    ends_with_ignoring_ascii_case(host, domain)
        && (host.len() == domain.len() || host[host.len() - domain.len() - 1] == b'.')
}

/// Whether `bytes` ends with `suffix`, in any ASCII case. The first byte
/// turns most other domains away before the rest is compared, and hosts
/// are nearly always written in lower case: a plain comparison settles
/// them.
fn ends_with_ignoring_ascii_case(bytes: &[u8], suffix: &[u8]) -> bool {
    let Some(tail) = bytes.len().checked_sub(suffix.len()).map(|at| &bytes[at..]) else {
        return false;
    };
    match (tail.first(), suffix.first()) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => false,
        _ => tail == suffix || tail.eq_ignore_ascii_case(suffix),
    }
}

fn is_local(host: Option<&str>) -> bool {
    matches!(
        host,
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1" | "0.0.0.0")
    )
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::names::named_enum!(Provider, UnknownProvider, "provider");

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(uri: &str) -> Provider {
        Provider::detect(&uri.parse().unwrap())
    }

    #[test]
    fn detects_hosted_providers_by_host() {
        assert_eq!(
            detect("https://api.openai.com/v1/chat/completions"),
            Provider::OpenAi
        );
        assert_eq!(
            detect(
                "https://myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
            ),
            Provider::AzureOpenAi
        );
        assert_eq!(
            detect(
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"
            ),
            Provider::Gemini
        );
        assert_eq!(
            detect(
                "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/g:generateContent"
            ),
            Provider::VertexAi
        );
        assert_eq!(
            detect("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke"),
            Provider::Bedrock
        );
        assert_eq!(
            detect("https://openrouter.ai/api/v1/chat/completions"),
            Provider::OpenRouter
        );
        assert_eq!(
            detect("https://API.OPENAI.COM/v1/chat/completions"),
            Provider::OpenAi
        );
    }

    #[test]
    fn a_lookalike_host_is_not_the_provider() {
        assert_ne!(
            detect("https://evilapi.openai.com.example/v1/chat/completions"),
            Provider::OpenAi
        );
        assert_ne!(
            detect("https://notapi.openai.com/v1/chat/completions"),
            Provider::OpenAi
        );
    }

    #[test]
    fn detects_local_servers_by_path_and_port() {
        assert_eq!(detect("http://gpu-box:9999/api/chat"), Provider::Ollama);
        assert_eq!(
            detect("http://localhost:11434/v1/chat/completions"),
            Provider::Ollama
        );
        assert_eq!(
            detect("http://localhost:1234/v1/chat/completions"),
            Provider::LmStudio
        );
        assert_eq!(
            detect("http://localhost:8000/v1/chat/completions"),
            Provider::Vllm
        );
        assert_eq!(
            detect("http://localhost:8080/v1/chat/completions"),
            Provider::LlamaCpp
        );
        assert_eq!(
            detect("http://gateway.internal/v1/chat/completions"),
            Provider::OpenAiCompatible
        );
        assert_eq!(
            detect("http://gateway.internal/v1/messages"),
            Provider::Anthropic
        );
        assert_eq!(detect("/health"), Provider::Unknown);
    }

    #[test]
    fn every_provider_round_trips_through_its_name() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>(), Ok(provider));
        }
    }
}
