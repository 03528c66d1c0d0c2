//! Starting, stopping and dropping: no leaked task, port or connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_llm_testkit::{Api, Fault, Simulator};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// A connection with a stalled request in flight.
async fn stalled_connection(sim: &Simulator) -> TcpStream {
    let mut stream = TcpStream::connect(sim.addr()).await.unwrap();
    stream
        .write_all(&raw_post(
            Api::OpenAiChat,
            &chat_body(Api::OpenAiChat, "m", false),
        ))
        .await
        .unwrap();
    stream
}

async fn wait_until(mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..2000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

#[tokio::test]
async fn shutdown_closes_the_port_every_connection_and_every_task() {
    let before = alive_tasks();
    let sim = Simulator::builder()
        .plan(Fault::stall())
        .start()
        .await
        .unwrap();
    let addr = sim.addr();
    let mut stalled = stalled_connection(&sim).await;
    wait_until(async || sim.stats().stalled == 1).await;
    assert!(
        alive_tasks() >= before + 2,
        "the accept loop and the connection"
    );

    sim.shutdown().await;
    assert_eq!(alive_tasks(), before, "no task outlives shutdown");
    let mut buf = [0u8; 16];
    assert_eq!(
        stalled.read(&mut buf).await.unwrap_or(0),
        0,
        "the stalled connection was closed"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

#[tokio::test]
async fn dropping_the_simulator_closes_everything_soon_after() {
    let before = alive_tasks();
    let sim = Simulator::builder()
        .plan(Fault::stall())
        .start()
        .await
        .unwrap();
    let addr = sim.addr();
    let mut stalled = stalled_connection(&sim).await;
    wait_until(async || sim.stats().stalled == 1).await;
    drop(sim);
    wait_until(async || alive_tasks() == before).await;
    let mut buf = [0u8; 16];
    assert_eq!(stalled.read(&mut buf).await.unwrap_or(0), 0);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn stop_listening_refuses_connections_until_listening_again() {
    let sim = Simulator::start().await.unwrap();
    let client = client();
    assert_eq!(
        chat(&client, &sim, Api::OpenAiChat, false).await.status,
        200
    );

    sim.stop_listening().await;
    assert!(!sim.is_listening());
    let refused = TcpStream::connect(sim.addr()).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // A pooled client sees its kept-alive connection gone and cannot reconnect.
    assert!(
        send(
            &client,
            &sim,
            Api::OpenAiChat,
            &chat_body(Api::OpenAiChat, "m", false)
        )
        .await
        .is_err()
    );

    sim.start_listening().await.unwrap();
    assert!(sim.is_listening());
    assert_eq!(
        chat(&client, &sim, Api::OpenAiChat, false).await.status,
        200
    );
    // Requests are counted across the restart.
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test]
async fn a_client_hanging_up_mid_stream_frees_everything() {
    let before = alive_tasks();
    let sim = Simulator::builder()
        .plan(Fault::stream_stall_after(1))
        .start()
        .await
        .unwrap();
    let mut stream = TcpStream::connect(sim.addr()).await.unwrap();
    stream
        .write_all(&raw_post(
            Api::OpenAiChat,
            &chat_body(Api::OpenAiChat, "m", true),
        ))
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(stream.read(&mut buf).await.unwrap() > 0);
    wait_until(async || sim.stats().in_service == 1).await;
    drop(stream);
    wait_until(async || sim.stats().in_service == 0 && alive_tasks() == before + 1).await;
}
