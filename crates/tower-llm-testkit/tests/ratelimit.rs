//! Rate limits: a simulator given RPM/TPM limits counts requests in a
//! sliding window, reports what is left on every answer in the API's own
//! headers, and refuses what is over with the API's 429 and `retry-after`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::{chat, client, send};
use tower_llm_classify::hint::RateLimitHeaders;
use tower_llm_classify::{ErrorKind, Provider, classify_response};
use tower_llm_testkit::{Api, Fault, FaultPlan, ProviderLimits, Simulator};

async fn limited(limits: ProviderLimits) -> Simulator {
    Simulator::builder()
        .rate_limits(limits)
        .start()
        .await
        .unwrap()
}

fn header<'a>(answer: &'a common::Answer, name: &str) -> &'a str {
    answer.headers[name].to_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_openai_answer_reports_what_is_left_and_the_excess_gets_a_429_with_retry_after() {
    let sim = limited(ProviderLimits::rpm(3)).await;
    let client = client();
    for left in ["2", "1", "0"] {
        let answer = chat(&client, &sim, Api::OpenAiChat, false).await;
        assert_eq!(answer.status, 200);
        assert_eq!(header(&answer, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&answer, "x-ratelimit-remaining-requests"), left);
        assert_eq!(header(&answer, "x-ratelimit-reset-requests"), "1m0s");
    }
    tokio::time::advance(Duration::from_secs(20)).await;
    let refused = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(refused.status, 429);
    assert_eq!(header(&refused, "retry-after"), "40");
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(refused.json()["error"]["type"], "requests");
    // The client's classifier reads it as a rate limit to wait out.
    let c = classify_response(
        Provider::OpenAi,
        refused.status,
        &refused.headers,
        &refused.body,
        SystemTime::now(),
    );
    assert_eq!(c.kind(), ErrorKind::RateLimited);
    assert_eq!(c.retry_after(), Some(Duration::from_secs(40)));
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_a_request_fits_again_when_the_oldest_leaves() {
    let sim = limited(ProviderLimits::rpm(2)).await;
    let client = client();
    chat(&client, &sim, Api::OpenAiChat, false).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(
        chat(&client, &sim, Api::OpenAiChat, false).await.status,
        429
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    let again = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(again.status, 200);
    assert_eq!(header(&again, "x-ratelimit-remaining-requests"), "0");
    // The newest of the two in the window was sent 30 s ago... and this one now.
    assert_eq!(header(&again, "x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(
        chat(&client, &sim, Api::OpenAiChat, false).await.status,
        429
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_count_the_body_and_max_tokens_against_tpm() {
    let sim = limited(ProviderLimits::tpm(1000)).await;
    let client = client();
    // 64 bytes: 16 tokens, plus 500 asked for.
    let body = r#"{"model":"gpt-4o","max_tokens":500,"messages":[{"role":"user"}]}"#;
    assert_eq!(body.len(), 64);
    let first = send(&client, &sim, Api::OpenAiChat, body).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), "484");
    // Requests are not limited: the simulator's usual room to spare.
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "9999");
    let second = send(&client, &sim, Api::OpenAiChat, body).await.unwrap();
    assert_eq!(second.status, 429);
    assert_eq!(header(&second, "retry-after"), "60");
    // Larger than the whole limit: refused without a wait, it never fits.
    let huge = r#"{"model":"gpt-4o","max_tokens":5000,"messages":[]}"#;
    let refused = send(&client, &sim, Api::OpenAiChat, huge).await.unwrap();
    assert_eq!(refused.status, 429);
    assert!(!refused.headers.contains_key("retry-after"));
}

#[tokio::test(start_paused = true)]
async fn anthropic_answers_carry_anthropic_headers_that_classify_reads() {
    let sim = limited(ProviderLimits::rpm(1).with_tpm(10_000)).await;
    let client = client();
    let answer = chat(&client, &sim, Api::AnthropicMessages, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(header(&answer, "anthropic-ratelimit-requests-limit"), "1");
    assert_eq!(
        header(&answer, "anthropic-ratelimit-requests-remaining"),
        "0"
    );
    let read = RateLimitHeaders::read(&answer.headers, SystemTime::now()).unwrap();
    let requests = read.requests.unwrap();
    assert_eq!((requests.remaining, requests.limit), (0, Some(1)));
    let reset = requests.reset.unwrap();
    // RFC 3339 at whole seconds, rounded up: never before the window empties.
    assert!(reset > Duration::from_secs(59), "{reset:?}");
    assert!(read.tokens.unwrap().remaining < 10_000);

    let refused = chat(&client, &sim, Api::AnthropicMessages, false).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
    assert_eq!(header(&refused, "retry-after"), "60");
}

#[tokio::test(start_paused = true)]
async fn a_scripted_failure_of_an_admitted_request_still_reports_the_window() {
    let sim = Simulator::builder()
        .rate_limits(ProviderLimits::rpm(5))
        .plan(FaultPlan::script([Fault::overloaded()]))
        .start()
        .await
        .unwrap();
    let client = client();
    let answer = chat(&client, &sim, Api::OpenAiChat, false).await;
    assert_eq!(answer.status, 503);
    assert_eq!(header(&answer, "x-ratelimit-remaining-requests"), "4");
    let streamed = chat(&client, &sim, Api::OpenAiChat, true).await;
    assert_eq!(streamed.status, 200);
    assert_eq!(header(&streamed, "x-ratelimit-remaining-requests"), "3");
}

#[tokio::test(start_paused = true)]
async fn without_limits_nothing_is_refused() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    for _ in 0..20 {
        assert_eq!(
            chat(&client, &sim, Api::OpenAiChat, false).await.status,
            200
        );
    }
}
