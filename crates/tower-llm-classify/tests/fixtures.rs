//! The fixture corpus: real provider failures (status, headers, body, or a
//! streamed body), one file per case under `tests/fixtures/`, each naming its
//! source in a `source` field. Every case is classified twice — by the pure
//! function with a pinned clock, and through the `ClassifyLayer` over a
//! service that answers with the fixture — and must give the expected kind,
//! retryability, hint, code, request id and phase.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_classify::{
    Classification, ClassifyLayer, ErrorKind, Phase, Provider, classify_response,
};

/// The `now` every fixture's dates are written against: Mon, 23 Nov 2026 12:00:00 GMT.
fn fixture_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_435_200)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    source: String,
    provider: Provider,
    url: String,
    status: u16,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    kind: String,
    retryable: bool,
    hint_ms: Option<u64>,
    request_id: Option<String>,
    code: Option<String>,
    phase: Option<String>,
}

fn load() -> Vec<(String, Fixture)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let fixture: Fixture = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!fixture.source.trim().is_empty(), "{name}: no source");
            (name, fixture)
        })
        .collect();
    fixtures.sort_by(|a, b| a.0.cmp(&b.0));
    fixtures
}

fn header_map(headers: &BTreeMap<String, String>) -> HeaderMap {
    headers
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

/// Compares a classification with a fixture's expectations; returns the
/// mismatches.
fn check(c: Option<&Classification>, expect: &Expect, with_hint: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(c) = c else {
        if expect.kind != "ok" {
            problems.push(format!("expected {} but the call succeeded", expect.kind));
        }
        return problems;
    };
    if expect.kind == "ok" {
        problems.push(format!("expected success, got {c:?}"));
        return problems;
    }
    let kind: ErrorKind = expect.kind.parse().unwrap();
    if c.kind() != kind {
        problems.push(format!(
            "kind {} != expected {}",
            c.kind().as_str(),
            expect.kind
        ));
    }
    if c.retryable() != expect.retryable {
        problems.push(format!(
            "retryable {} != expected {}",
            c.retryable(),
            expect.retryable
        ));
    }
    if with_hint {
        let hint = c.retry_after().map(|d| d.as_millis() as u64);
        if hint != expect.hint_ms {
            problems.push(format!("hint {hint:?} ms != expected {:?}", expect.hint_ms));
        }
    }
    if let Some(code) = &expect.code
        && c.code() != Some(code.as_str())
    {
        problems.push(format!("code {:?} != expected {code:?}", c.code()));
    }
    if let Some(id) = &expect.request_id
        && c.request_id() != Some(id.as_str())
    {
        problems.push(format!(
            "request id {:?} != expected {id:?}",
            c.request_id()
        ));
    }
    if let Some(phase) = &expect.phase
        && c.phase().as_str() != phase
    {
        problems.push(format!("phase {} != expected {phase}", c.phase()));
    }
    problems
}

/// Sends the fixture's request through `ClassifyLayer` to a service that
/// answers with the fixture's response, reads the whole body, and returns
/// the failure, if any.
async fn through_layer(fixture: &Fixture) -> Option<Classification> {
    let status = StatusCode::from_u16(fixture.status).unwrap();
    let headers = header_map(&fixture.headers);
    let body = fixture.body.clone();
    let upstream = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(Full::new(Bytes::from(body.clone())));
        *response.status_mut() = status;
        *response.headers_mut() = headers.clone();
        async move { Ok::<_, std::io::Error>(response) }
    });
    let service = ServiceBuilder::new()
        .layer(ClassifyLayer::new())
        .service(upstream);
    let request_body = if fixture.stream {
        r#"{"model":"m","stream":true}"#
    } else {
        r#"{"model":"m"}"#
    };
    let request = Request::post(fixture.url.as_str())
        .body(Full::new(Bytes::from_static(request_body.as_bytes())))
        .unwrap();
    match service.oneshot(request).await {
        Err(error) => Some(error.classification().clone()),
        Ok(response) => match response.into_body().collect().await {
            Ok(_) => None,
            Err(error) => Some(error.classification().clone()),
        },
    }
}

#[test]
fn the_corpus_is_large_and_covers_every_provider() {
    let fixtures = load();
    assert!(fixtures.len() >= 60, "only {} fixtures", fixtures.len());
    let streams = fixtures.iter().filter(|(_, f)| f.stream).count();
    assert!(streams >= 10, "only {streams} stream fixtures");
    for provider in Provider::ALL {
        if provider == Provider::Unknown {
            continue;
        }
        assert!(
            fixtures.iter().any(|(_, f)| f.provider == provider),
            "no fixture for {provider}"
        );
    }
}

#[test]
fn every_fixture_url_is_detected_as_its_provider() {
    let mismatches: Vec<String> = load()
        .iter()
        .filter(|(_, f)| Provider::detect(&f.url.parse().unwrap()) != f.provider)
        .map(|(name, f)| {
            format!(
                "{name}: {} detected as {}",
                f.url,
                Provider::detect(&f.url.parse().unwrap())
            )
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_error_response_fixture_classifies_as_expected() {
    let mut failures = Vec::new();
    for (name, fixture) in load().iter().filter(|(_, f)| !f.stream) {
        let c = classify_response(
            fixture.provider,
            StatusCode::from_u16(fixture.status).unwrap(),
            &header_map(&fixture.headers),
            fixture.body.as_bytes(),
            fixture_now(),
        );
        for problem in check(Some(&c), &fixture.expect, true) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_fixture_classifies_the_same_through_the_layer() {
    let mut failures = Vec::new();
    for (name, fixture) in load() {
        let c = through_layer(&fixture).await;
        // The layer reads the real clock, so only date-free hints compare.
        let dated = fixture
            .headers
            .keys()
            .any(|k| k.ends_with("-reset") || k == "retry-after")
            && fixture.headers.values().any(|v| v.contains(':'));
        for problem in check(c.as_ref(), &fixture.expect, !dated) {
            failures.push(format!("{name}: {problem}"));
        }
        if fixture.stream
            && let Some(c) = &c
            && c.phase() == Phase::MidStream
        {
            assert!(
                !c.retryable(),
                "{name}: mid-stream failures are never retryable"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
