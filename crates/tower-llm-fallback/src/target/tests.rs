use super::*;

fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = Request::post(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

#[test]
fn urls_join_prefix_path_and_both_queries_without_caller_keys() {
    let target = Target::new("azure", ()).base_url(
        "https://x.openai.azure.com/openai/?api-version=2024-10-21"
            .parse()
            .unwrap(),
    );
    let request = target
        .adapt_request(
            &parts(
                "http://gw/v1/chat/completions?stream=true&key=AIza-secret",
                &[],
            ),
            &Bytes::new(),
        )
        .unwrap();
    assert_eq!(
        request.uri().to_string(),
        "https://x.openai.azure.com/openai/v1/chat/completions?api-version=2024-10-21&stream=true"
    );
}

#[test]
fn a_path_seen_before_gets_the_same_url_and_a_query_is_never_taken_from_another() {
    let target = Target::new("azure", ()).base_url(
        "https://x.openai.azure.com/openai?api-version=2024-10-21"
            .parse()
            .unwrap(),
    );
    let url = |uri: &str| {
        target
            .adapt_request(&parts(uri, &[]), &Bytes::new())
            .unwrap()
            .uri()
            .to_string()
    };
    let chat = "https://x.openai.azure.com/openai/v1/chat/completions?api-version=2024-10-21";
    assert_eq!(url("http://gw/v1/chat/completions"), chat);
    assert_eq!(url("http://gw/v1/chat/completions"), chat);
    assert_eq!(
        url("http://gw/v1/embeddings"),
        "https://x.openai.azure.com/openai/v1/embeddings?api-version=2024-10-21"
    );
    assert_eq!(
        url("http://gw/v1/chat/completions?stream=true"),
        format!("{chat}&stream=true")
    );
    assert_eq!(url("http://gw/v1/chat/completions"), chat);
    // Another base URL is another cache.
    let moved = target
        .clone()
        .base_url("https://y.example/v1".parse().unwrap());
    let request = moved
        .adapt_request(&parts("http://gw/chat/completions", &[]), &Bytes::new())
        .unwrap();
    assert_eq!(
        request.uri().to_string(),
        "https://y.example/v1/chat/completions"
    );
}

/// Every spelling a server would decode to a credential name: case,
/// percent-encoding, `+` as a space, `-` for `_`, `;` as a separator.
const CALLER_KEYS: &[&str] = &[
    "key=SECRET",
    "KEY=SECRET",
    "Key",
    "%6Bey=SECRET",
    "%6bey=SECRET",
    "k%65y=SECRET",
    "ap%69-key=SECRET",
    "api-key=SECRET",
    "API_KEY=SECRET",
    "api%5Fkey=SECRET",
    "apikey=SECRET",
    "ApiKey=SECRET",
    "x-api-key=SECRET",
    "X_Api_Key=SECRET",
    "x-goog-api-key=SECRET",
    "access_token=SECRET",
    "access-token=SECRET",
    "%61ccess_token=SECRET",
    "token=SECRET",
    "TOKEN=SECRET",
    "key+=SECRET",
    "+key=SECRET",
    "%20key=SECRET",
    "alt=json;key=SECRET",
    "subscription-key=SECRET",
    "code=SECRET",
    "sig=SECRET",
    // Padding past the decode buffer must not hide a name.
    "++++++++++++++++++++++++++++++++++++++++key=SECRET",
    "%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20api_key=SECRET",
    "k+e+y=SECRET",
];

fn query_sent(target: &Target<()>, caller_query: &str) -> Option<String> {
    let uri = format!("http://gw/v1/chat/completions?stream=true&{caller_query}&alt=sse");
    let request = target
        .adapt_request(&parts(&uri, &[]), &Bytes::new())
        .unwrap();
    request.uri().query().map(str::to_owned)
}

#[test]
fn caller_credential_parameters_never_reach_a_target_without_a_base_url() {
    let target = Target::new("t", ());
    for spelling in CALLER_KEYS {
        assert_eq!(
            query_sent(&target, spelling).as_deref(),
            Some("stream=true&alt=sse"),
            "{spelling}"
        );
    }
    // Nothing to drop: the URL goes as it came.
    let request = target
        .adapt_request(&parts("http://gw/v1/models?limit=2", &[]), &Bytes::new())
        .unwrap();
    assert_eq!(request.uri().to_string(), "http://gw/v1/models?limit=2");
    // Only credentials: no query at all.
    let request = target
        .adapt_request(&parts("/v1/models?key=SECRET", &[]), &Bytes::new())
        .unwrap();
    assert_eq!(request.uri().to_string(), "/v1/models");
}

#[test]
fn caller_credential_parameters_never_reach_a_target_with_a_base_url() {
    // The base's own key is the operator's: it stays.
    let target =
        Target::new("t", ()).base_url("https://t.example/v1beta?key=TARGET".parse().unwrap());
    for spelling in CALLER_KEYS {
        assert_eq!(
            query_sent(&target, spelling).as_deref(),
            Some("key=TARGET&stream=true&alt=sse"),
            "{spelling}"
        );
    }
}

#[test]
fn parameters_that_only_look_like_credentials_are_kept() {
    let target = Target::new("t", ());
    for kept in [
        "api-version=2024-10-21",
        "keyword=x",
        "monkey=1",
        "tokens=5",
        "max_tokens=5",
        "key%3D=x",
        "k%ey=x",
        "%6=x",
    ] {
        assert_eq!(
            query_sent(&target, kept),
            Some(format!("stream=true&{kept}&alt=sse")),
            "{kept}"
        );
    }
}

#[test]
fn hop_by_hop_account_and_credential_headers_stay_behind() {
    let target = Target::new("t", ())
        .base_url("http://t".parse().unwrap())
        .credential(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("sk-t"),
        );
    let request = target
        .adapt_request(
            &parts(
                "http://gw/v1/messages",
                &[
                    ("authorization", "Bearer sk-caller"),
                    ("x-goog-api-key", "g-caller"),
                    ("openai-organization", "org-caller"),
                    ("connection", "keep-alive, x-hop"),
                    ("x-hop", "1"),
                    ("accept-encoding", "gzip"),
                    ("anthropic-version", "2023-06-01"),
                ],
            ),
            &Bytes::from_static(b"{}"),
        )
        .unwrap();
    let names: Vec<&str> = request.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["anthropic-version", "x-api-key", "host"]);
    assert_eq!(request.version(), http::Version::default());
}

