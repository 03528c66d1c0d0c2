//! The capacity model: concurrency, service time, queueing and shedding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_llm_testkit::{Api, Capacity, Simulator};

/// Sends `n` requests at once; returns (status, elapsed ms) of each.
async fn burst(sim: &Simulator, api: Api, n: usize) -> Vec<(u16, u128)> {
    let client = client();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), sim.url(api));
        calls.spawn(async move {
            let body = chat_body(api, "m", false);
            let answer = post(&client, &url, &body).await.unwrap();
            (answer.status.as_u16(), started.elapsed().as_millis())
        });
    }
    calls.join_all().await
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_concurrency_are_shed_with_the_overload_reply() {
    let sim = Simulator::builder()
        .capacity(Capacity::new(2).service_time(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    let mut statuses: Vec<u16> = burst(&sim, Api::AnthropicMessages, 3)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 529]);
    let stats = sim.stats();
    assert_eq!(
        (stats.shed, stats.peak_in_service, stats.in_service),
        (1, 2, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn queued_requests_wait_their_turn_so_latency_grows_with_load() {
    let sim = Simulator::builder()
        .capacity(
            Capacity::new(1)
                .service_time(Duration::from_millis(100))
                .queue(10, None),
        )
        .start()
        .await
        .unwrap();
    let results = burst(&sim, Api::OpenAiChat, 3).await;
    let mut elapsed: Vec<u128> = results.iter().map(|(_, ms)| *ms).collect();
    elapsed.sort();
    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "{results:?}"
    );
    assert_eq!(elapsed, [100, 200, 300]);
    assert_eq!(sim.stats().peak_in_service, 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_waits_too_long_in_the_queue_is_shed() {
    let sim = Simulator::builder()
        .capacity(
            Capacity::new(1)
                .service_time(Duration::from_secs(1))
                .queue(5, Some(Duration::from_millis(200))),
        )
        .start()
        .await
        .unwrap();
    let mut results = burst(&sim, Api::OpenAiChat, 2).await;
    results.sort();
    assert_eq!(results, [(200, 1000), (503, 200)]);
}

#[tokio::test(start_paused = true)]
async fn raising_capacity_admits_waiting_requests_at_once() {
    let sim = Simulator::builder()
        .capacity(Capacity::new(0).queue(10, None))
        .start()
        .await
        .unwrap();
    let lift = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(sim.stats().queued, 3);
        sim.set_capacity(None);
    };
    let (results, ()) = tokio::join!(burst(&sim, Api::OllamaChat, 3), lift);
    assert!(
        results
            .iter()
            .all(|(status, ms)| *status == 200 && *ms == 5000),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_client_that_gives_up_leaves_the_queue() {
    let sim = Simulator::builder()
        .capacity(Capacity::new(0).queue(1, None))
        .start()
        .await
        .unwrap();
    let body = chat_body(Api::OpenAiChat, "m", false);
    let mut waiting = TcpStream::connect(sim.addr()).await.unwrap();
    waiting
        .write_all(&raw_post(Api::OpenAiChat, &body))
        .await
        .unwrap();
    wait_until(|| sim.stats().queued == 1).await;
    // The queue is full: the next request is shed.
    assert_eq!(
        chat(&client(), &sim, Api::OpenAiChat, false).await.status,
        503
    );
    // The waiting client hangs up; its place is freed.
    drop(waiting);
    wait_until(|| sim.stats().queued == 0).await;
    sim.set_capacity(Some(Capacity::new(1)));
    assert_eq!(
        chat(&client(), &sim, Api::OpenAiChat, false).await.status,
        200
    );
    assert_eq!(sim.stats().in_service, 0);
}

#[tokio::test(start_paused = true)]
async fn a_shed_request_is_recorded_as_shed_and_does_not_use_a_script_step() {
    let sim = Simulator::builder()
        .capacity(Capacity::new(1).service_time(Duration::from_millis(100)))
        .plan(tower_llm_testkit::FaultPlan::script([
            tower_llm_testkit::Fault::ok(),
            tower_llm_testkit::Fault::server_error(500),
        ]))
        .start()
        .await
        .unwrap();
    let mut statuses: Vec<u16> = burst(&sim, Api::OpenAiChat, 2)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    let requests = sim.requests();
    let shed: Vec<_> = requests.iter().filter(|r| r.shed).collect();
    assert_eq!(shed.len(), 1);
    assert!(shed[0].fault.is_none());
    // The script's second step is still waiting for the next admitted request.
    assert_eq!(
        chat(&client(), &sim, Api::OpenAiChat, false).await.status,
        500
    );
}

#[tokio::test(start_paused = true)]
async fn latency_is_spent_holding_a_slot() {
    let sim = Simulator::builder()
        .latency(Duration::from_millis(100))
        .capacity(Capacity::new(1).queue(5, None))
        .start()
        .await
        .unwrap();
    let mut elapsed: Vec<u128> = burst(&sim, Api::OpenAiChat, 2)
        .await
        .into_iter()
        .map(|(_, ms)| ms)
        .collect();
    elapsed.sort();
    assert_eq!(elapsed, [100, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_stream_frees_its_slot_when_its_last_event_is_sent() {
    let sim = Simulator::builder()
        .capacity(Capacity::new(1))
        .reply_tokens(3)
        .plan(tower_llm_testkit::Fault::slow_tokens(Duration::from_secs(
            1,
        )))
        .start()
        .await
        .unwrap();
    let client = client();
    let streaming = chat(&client, &sim, Api::OllamaChat, true);
    let probe = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(sim.stats().in_service, 1, "busy while streaming");
        chat(&client, &sim, Api::OllamaChat, false).await.status
    };
    let (answer, busy) = tokio::join!(streaming, probe);
    assert_eq!(busy, 503);
    assert_eq!(
        streamed_text(Api::OllamaChat, answer.text()),
        "token0 token1 token2 "
    );
    assert_eq!(sim.stats().in_service, 0);
    assert_eq!(
        chat(&client, &sim, Api::OllamaChat, false).await.status,
        200
    );
}

#[tokio::test]
async fn a_stalled_stream_holds_its_slot_until_the_client_hangs_up() {
    let sim = Simulator::builder()
        .capacity(Capacity::new(1))
        .plan(tower_llm_testkit::Fault::stream_stall_after(1))
        .start()
        .await
        .unwrap();
    let body = chat_body(Api::AnthropicMessages, "m", true);
    let mut streaming = TcpStream::connect(sim.addr()).await.unwrap();
    streaming
        .write_all(&raw_post(Api::AnthropicMessages, &body))
        .await
        .unwrap();
    wait_until(|| sim.stats().in_service == 1).await;
    assert_eq!(
        chat(&client(), &sim, Api::AnthropicMessages, false)
            .await
            .status,
        529
    );
    drop(streaming);
    wait_until(|| sim.stats().in_service == 0).await;
}

/// Polls `condition` until it holds (bounded, so a broken simulator fails
/// the test instead of hanging it).
async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}
