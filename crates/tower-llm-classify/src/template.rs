//! Provider message templates: the only way the text of an error message may
//! decide a classification.
//!
//! # Why whole templates and not phrases
//!
//! Providers repeat parts of the request in their 4xx messages: OpenAI's
//! "Unrecognized request argument supplied: X", Anthropic's "X: Extra inputs
//! are not permitted", a validator's echo of the whole input. A phrase found
//! *anywhere* in a message (LiteLLM's substring lists) lets a caller choose
//! the verdict: one request with an extra key named `will regain access on`
//! would be read as an exhausted quota and cool the key down for an hour, for
//! every caller. So a message decides only when the *whole* message is one of
//! the templates below, and only where the status agrees with the kind
//! ([`TextKind::agrees_with`]).
//!
//! A template is literal text with holes: `{n}` a number (digits, `,`, `.`,
//! `_`), `{w}` a word (anything without white space: a model name, an id, a
//! URL), and `{*}` any text. Caller text can only enter through a hole, so:
//! a template begins with a literal of at least `MIN_ANCHOR` (8) bytes, never
//! ends in `{*}` (the last `{*}` is followed by a literal of at least
//! `MIN_ANCHOR` bytes) and has at most one `{*}`. An echo that puts the
//! caller's text first ("X: Extra inputs are not permitted") then cannot
//! match, because its own fixed ending is not the template's; an echo that
//! puts it last cannot either, because its fixed beginning is not the
//! template's. The unit tests check the table against these rules, and
//! `tests/proptest_echo.rs` checks every provider echo we know with arbitrary
//! caller text.
//!
//! Matching is ASCII case-insensitive, on the message with surrounding white
//! space trimmed. Messages longer than `MAX_TEMPLATE_MESSAGE` bytes match
//! nothing (no template is that long), which bounds the work.

/// What a template says the failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextKind {
    /// A bill, a spend limit, credits: waiting will not help.
    Quota,
    /// The input does not fit the model's context window.
    Context,
    /// A safety system refused the input or the output.
    Content,
    /// One request above a per-minute token limit: it can never fit.
    TooLarge,
    /// The provider has no capacity for this model right now.
    Capacity,
    /// The provider is overloaded.
    Overload,
    /// The provider asks to slow down.
    RateLimit,
    /// The credential was refused.
    Auth,
    /// The model does not exist (for this key).
    NotFound,
}

impl TextKind {
    /// Whether a template of this kind may decide under `status` (the HTTP
    /// status, or the one written in an in-band error; `None` for an in-band
    /// error without one).
    ///
    /// `billing` templates are the exact 400s that really are billing errors
    /// (Anthropic answers "Your credit balance is too low" with a 400).
    pub(crate) fn agrees_with(self, status: Option<u16>, billing: bool) -> bool {
        let Some(status) = status else {
            return true;
        };
        match self {
            TextKind::Quota => matches!(status, 402 | 403 | 429) || (billing && status == 400),
            TextKind::Context => matches!(status, 400 | 413 | 422),
            TextKind::Content => matches!(status, 400 | 403 | 422),
            TextKind::TooLarge => matches!(status, 400 | 413 | 429),
            TextKind::Capacity => status == 429 || status >= 500,
            TextKind::Overload | TextKind::RateLimit => status >= 500,
            TextKind::Auth => matches!(status, 400 | 401 | 403),
            TextKind::NotFound => matches!(status, 400 | 404),
        }
    }
}

/// A provider's message, as it is written.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) text: &'static str,
    pub(crate) kind: TextKind,
    /// An exact billing template that a provider sends as a 400.
    pub(crate) billing: bool,
}

const fn t(text: &'static str, kind: TextKind) -> Template {
    Template {
        text,
        kind,
        billing: false,
    }
}

const fn billing(text: &'static str) -> Template {
    Template {
        text,
        kind: TextKind::Quota,
        billing: true,
    }
}

/// Longest message matched against the templates.
pub(crate) const MAX_TEMPLATE_MESSAGE: usize = 2048;