#[test]
fn a_target_with_a_base_url_sends_its_own_host_never_the_callers() {
    let caller = || parts("http://gw/v1/chat/completions", &[("host", "gw.example")]);
    let body = Bytes::from_static(b"{}");
    let host = |target: &Target<()>| {
        let request = target.adapt_request(&caller(), &body).unwrap();
        let all: Vec<_> = request.headers().get_all("host").iter().cloned().collect();
        let owned = target.adapt_owned(caller(), body.clone()).unwrap();
        assert_eq!(
            owned.headers().get("host"),
            all.first(),
            "the same either way"
        );
        all
    };
    let with_port = Target::new("t", ()).base_url("http://127.0.0.1:8080/v1".parse().unwrap());
    assert_eq!(host(&with_port), ["127.0.0.1:8080"]);
    let plain = Target::new("t", ()).base_url("https://api.openai.com/v1".parse().unwrap());
    assert_eq!(host(&plain), ["api.openai.com"]);
    // No base URL, or a hook that may send the request elsewhere: the
    // client writes the host from the URL it is given.
    assert!(host(&Target::new("t", ())).is_empty());
    let hooked = Target::new("t", ())
        .base_url("https://api.openai.com/v1".parse().unwrap())
        .adapt(|_| {});
    assert!(host(&hooked).is_empty());
    // User information in the URL is never a host.
    let userinfo = Target::new("t", ()).base_url("https://u:p@api.example/v1".parse().unwrap());
    assert!(host(&userinfo).is_empty());
}

#[test]
fn an_empty_body_is_sent_without_a_model() {
    let target = Target::new("t", ()).model("m");
    let request = target
        .adapt_request(&parts("http://gw/v1/models", &[]), &Bytes::new())
        .unwrap();
    assert!(http_body::Body::is_end_stream(request.body()));
}

#[test]
fn a_targets_debug_shows_no_key_its_base_url_carries() {
    let target = Target::new("gemini", ()).base_url(
        "https://generativelanguage.googleapis.com/v1beta?key=AIzaSECRET"
            .parse()
            .unwrap(),
    );
    let shown = format!("{target:?}");
    assert!(
        shown.contains("generativelanguage.googleapis.com/v1beta"),
        "{shown}"
    );
    assert!(!shown.contains("AIzaSECRET"), "{shown}");
}
