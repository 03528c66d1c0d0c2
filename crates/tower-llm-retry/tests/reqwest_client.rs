//! The same stack over reqwest: a small adapter from `http` types to
//! reqwest's, `ClassifyLayer` (which recognises `reqwest::Error`), and the
//! retry layer, against the testkit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};
use tower_llm_classify::ClassifyLayer;
use tower_llm_retry::{ReplayBody, RetryLayer, RetryPolicy, RetryStats};
use tower_llm_testkit::{Api, Fault, FaultPlan, Simulator};

/// `http::Request<ReplayBody>` in, `http::Response<reqwest::Body>` out.
#[derive(Clone)]
struct Reqwest(reqwest::Client);

impl Service<Request<ReplayBody>> for Reqwest {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReplayBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, reqwest::Body::wrap(body));
        let client = self.0.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            client.execute(request).await.map(http::Response::from)
        })
    }
}

fn request(sim: &Simulator, stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-4o","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    Request::post(sim.url(Api::OpenAiChat))
        .header("content-type", "application/json")
        .body(Full::from(body))
        .unwrap()
}

async fn run(plan: FaultPlan, stream: bool) -> (Result<String, String>, u32, usize) {
    let sim = Simulator::builder()
        .reply_tokens(3)
        .plan(plan)
        .start()
        .await
        .unwrap();
    let service = RetryLayer::new(RetryPolicy::builder().seed(1).build().unwrap())
        .layer(ClassifyLayer::new().layer(Reqwest(reqwest::Client::new())));
    let outcome = match service.oneshot(request(&sim, stream)).await {
        Ok(response) => {
            let attempts = RetryStats::of(response.extensions()).attempts;
            let body = response
                .into_body()
                .collect()
                .await
                .map(|c| String::from_utf8(c.to_bytes().to_vec()).unwrap());
            (body.map_err(|e| e.to_string()), attempts)
        }
        Err(error) => (
            Err(error.to_string()),
            RetryStats::of(error.extensions()).attempts,
        ),
    };
    (outcome.0, outcome.1, sim.requests().len())
}

#[tokio::test(start_paused = true)]
async fn reqwest_stack_retries_a_503_then_succeeds() {
    let (body, attempts, calls) = run(FaultPlan::script([Fault::server_error(503)]), false).await;
    assert!(body.unwrap().contains("chat.completion"));
    assert_eq!((attempts, calls), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn reqwest_connection_reset_is_classified_and_retried() {
    let (body, attempts, calls) = run(FaultPlan::script([Fault::reset()]), false).await;
    assert!(body.is_ok(), "{body:?}");
    assert_eq!((attempts, calls), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn reqwest_stream_with_an_error_first_is_retried_into_a_clean_stream() {
    let (body, attempts, calls) =
        run(FaultPlan::script([Fault::stream_error_after(0)]), true).await;
    let body = body.unwrap();
    assert!(
        body.contains("token2") && body.contains("[DONE]") && !body.contains("error"),
        "{body}"
    );
    assert_eq!((attempts, calls), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn reqwest_quota_exhausted_is_not_retried() {
    let (body, attempts, calls) = run(FaultPlan::always(Fault::quota_exhausted()), false).await;
    assert!(body.unwrap_err().contains("quota"));
    assert_eq!((attempts, calls), (1, 1));
}