use TextKind::{Auth, Capacity, Content, Context, NotFound, Overload, Quota, RateLimit, TooLarge};

/// Every template, with where it comes from. Error codes and types decide
/// before any of these; a template is for providers and gateways that send
/// only a message (Anthropic's `invalid_request_error` for a long prompt,
/// Ollama's `{"error": "…"}`, in-band stream errors).
pub(crate) const TEMPLATES: &[Template] = &[
    // Anthropic billing 400s (LiteLLM `exception_mapping_utils.py` lists
    // "credit balance is too low" and "will regain access on").
    billing(
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    billing(
        "Your credit balance is too low to access the Claude API. Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    billing(
        "You have reached your specified API usage limits. You will regain access on {w} at {w} UTC.",
    ),
    billing(
        "You have reached your specified workspace API usage limits. You will regain access on {w} at {w} UTC.",
    ),
    // Anthropic 429 `enforced_spend_limit_reached` (also carries the code).
    t(
        "You have reached your monthly API spend limit for your usage tier. Access will resume on {w} at {w} UTC, or you can request a higher limit in the Claude Console.",
        Quota,
    ),
    // OpenAI `insufficient_quota` as relayed without its code.
    t(
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: {w}",
        Quota,
    ),
    // OpenRouter 402.
    t(
        "Insufficient credits. {*}https://openrouter.ai/settings/credits",
        Quota,
    ),
    t(
        "This request requires more credits, or fewer max_tokens. You requested up to {n} tokens, but can only afford {n}. To increase, visit {w} and upgrade to a paid account",
        Quota,
    ),
    // Context windows: Anthropic ("prompt is too long", "exceed context
    // limit"; platform.claude.com/docs/en/api/errors), OpenAI and its
    // compatibles (DeepSeek, xAI, vLLM), Gemini/Vertex, Bedrock,
    // Groq/Cerebras, llama.cpp, Ollama
    // (`server/routes.go`), Together/TGI.
    t("prompt is too long: {n} tokens > {n} maximum", Context),
    t(
        "input length and `max_tokens` exceed context limit: {n} + {n} > {n}, decrease input length or `max_tokens` and try again",
        Context,
    ),
    t(
        "This model's maximum context length is {n} tokens. However, your messages resulted in {n} tokens. Please reduce the length of the messages.",
        Context,
    ),
    t(
        "This model's maximum context length is {n} tokens. However, you requested {n} tokens ({n} in the messages, {n} in the completion). Please reduce the length of the messages or completion.",
        Context,
    ),
    t(
        "This model's maximum context length is {n} tokens. However, you requested {n} tokens ({n} in the messages, {n} in the functions, and {n} in the completion). Please reduce the length of the messages, functions, or completion.",
        Context,
    ),
    t(
        "This model's maximum context length is {n} tokens. However, you requested {n} tokens in the messages, Please reduce the length of the messages.",
        Context,
    ),
    t(
        "'max_tokens' or 'max_completion_tokens' is too large: {n}. This model's maximum context length is {n} tokens and your request has {n} input tokens ({n} > {n} - {n}). {w}",
        Context,
    ),
    t(
        "'max_tokens' or 'max_completion_tokens' is too large: {n}. This model's maximum context length is {n} tokens and your request has {n} input tokens ({n} > {n} - {n}).",
        Context,
    ),
    t(
        "The input token count ({n}) exceeds the maximum number of tokens allowed ({n}).",
        Context,
    ),
    t("Input is too long for requested model.", Context),
    t(
        "Please reduce the length of the messages or completion.",
        Context,
    ),
    t(
        "Please reduce the length of the messages or completion. Current length is {n} while limit is {n}",
        Context,
    ),
    t(
        "request ({n} tokens) exceeds the available context size ({n} tokens), try increasing it",
        Context,
    ),
    t("the input length exceeds the context length", Context),
    t(
        "input exceeds maximum context length and cannot be truncated further",
        Context,
    ),
    t(
        "input after truncation exceeds maximum context length",
        Context,
    ),
    t(
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= {n}. Given: {n} `inputs` tokens and {n} `max_new_tokens`",
        Context,
    ),
    // Content filters: Anthropic (also on Vertex), Gemini, Azure, OpenAI.
    t("Output blocked by content filtering policy", Content),
    t("The response was blocked.", Content),
    t(
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
        Content,
    ),
    t(
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: {w}",
        Content,
    ),
    t(
        "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
        Content,
    ),
    t(
        "Your task failed as a result of our safety system.",
        Content,
    ),
    // OpenAI's 429 for one request above the TPM limit.
    t(
        "Request too large for {w} in organization {w} on {*}: Limit {n}, Requested {n}. The input or output tokens must be reduced in order to run successfully. Visit {w} to learn more.",
        TooLarge,
    ),
    // Capacity: Mistral (LiteLLM PR #25078), Gemini (gemini-cli #26633).
    t("Service tier capacity exceeded for this model.", Capacity),
    t(
        "No capacity available for model {w} on the server",
        Capacity,
    ),
    // Overload, as sent with a 500/502 or inside a stream.
    t("Overloaded", Overload),
    t("The model is overloaded. Please try again later.", Overload),
    t(
        "The engine is currently overloaded, please try again later",
        Overload,
    ),
    t(
        "Our servers are currently overloaded. Please try again later.",
        Overload,
    ),
    t(
        "server busy, please try again.  maximum pending requests exceeded",
        Overload,
    ),
    t(
        "Service Unavailable. The model is currently over capacity; please try again later.",
        Overload,
    ),
    t("Loading model", Overload),
    // Rate limits inside a stream or behind a 5xx (OpenRouter, Mistral,
    // Fireworks, Bedrock, Vertex).
    t("Rate limit exceeded", RateLimit),
    t("Rate limit exceeded: {w}", RateLimit),
    t(
        "Request rate limit exceeded, please try again later",
        RateLimit,
    ),
    t("Too many requests", RateLimit),
    t(
        "Too many requests, please wait before trying again.",
        RateLimit,
    ),
    t("Resource has been exhausted (e.g. check quota).", RateLimit),
    t(
        "Resource exhausted. Please try again later. Please refer to {w} for more details.",
        RateLimit,
    ),
    // Credentials.
    t("API key not valid. Please pass a valid API key.", Auth),
    t("Invalid API Key", Auth),
    t("invalid x-api-key", Auth),
    t(
        "Incorrect API key provided: {w}. You can find your API key at {w}",
        Auth,
    ),
    // Models that do not exist, as OpenAI words it.
    t(
        "The model `{w}` does not exist or you do not have access to it.",
        NotFound,
    ),
];

/// The first template that `message` is, whole.
pub(crate) fn find(message: &str) -> Option<&'static Template> {
    let message = message.trim().as_bytes();
    if message.is_empty() || message.len() > MAX_TEMPLATE_MESSAGE {
        return None;
    }
    TEMPLATES
        .iter()
        .find(|template| matches(template.text.as_bytes(), message))
}

