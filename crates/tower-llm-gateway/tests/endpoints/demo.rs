//! The out-of-the-box demo: every `curl` command it prints is answered.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tower_llm_gateway::TARGET_HEADER;
use tower_llm_gateway::demo::{Demo, curl_lines};
use tower_llm_testkit::{Fault, FaultPlan};

use crate::{Gateway, header_of, text};

/// What a printed command sends: its path, headers and body (`None`: a
/// GET). The lines are ours: `curl FLAGS URL [-H 'name: value']… [-d 'body']`.
fn parse(line: &str, base: &str) -> (String, HeaderMap, Option<String>) {
    let rest = &line[line.find(base).unwrap() + base.len()..];
    let path = rest.split_whitespace().next().unwrap().to_owned();
    let mut headers = HeaderMap::new();
    for header in rest.split("-H '").skip(1) {
        let header = &header[..header.find('\'').unwrap()];
        let (name, value) = header.split_once(": ").unwrap();
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let body = rest
        .find("-d '")
        .map(|at| rest[at + 4..rest.len() - 1].to_owned());
    (path, headers, body)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_curl_line_the_demo_prints_is_answered_by_the_target_its_route_names() {
    let demo = Demo::start().await.unwrap();
    // The demo's wiring (routes, protocols, keys), not its dice.
    for sim in [&demo.primary, &demo.backup, &demo.claude] {
        sim.set_plan(FaultPlan::always(Fault::ok()));
    }
    let gateway = Gateway::start_with(demo.config().unwrap(), Demo::env).await;
    let lines = curl_lines(&gateway.base, "");
    let mut paths = Vec::new();
    for line in &lines {
        let (path, headers, body) = parse(line, &gateway.base);
        let Some(body) = body else {
            let (status, list) = gateway.get_with(&path, headers).await;
            assert_eq!(status, StatusCode::OK, "{line}");
            assert!(!list["data"].as_array().unwrap().is_empty(), "{line}");
            paths.push(path);
            continue;
        };
        let response = gateway.post_with(&path, &body, headers).await;
        assert_eq!(response.status(), StatusCode::OK, "{line}");
        let expected = if path.starts_with("/v1/messages") {
            "claude"
        } else {
            "primary"
        };
        assert_eq!(header_of(&response, TARGET_HEADER), expected, "{line}");
        let answer = text(response).await;
        assert!(!answer.contains("\"error\":{"), "{line}: {answer}");
        paths.push(path);
    }
    paths.dedup();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/responses",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1/models"
        ]
    );
}
