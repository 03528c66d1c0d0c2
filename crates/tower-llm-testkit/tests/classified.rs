//! The simulator's failures are the failures `tower-llm-classify` knows:
//! every error reply, in-band event and broken stream is classified as the
//! kind it simulates. This pins both crates to the same facts and shows
//! how a layer sees the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};
use tower_llm_classify::stream::ResponseBody;
use tower_llm_classify::{
    Classify, ClassifyLayer, ErrorKind, LlmError, Phase, Provider, classify_response,
};
use tower_llm_testkit::{Api, Failure, Fault, RetryHint, Simulator};

fn provider(api: Api) -> Provider {
    match api {
        Api::OpenAiChat => Provider::OpenAi,
        Api::AnthropicMessages => Provider::Anthropic,
        _ => Provider::Ollama,
    }
}

#[tokio::test]
async fn every_error_reply_is_classified_as_the_failure_it_simulates() {
    let cases: Vec<(Failure, ErrorKind)> = vec![
        (
            Failure::rate_limited(Duration::from_secs(2)),
            ErrorKind::RateLimited,
        ),
        (
            Failure::rate_limited_with(Duration::from_secs(2), RetryHint::Milliseconds),
            ErrorKind::RateLimited,
        ),
        (
            Failure::rate_limited_with(Duration::from_secs(2), RetryHint::ResetHeadersOnly),
            ErrorKind::RateLimited,
        ),
        (Failure::rate_limited_without_hint(), ErrorKind::RateLimited),
        (Failure::QuotaExhausted, ErrorKind::QuotaExhausted),
        (Failure::Overloaded, ErrorKind::Overloaded),
        (Failure::ServerError(500), ErrorKind::ServerError),
        (Failure::ServerError(502), ErrorKind::ServerError),
        (Failure::ServerError(504), ErrorKind::Timeout),
        (
            Failure::ContextLengthExceeded,
            ErrorKind::ContextLengthExceeded,
        ),
        (Failure::ContentFiltered, ErrorKind::ContentFiltered),
        (Failure::Unauthorized, ErrorKind::Authentication),
        (Failure::ModelNotFound, ErrorKind::NotFound),
        (
            Failure::InvalidRequest("bad".into()),
            ErrorKind::InvalidRequest,
        ),
        (Failure::Status(408), ErrorKind::Timeout),
        (Failure::Status(409), ErrorKind::Conflict),
        (Failure::Status(413), ErrorKind::PayloadTooLarge),
    ];
    let sim = Simulator::start().await.unwrap();
    let client = client();
    let mut wrong = Vec::new();
    for api in Api::ALL {
        for (failure, expected) in &cases {
            sim.set_plan(Fault::fail(failure.clone()));
            let answer = chat(&client, &sim, api, false).await;
            let c = classify_response(
                provider(api),
                answer.status,
                &answer.headers,
                &answer.body,
                SystemTime::now(),
            );
            if c.kind() != *expected {
                wrong.push(format!(
                    "{failure} on {api}: {} ({})",
                    c.kind(),
                    answer.text()
                ));
            }
            if let Failure::RateLimited(limit) = failure
                && limit.retry_after.is_some()
                && api != Api::OllamaChat
            {
                let hint = c.retry_after().unwrap_or_default();
                assert!(
                    hint >= Duration::from_millis(1900) && hint <= Duration::from_secs(3),
                    "{failure} on {api}: {hint:?}"
                );
            }
        }
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

type Classified = Classify<Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>>;

fn classified(layer: ClassifyLayer) -> Classified {
    layer.layer(Client::builder(TokioExecutor::new()).build_http())
}

async fn stream_call(
    service: &mut Classified,
    sim: &Simulator,
    api: Api,
) -> Result<Response<ResponseBody<hyper::body::Incoming>>, LlmError> {
    let request = Request::post(sim.url(api))
        .header("content-type", "application/json")
        .body(Full::from(chat_body(api, "m", true)))
        .unwrap();
    service.ready().await?.call(request).await
}

/// Reads a body to its end: the data, and the error that ended it, if any.
async fn drain(mut body: ResponseBody<hyper::body::Incoming>) -> (Vec<u8>, Option<LlmError>) {
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => data.extend_from_slice(&frame.into_data().unwrap_or_default()),
            Err(error) => return (data, Some(error)),
        }
    }
    (data, None)
}

#[tokio::test]
async fn an_in_band_error_before_content_is_retryable_and_after_content_is_not() {
    let mut service = classified(ClassifyLayer::new());
    for api in Api::ALL {
        for (n, retryable) in [(0, true), (2, false)] {
            let sim = Simulator::builder()
                .plan(Fault::stream_error_after(n))
                .start()
                .await
                .unwrap();
            let outcome = stream_call(&mut service, &sim, api).await;
            let error = match outcome {
                // Classify may surface a first-event error as the call's error ...
                Err(error) => error,
                // ... or as the body's.
                Ok(response) => drain(response.into_body())
                    .await
                    .1
                    .unwrap_or_else(|| panic!("{api} error@{n}: no error")),
            };
            let c = error.classification();
            assert_eq!(c.kind(), ErrorKind::Overloaded, "{api} error@{n}");
            assert_eq!(c.retryable(), retryable, "{api} error@{n}: {c:?}");
            if n > 0 {
                assert_eq!(c.phase(), Phase::MidStream, "{api} error@{n}");
            }
        }
    }
}

#[tokio::test]
async fn a_dropped_stream_is_a_classified_body_error() {
    let mut service = classified(ClassifyLayer::new());
    for api in Api::ALL {
        let sim = Simulator::builder()
            .plan(Fault::stream_drop_after(1))
            .start()
            .await
            .unwrap();
        let response = stream_call(&mut service, &sim, api).await.unwrap();
        let (data, error) = drain(response.into_body()).await;
        assert!(!data.is_empty(), "{api}: the first event arrived");
        let c = error
            .unwrap_or_else(|| panic!("{api}: the cut went unnoticed"))
            .classification()
            .clone();
        assert!(
            matches!(c.kind(), ErrorKind::Transport | ErrorKind::StreamIncomplete),
            "{api}: {c:?}"
        );
        assert!(!c.retryable(), "{api}: content was delivered");
    }
}

#[tokio::test]
async fn a_stream_without_its_terminal_event_is_incomplete_when_required() {
    let mut service = classified(ClassifyLayer::new().require_terminal_event(true));
    for api in Api::ALL {
        let sim = Simulator::builder()
            .plan(Fault::stream_without_terminal())
            .start()
            .await
            .unwrap();
        let response = stream_call(&mut service, &sim, api).await.unwrap();
        let (_, error) = drain(response.into_body()).await;
        let c = error
            .unwrap_or_else(|| panic!("{api}: accepted a stream without its end"))
            .classification()
            .clone();
        assert_eq!(c.kind(), ErrorKind::StreamIncomplete, "{api}");
    }
}

#[tokio::test]
async fn healthy_streams_pass_through_classify_untouched() {
    let mut service = classified(ClassifyLayer::new().require_terminal_event(true));
    for api in Api::ALL {
        let sim = Simulator::builder().reply_tokens(3).start().await.unwrap();
        let response = stream_call(&mut service, &sim, api).await.unwrap();
        let (data, error) = drain(response.into_body()).await;
        assert!(error.is_none(), "{api}: {error:?}");
        assert_eq!(
            streamed_text(api, std::str::from_utf8(&data).unwrap()),
            "token0 token1 token2 "
        );
    }
}
