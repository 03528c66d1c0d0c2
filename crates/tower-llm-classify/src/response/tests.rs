use super::*;

fn classify(status: u16, body: &str) -> Classification {
    classify_response(
        Provider::Unknown,
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        body.as_bytes(),
        SystemTime::now(),
    )
}

#[test]
fn status_alone_classifies_non_json_bodies() {
    assert_eq!(
        classify(502, "<html>Bad Gateway</html>").kind(),
        ErrorKind::ServerError
    );
    assert_eq!(classify(503, "").kind(), ErrorKind::Overloaded);
    assert_eq!(
        classify(429, "{\"error\": {\"mess").kind(),
        ErrorKind::RateLimited
    );
    assert_eq!(classify(418, "").kind(), ErrorKind::InvalidRequest);
}

#[test]
fn an_echoed_prompt_does_not_turn_a_400_into_a_rate_limit() {
    let body = r#"{"error":{"message":"Invalid value in 'rate limit 429 please'","type":"invalid_request_error"}}"#;
    assert_eq!(classify(400, body).kind(), ErrorKind::InvalidRequest);
}

#[test]
fn an_in_band_invalid_request_is_judged_as_a_400_would_be() {
    let event = |message: &str| {
        let payload = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
        classify_event(
            Provider::Anthropic,
            payload.to_string().as_bytes(),
            Phase::MidStream,
        )
    };
    // Overload is never read from a client error's text.
    let c = event("Overloaded");
    assert_eq!(c.kind(), ErrorKind::InvalidRequest);
    // An exact billing 400 is a quota, but cools nothing down.
    let c = event(
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    );
    assert_eq!(c.kind(), ErrorKind::QuotaExhausted);
    assert!(!c.may_penalise_target());
    // Without the invalid-request type, an in-band overload is one.
    let payload = br#"{"type":"error","error":{"type":"error","message":"Overloaded"}}"#;
    let c = classify_event(Provider::Anthropic, payload, Phase::MidStream);
    assert_eq!(c.kind(), ErrorKind::Overloaded);
    assert!(c.may_penalise_target());
}

#[test]
fn a_5xx_wrapping_a_429_is_a_rate_limit() {
    let body =
        r#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
    assert_eq!(classify(500, body).kind(), ErrorKind::RateLimited);
}

#[test]
fn aws_error_type_header_is_sanitised() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-errortype",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
            .parse()
            .unwrap(),
    );
    let c = classify_response(
        Provider::Bedrock,
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        br#"{"message":"Too many requests"}"#,
        SystemTime::now(),
    );
    assert_eq!(c.kind(), ErrorKind::RateLimited);
    assert_eq!(c.code(), Some("ThrottlingException"));
}
