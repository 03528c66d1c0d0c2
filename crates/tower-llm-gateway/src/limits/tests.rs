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
fn an_anthropic_reset_is_an_instant_never_before_the_wait_is_over() {
    let before = std::time::SystemTime::now();
    let reset = rfc3339_after(Duration::from_millis(1500));
    let at = tower_llm::classify::hint::parse_rfc3339(&reset).unwrap();
    assert!(at >= before + Duration::from_millis(1500), "{reset}");
    assert!(reset.ends_with('Z'), "{reset}");
}