/// Whether `message` is `pattern`, whole (ASCII case-insensitive).
fn matches(mut pattern: &[u8], mut message: &[u8]) -> bool {
    loop {
        match pattern {
            [] => return message.is_empty(),
            [b'{', hole, b'}', rest @ ..] => return hole_matches(*hole, rest, message),
            [first, rest @ ..] => match message {
                [m, more @ ..] if m.eq_ignore_ascii_case(first) => {
                    pattern = rest;
                    message = more;
                }
                _ => return false,
            },
        }
    }
}

/// A hole at the start of `message`, then `rest` of the pattern.
fn hole_matches(hole: u8, rest: &[u8], message: &[u8]) -> bool {
    let run = match hole {
        b'n' => {
            if !message.first().is_some_and(u8::is_ascii_digit) {
                return false;
            }
            message
                .iter()
                .take_while(|b| b.is_ascii_digit() || matches!(b, b',' | b'.' | b'_'))
                .count()
        }
        b'w' => message
            .iter()
            .take_while(|b| !b.is_ascii_whitespace())
            .count(),
        b'*' => message.len(),
        _ => return false,
    };
    let shortest = usize::from(hole != b'*');
    // Longest first for numbers and words ("8192." before "8192"), shortest
    // first for free text; either way every split is tried.
    if hole == b'*' {
        (shortest..=run).any(|len| matches(rest, &message[len..]))
    } else {
        (shortest..=run)
            .rev()
            .any(|len| matches(rest, &message[len..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shortest literal a template starts with, and that follows its `{*}`.
    const MIN_ANCHOR: usize = 8;

    fn kind(message: &str) -> Option<TextKind> {
        find(message).map(|t| t.kind)
    }

    #[test]
    fn every_template_is_anchored_at_both_ends() {
        for template in TEMPLATES {
            let text = template.text;
            let first_hole = text.find('{').unwrap_or(text.len());
            assert!(
                first_hole >= MIN_ANCHOR,
                "starts with a short literal: {text}"
            );
            assert!(text.matches("{*}").count() <= 1, "two free holes: {text}");
            if let Some(at) = text.find("{*}") {
                let after = &text[at + 3..];
                let literal = after.split('{').next().unwrap_or("");
                assert!(
                    literal.len() >= MIN_ANCHOR,
                    "free hole not anchored: {text}"
                );
            }
            assert!(!text.ends_with("{*}"), "ends free: {text}");
            // Every hole is one the matcher knows.
            for (at, _) in text.match_indices('{') {
                assert!(
                    matches!(&text[at..at + 3], "{n}" | "{w}" | "{*}"),
                    "unknown hole in {text}"
                );
            }
        }
    }

    #[test]
    fn every_template_matches_itself_with_its_holes_filled() {
        for template in TEMPLATES {
            let filled = template
                .text
                .replace("{n}", "8192")
                .replace("{w}", "gpt-4o")
                .replace("{*}", "tokens per min (TPM)");
            assert_eq!(
                find(&filled).map(|t| t.kind),
                Some(template.kind),
                "{filled}"
            );
        }
    }

    #[test]
    fn a_template_matches_only_the_whole_message() {
        assert_eq!(kind("Overloaded"), Some(Overload));
        assert_eq!(kind("  overloaded\n"), Some(Overload));
        assert_eq!(kind("Overloaded: Extra inputs are not permitted"), None);
        assert_eq!(
            kind("Unrecognized request argument supplied: Overloaded"),
            None
        );
        assert_eq!(
            kind("prompt is too long: 215443 tokens > 200000 maximum"),
            Some(Context)
        );
        assert_eq!(
            kind("prompt is too long: many tokens > 200000 maximum"),
            None
        );
    }

    #[test]
    fn numbers_and_words_take_no_white_space() {
        assert_eq!(
            kind("No capacity available for model gemini-2.5-pro on the server"),
            Some(Capacity)
        );
        assert_eq!(
            kind("No capacity available for model a b on the server"),
            None
        );
        assert_eq!(
            kind("prompt is too long: 1,024 tokens > 1.5 maximum"),
            Some(Context)
        );
    }

    #[test]
    fn a_message_too_long_for_any_template_is_not_scanned() {
        let long = "Overloaded".repeat(MAX_TEMPLATE_MESSAGE);
        assert_eq!(kind(&long), None);
    }

    #[test]
    fn status_must_agree_with_the_kind() {
        assert!(Quota.agrees_with(Some(429), false));
        assert!(!Quota.agrees_with(Some(400), false));
        assert!(Quota.agrees_with(Some(400), true));
        assert!(Capacity.agrees_with(Some(529), false));
        assert!(!Capacity.agrees_with(Some(400), false));
        assert!(!Overload.agrees_with(Some(404), false));
        assert!(Context.agrees_with(None, false));
    }
}
