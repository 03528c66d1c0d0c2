//! `POST /v1/completions`, `/v1/embeddings` and `/v1/responses`.

use http::StatusCode;
use tower_llm_gateway::{ATTEMPTS_HEADER, FALLBACKS_HEADER, TARGET_HEADER};
use tower_llm_testkit::{Fault, FaultPlan};

use crate::{Gateway, events, header_of, json, sim, text, two_targets};

const COMPLETION: &str = r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say hello"}"#;
const COMPLETION_STREAM: &str =
    r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say hello","stream":true}"#;
const EMBEDDINGS: &str =
    r#"{"model":"text-embedding-3-small","input":["first","second","first"],"dimensions":8}"#;
const RESPONSE: &str = r#"{"model":"gpt-4o","input":"Say hello"}"#;
const RESPONSE_STREAM: &str = r#"{"model":"gpt-4o","input":"Say hello","stream":true}"#;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn legacy_completions_fail_over_to_the_backup_whole_and_streamed() {
    let primary = sim(Fault::status(503)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;

    let response = gateway.post("/v1/completions", COMPLETION).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "backup");
    assert_eq!(header_of(&response, FALLBACKS_HEADER), "primary:overloaded");
    let whole = json(response).await;
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["text"], backup.reply());
    assert_eq!(backup.requests()[0].path, "/v1/completions");
    assert_eq!(backup.requests()[0].model.as_deref(), Some("llama3.2"));

    let response = gateway.post("/v1/completions", COMPLETION_STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "backup");
    let stream = text(response).await;
    let streamed: String = events(&stream)
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, backup.reply());
    assert!(stream.ends_with("data: [DONE]\n\n"), "{stream}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_legacy_completions_stream_broken_after_content_ends_with_openais_error_chunk() {
    let primary = sim(Fault::stream_drop_after(2)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;

    let response = gateway.post("/v1/completions", COMPLETION_STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream = text(response).await;
    let (_, last) = events(&stream).pop().unwrap();
    assert!(last["error"]["message"].is_string(), "{stream}");
    assert!(!stream.contains("[DONE]"), "{stream}");
    // The text delivered is never sent again by another target.
    assert!(backup.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_embeddings_batch_is_retried_whole_and_answers_one_vector_per_input() {
    let primary = sim(FaultPlan::script([Fault::overloaded(), Fault::ok()])).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;

    let response = gateway.post("/v1/embeddings", EMBEDDINGS).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "primary");
    assert_eq!(header_of(&response, ATTEMPTS_HEADER), "2");
    let body = json(response).await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    // Both attempts carried the whole batch.
    let requests = primary.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.path == "/v1/embeddings"));
    assert!(
        requests
            .iter()
            .all(|r| r.body.as_ref() == EMBEDDINGS.as_bytes())
    );
    assert!(backup.requests().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn embeddings_fail_over_to_the_backup_and_a_bad_batch_gets_the_providers_400() {
    let primary = sim(Fault::quota_exhausted()).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;

    let response = gateway.post("/v1/embeddings", EMBEDDINGS).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "backup");
    assert_eq!(
        header_of(&response, FALLBACKS_HEADER),
        "primary:quota_exhausted"
    );
    assert_eq!(json(response).await["data"].as_array().unwrap().len(), 3);

    // An input of no known shape is the caller's fault: passed on as the
    // provider answered it, OpenAI-shaped.
    let healthy = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&healthy, &backup)).await;
    let response = gateway
        .post("/v1/embeddings", r#"{"model":"text-embedding-3-small"}"#)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error = json(response).await;
    assert_eq!(error["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_responses_api_is_served_whole_and_streamed_as_response_events() {
    let primary = sim(Fault::ok()).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;

    let response = gateway.post("/v1/responses", RESPONSE).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "primary");
    let whole = json(response).await;
    assert_eq!(whole["object"], "response");
    assert_eq!(whole["output"][0]["content"][0]["text"], primary.reply());

    let response = gateway.post("/v1/responses", RESPONSE_STREAM).await;
    let stream = text(response).await;
    let events = events(&stream);
    assert_eq!(events.first().unwrap().0, "response.created");
    assert_eq!(events.last().unwrap().0, "response.completed");
    let streamed: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .filter_map(|(_, v)| v["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, primary.reply());
    assert!(primary.requests().iter().all(|r| r.path == "/v1/responses"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_response_failed_event_before_content_is_retried_out_of_sight() {
    let primary = sim(FaultPlan::script([
        Fault::stream_error_after(0),
        Fault::ok(),
    ]))
    .await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;

    let response = gateway.post("/v1/responses", RESPONSE_STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, TARGET_HEADER), "primary");
    assert_eq!(header_of(&response, ATTEMPTS_HEADER), "2");
    let stream = text(response).await;
    assert!(!stream.contains("response.failed"), "{stream}");
    assert_eq!(events(&stream).last().unwrap().0, "response.completed");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_responses_stream_broken_after_content_ends_with_the_dialects_error_event() {
    let primary = sim(Fault::stream_drop_after(2)).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;

    let response = gateway.post("/v1/responses", RESPONSE_STREAM).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream = text(response).await;
    let (name, last) = events(&stream).pop().unwrap();
    assert_eq!(name, "error", "{stream}");
    assert_eq!(last["type"], "error");
    assert!(last["message"].is_string(), "{stream}");
    assert!(!stream.contains("response.completed"), "{stream}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_openai_endpoint_is_served_every_time_by_a_flaky_primary_and_a_healthy_backup() {
    // What happens before a stream's first content: all of it can be
    // retried or passed to the backup out of the caller's sight.
    let flaky: FaultPlan =
        "rate=0.15:rate_limited@1s,0.15:503,0.1:overloaded,0.1:reset,0.1:error@0,0.1:drop@0;seed=3"
            .parse()
            .unwrap();
    let primary = sim(flaky).await;
    let backup = sim(Fault::ok()).await;
    let gateway = Gateway::start(&two_targets(&primary, &backup)).await;
    let calls = [
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        ("/v1/completions", COMPLETION),
        ("/v1/completions", COMPLETION_STREAM),
        ("/v1/embeddings", EMBEDDINGS),
        ("/v1/responses", RESPONSE),
        ("/v1/responses", RESPONSE_STREAM),
    ];
    let mut failures_seen = 0;
    for round in 0..6 {
        for (path, body) in calls {
            let response = gateway.post(path, body).await;
            assert_eq!(response.status(), StatusCode::OK, "{path} round {round}");
            if !header_of(&response, FALLBACKS_HEADER).is_empty()
                || header_of(&response, ATTEMPTS_HEADER) != "1"
            {
                failures_seen += 1;
            }
            let body = text(response).await;
            assert!(
                !body.contains("\"error\":{"),
                "{path} round {round}: {body}"
            );
        }
    }
    // The plan did fail calls: the gateway hid them.
    assert!(failures_seen > 0);
}
