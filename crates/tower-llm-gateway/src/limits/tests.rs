use super::*;

fn section(toml: &str) -> RateLimitSection {
    toml::from_str(toml).unwrap()
}

#[test]
fn section_defaults_apply_to_every_endpoint_and_tokens_only_where_text_is_generated() {
    let limits = section("requests_per_minute = 60\ntokens_per_minute = 1000")
        .limits()
        .unwrap();
    for ((requests, tokens), (_, label)) in limits.quotas.iter().zip(ENDPOINTS) {
        assert_eq!(requests.map(|q| q.per_window), Some(60), "{label}");
        assert_eq!(
            tokens.map(|q| q.per_window),
            counts_tokens(label).then_some(1000),
            "{label}"
        );
    }
}

#[test]
fn an_endpoint_override_replaces_the_default_for_it_only() {
    let limits =
        section("requests_per_minute = 60\n[endpoints.embeddings]\nrequests_per_minute = 3000")
            .limits()
            .unwrap();
    let of = |label: &str| {
        let i = ENDPOINTS.iter().position(|(_, l)| *l == label).unwrap();
        limits.quotas[i].0.map(|q| q.per_window)
    };
    assert_eq!(of("embeddings"), Some(3000));
    assert_eq!(of("chat_completions"), Some(60));
}

#[test]
fn bad_limits_are_errors_naming_their_key() {
    let zero = section("requests_per_minute = 0").limits().unwrap_err();
    assert!(zero.contains("requests_per_minute: 0"), "{zero}");
    let unknown = section("[endpoints.chat]\nrequests_per_minute = 1")
        .limits()
        .unwrap_err();
    assert!(unknown.contains("`chat` is not an endpoint"), "{unknown}");
    let tokens = section("[endpoints.embeddings]\ntokens_per_minute = 1")
        .limits()
        .unwrap_err();
    assert!(tokens.contains("generates no text"), "{tokens}");
    assert!(
        toml::from_str::<RateLimitSection>("request_per_minute = 1").is_err(),
        "a misspelt key is refused"
    );
}

#[test]
fn no_section_and_an_empty_one_limit_nothing() {
    assert!(RateLimits::default().is_empty());
    assert!(section("").limits().unwrap().is_empty());
}

#[test]
fn waits_are_written_as_openai_writes_them() {
    let cases = [
        (0, "0s"),
        (120, "120ms"),
        (1_000, "1s"),
        (1_500, "1.5s"),
        (6_000, "6s"),
        (60_000, "1m0s"),
        (90_250, "1m30.25s"),
        (3_600_000, "1h0m0s"),
    ];
    for (ms, text) in cases {
        assert_eq!(go_duration(Duration::from_millis(ms)), text, "{ms} ms");
    }
}

#[test]
fn dates_are_the_proleptic_gregorian_calendar() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(59), (1970, 3, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(20_794), (2026, 12, 7));
}
