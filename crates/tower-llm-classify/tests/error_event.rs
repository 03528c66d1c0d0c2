#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `error_event`: a failure written as the caller's dialect carries it in
//! a stream — the provider's shape and type names, the message redacted —
//! and read back by the scanner as a failure of the same kind.

use serde_json::Value;
use tower_llm_classify::stream::{Dialect, EventScanner, Framing, error_event};
use tower_llm_classify::{Classification, ErrorKind, Phase, Provider};

fn classification(kind: ErrorKind) -> Classification {
    Classification::new(kind)
        .with_provider(Provider::Anthropic)
        .with_phase(Phase::MidStream)
        .with_request_id("req_011CVw2x3y4z")
        .with_message("Overloaded")
}

/// The one `data:` of an SSE event, parsed; and its event name.
fn sse_event(bytes: &[u8]) -> (Option<String>, Value) {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    let mut name = None;
    let mut data = None;
    for line in text.trim_end().lines() {
        if let Some(value) = line.strip_prefix("event: ") {
            name = Some(value.to_owned());
        } else if let Some(value) = line.strip_prefix("data: ") {
            assert!(data.is_none(), "one data line");
            data = Some(serde_json::from_str(value).unwrap());
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    (name, data.unwrap())
}

#[test]
fn the_openai_error_event_is_a_data_line_with_an_error_object() {
    let (name, data) = sse_event(&error_event(
        Dialect::OpenAiChat,
        &classification(ErrorKind::RateLimited),
    ));
    assert_eq!(name, None);
    let error = &data["error"];
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["param"], Value::Null);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Overloaded") && message.contains("req_011CVw2x3y4z"),
        "{message}"
    );
}

#[test]
fn the_anthropic_error_event_names_the_providers_type_for_the_kind() {
    for (kind, anthropic_type) in [
        (ErrorKind::Overloaded, "overloaded_error"),
        (ErrorKind::RateLimited, "rate_limit_error"),
        (ErrorKind::ServerError, "api_error"),
        (ErrorKind::StreamIncomplete, "api_error"),
        (ErrorKind::Timeout, "timeout_error"),
        (ErrorKind::ContextLengthExceeded, "invalid_request_error"),
        (ErrorKind::Authentication, "authentication_error"),
        (ErrorKind::QuotaExhausted, "billing_error"),
        (ErrorKind::PayloadTooLarge, "request_too_large"),
    ] {
        let (name, data) = sse_event(&error_event(Dialect::Anthropic, &classification(kind)));
        assert_eq!(name.as_deref(), Some("error"));
        assert_eq!(data["type"], "error");
        assert_eq!(data["error"]["type"], anthropic_type, "{kind:?}");
        assert!(
            data["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Overloaded")
        );
    }
}

#[test]
fn the_responses_error_event_is_named_error_with_a_code() {
    let (name, data) = sse_event(&error_event(
        Dialect::OpenAiResponses,
        &classification(ErrorKind::Overloaded),
    ));
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(data["type"], "error");
    assert_eq!(data["code"], "server_is_overloaded");
}

#[test]
fn the_ollama_error_is_one_json_line() {
    let bytes = error_event(
        Dialect::OllamaNdjson,
        &classification(ErrorKind::ServerError),
    );
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(text.matches('\n').count(), 1);
    assert!(text.ends_with('\n'));
    let line: Value = serde_json::from_str(text).unwrap();
    assert!(line["error"].as_str().unwrap().contains("Overloaded"));
}

#[test]
fn every_kind_is_read_back_by_the_scanner_as_a_failure_in_every_dialect() {
    for dialect in [
        Dialect::OpenAiChat,
        Dialect::Anthropic,
        Dialect::OpenAiResponses,
        Dialect::OllamaNdjson,
        Dialect::Generic,
    ] {
        let framing = match dialect {
            Dialect::OllamaNdjson => Framing::Ndjson,
            _ => Framing::Sse,
        };
        for kind in ErrorKind::ALL {
            let mut scanner = EventScanner::new(framing, dialect, Provider::Unknown);
            let event = scanner.feed(&error_event(dialect, &classification(kind)));
            assert!(event.failed && !event.malformed, "{dialect:?} {kind:?}");
        }
    }
}

#[test]
fn the_kinds_each_dialect_can_name_survive_the_round_trip() {
    // Anthropic has no type for a context overflow (it says so in the
    // message, "prompt is too long"): the kinds its types name survive.
    let anthropic = [
        ErrorKind::Overloaded,
        ErrorKind::RateLimited,
        ErrorKind::QuotaExhausted,
        ErrorKind::Authentication,
        ErrorKind::Permission,
        ErrorKind::NotFound,
        ErrorKind::Timeout,
        ErrorKind::PayloadTooLarge,
        ErrorKind::InvalidRequest,
    ];
    let openai = [
        ErrorKind::Overloaded,
        ErrorKind::RateLimited,
        ErrorKind::QuotaExhausted,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::Authentication,
        ErrorKind::NotFound,
        ErrorKind::ServerError,
    ];
    for (dialect, provider, kinds) in [
        (Dialect::OpenAiChat, Provider::OpenAi, &openai[..]),
        (Dialect::Anthropic, Provider::Anthropic, &anthropic[..]),
    ] {
        for &kind in kinds {
            let mut scanner = EventScanner::new(Framing::Sse, dialect, provider);
            scanner.feed(&error_event(dialect, &classification(kind)));
            assert_eq!(scanner.error().unwrap().kind(), kind, "{dialect:?}");
        }
    }
}

#[test]
fn credentials_and_account_ids_in_the_message_are_redacted() {
    let leaky = Classification::new(ErrorKind::Authentication).with_message(
        "Incorrect API key provided: sk-proj-AbC123dEf456 for org-XyZ789; header was Bearer abc.def",
    );
    for dialect in [
        Dialect::OpenAiChat,
        Dialect::Anthropic,
        Dialect::OllamaNdjson,
    ] {
        let bytes = error_event(dialect, &leaky);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            !text.contains("sk-proj") && !text.contains("XyZ789"),
            "{text}"
        );
        assert!(!text.contains("abc.def"), "{text}");
        assert!(text.contains("org-[redacted]"), "{text}");
    }
}

#[test]
fn a_message_with_quotes_and_newlines_stays_one_valid_event() {
    let c = Classification::new(ErrorKind::ServerError)
        .with_message("line one\nline \"two\"\r\n\tdone \\ end");
    let (_, data) = sse_event(&error_event(Dialect::OpenAiChat, &c));
    assert!(
        data["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line \"two\"")
    );
}
