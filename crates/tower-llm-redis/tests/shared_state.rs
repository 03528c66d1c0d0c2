//! Three replicas (three circuit layers, each with its own shared-state
//! connection) in one process, one simulated provider, one real
//! `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::{RedisServer, Replica, eventually, key};
use tower_llm_circuit::{CircuitConfig, CircuitState, ProbeResult};
use tower_llm_classify::ErrorKind;
use tower_llm_redis::{SharedState, SharedStatus};
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

const PREFIX: &str = "gw-test";

async fn fleet(redis: &RedisServer, config: fn() -> CircuitConfig) -> [Replica; 3] {
    let fleet = [(); 3].map(|()| Replica::new(&redis.url(), PREFIX, config()));
    for replica in &fleet {
        replica.connected().await;
    }
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_on_one_replica_makes_the_others_refuse_the_key_locally() {
    let redis = RedisServer::start();
    let [a, b, c] = fleet(&redis, CircuitConfig::standard).await;
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::rate_limited(
            Duration::from_secs(30),
        )]))
        .start()
        .await
        .unwrap();

    let error = a.call(&sim, "gpt-4o").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    for replica in [&b, &c] {
        eventually("the cooldown reached the replica", || {
            replica.handle.snapshot().iter().any(|k| {
                *k.key == key("gpt-4o")
                    && k.cooldown_remaining
                        .is_some_and(|left| left > Duration::from_secs(25))
            })
        })
        .await;
    }
    // The provider would answer now (the script is over), but B and C
    // refuse the key themselves for the rest of the hint.
    for replica in [&b, &c] {
        let error = replica.call(&sim, "gpt-4o").await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RateLimited);
    }
    assert_eq!(sim.requests().len(), 1);
    // Another model is not affected.
    b.call(&sim, "gpt-4o-mini").await.unwrap();
    assert!(a.shared.stats().published >= 1);
    assert!(b.shared.stats().applied >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_on_one_replica_opens_the_others_and_its_close_closes_them() {
    let redis = RedisServer::start();
    let [a, b, c] = fleet(&redis, CircuitConfig::fast_trip).await;
    let sim = Simulator::builder()
        .plan(FaultPlan::always(Fault::overloaded()))
        .start()
        .await
        .unwrap();

    while a.handle.state(&key("gpt-4o")) != Some(CircuitState::Open) {
        let error = a.call(&sim, "gpt-4o").await.unwrap_err();
        assert!(matches!(
            error.kind(),
            ErrorKind::Overloaded | ErrorKind::CircuitOpen
        ));
    }
    let sent = sim.requests().len();
    for replica in [&b, &c] {
        eventually("the open breaker reached the replica", || {
            replica.handle.state(&key("gpt-4o")) == Some(CircuitState::Open)
        })
        .await;
        let error = replica.call(&sim, "gpt-4o").await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    }
    assert_eq!(
        sim.requests().len(),
        sent,
        "B and C sent nothing to the dead target"
    );

    // A's health probe closes it: B and C close too.
    sim.set_plan(FaultPlan::healthy());
    assert_eq!(
        a.handle.probe(&key("gpt-4o"), async { true }).await,
        ProbeResult::Closed
    );
    for replica in [&b, &c] {
        eventually("the close reached the replica", || {
            replica.handle.state(&key("gpt-4o")) == Some(CircuitState::Closed)
        })
        .await;
        replica.call(&sim, "gpt-4o").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_starts_later_loads_the_current_state() {
    let redis = RedisServer::start();
    let a = Replica::new(&redis.url(), PREFIX, CircuitConfig::fast_trip());
    a.connected().await;
    let sim = Simulator::builder()
        .plan(FaultPlan::always(Fault::overloaded()))
        .start()
        .await
        .unwrap();
    while a.handle.state(&key("down")) != Some(CircuitState::Open) {
        let _ = a.call(&sim, "down").await;
    }
    sim.set_plan(FaultPlan::always(Fault::rate_limited(Duration::from_secs(
        30,
    ))));
    let _ = a.call(&sim, "limited").await;
    eventually("both written", || a.shared.stats().published >= 2).await;

    let late = Replica::new(&redis.url(), PREFIX, CircuitConfig::fast_trip());
    late.connected().await;
    assert_eq!(late.handle.state(&key("down")), Some(CircuitState::Open));
    let limited = late.handle.snapshot();
    let limited = limited.iter().find(|k| *k.key == key("limited")).unwrap();
    assert!(limited.cooldown_remaining.is_some());
    // A gateway under another prefix shares nothing with them.
    let other = Replica::new(&redis.url(), "other-gw", CircuitConfig::fast_trip());
    other.connected().await;
    assert_eq!(other.handle.keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_under_the_prefix_that_are_not_utf8_are_skipped_and_the_rest_is_loaded() {
    // Anyone who can write under the prefix: a `String` reply failed the
    // whole reload, and with it every connection, for good.
    let redis = RedisServer::start();
    let a = Replica::new(&redis.url(), PREFIX, CircuitConfig::fast_trip());
    a.connected().await;
    let sim = Simulator::builder()
        .plan(FaultPlan::always(Fault::rate_limited(Duration::from_secs(
            30,
        ))))
        .start()
        .await
        .unwrap();
    let _ = a.call(&sim, "limited").await;
    eventually("written", || a.shared.stats().published >= 1).await;
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}:pace:x"))
        .arg(&b"\xff\xfe"[..])
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut bad_key = format!("{PREFIX}:open:").into_bytes();
    bad_key.extend_from_slice(b"\xff");
    let _: () = redis::cmd("SET")
        .arg(bad_key)
        .arg("1")
        .query_async(&mut connection)
        .await
        .unwrap();

    let late = Replica::new(&redis.url(), PREFIX, CircuitConfig::fast_trip());
    late.connected().await;
    let snapshot = late.handle.snapshot();
    let limited = snapshot.iter().find(|k| *k.key == key("limited")).unwrap();
    assert!(limited.cooldown_remaining.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_when_redis_dies_and_the_fleet_converges_when_it_is_back() {
    let mut redis = RedisServer::start();
    let [a, b, c] = fleet(&redis, CircuitConfig::fast_trip).await;
    let sim = Simulator::start().await.unwrap();

    redis.kill();
    for replica in [&a, &b, &c] {
        // Every call succeeds with Redis gone.
        for _ in 0..20 {
            replica.call(&sim, "gpt-4o").await.unwrap();
        }
        replica.status_becomes(SharedStatus::Degraded).await;
    }
    // A decision taken during the outage is not lost: A opens a key now.
    sim.set_plan(FaultPlan::always(Fault::overloaded()));
    while a.handle.state(&key("flaky")) != Some(CircuitState::Open) {
        let _ = a.call(&sim, "flaky").await;
    }
    assert_eq!(b.handle.state(&key("flaky")), None);
    assert!(a.shared.stats().outages >= 1);

    redis.restart();
    for replica in [&a, &b, &c] {
        replica.status_becomes(SharedStatus::Connected).await;
    }
    for replica in [&b, &c] {
        eventually("A's outage decision reached the replica", || {
            replica.handle.state(&key("flaky")) == Some(CircuitState::Open)
        })
        .await;
    }
    // And new decisions flow again.
    sim.set_plan(FaultPlan::always(Fault::rate_limited(Duration::from_secs(
        30,
    ))));
    let _ = b.call(&sim, "after").await;
    eventually("a decision after the restart reached A", || {
        a.handle
            .snapshot()
            .iter()
            .any(|k| *k.key == key("after") && k.cooldown_remaining.is_some())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_run_sends_no_command_to_redis() {
    let redis = RedisServer::start();
    // A generous timeout: a liveness check that a loaded machine delays
    // must not reconnect (a SUBSCRIBE and a SCAN in the counts) meanwhile.
    let fleet = [(); 3].map(|()| {
        let shared = SharedState::builder(&redis.url(), PREFIX)
            .timeout(Duration::from_secs(2))
            .connect()
            .unwrap();
        Replica::with(CircuitConfig::standard(), shared)
    });
    for replica in &fleet {
        replica.connected().await;
    }
    let sim = Simulator::start().await.unwrap();
    // Warm up: every key seen once.
    for replica in &fleet {
        replica.call(&sim, "gpt-4o").await.unwrap();
    }
    let before = redis.command_calls().await;
    for i in 0..10_000 {
        fleet[i % 3].call(&sim, "gpt-4o").await.unwrap();
    }
    let after = redis.command_calls().await;
    println!("commands before 10,000 healthy calls: {before:?}; after: {after:?}");
    assert_eq!(before, after);
    for replica in &fleet {
        assert_eq!(replica.shared.stats().published, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ignores_what_it_said_itself_and_malformed_messages() {
    let redis = RedisServer::start();
    let [a, b, _c] = fleet(&redis, CircuitConfig::standard).await;
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("PUBLISH")
        .arg(format!("{PREFIX}:decisions"))
        .arg("not a decision at all")
        .query_async(&mut connection)
        .await
        .unwrap();
    let sim = Simulator::builder()
        .plan(FaultPlan::script([Fault::rate_limited(
            Duration::from_secs(30),
        )]))
        .start()
        .await
        .unwrap();
    let _ = a.call(&sim, "gpt-4o").await;
    eventually("B heard it", || b.shared.stats().applied >= 1).await;
    // A heard its own message back and skipped it.
    assert_eq!(a.shared.stats().applied, 0);
    assert_eq!(b.shared.stats().status, SharedStatus::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_subscription_is_checked_without_reconnecting() {
    let redis = RedisServer::start();
    let shared = SharedState::builder(&redis.url(), PREFIX)
        .liveness_interval(Duration::from_millis(10))
        .timeout(Duration::from_secs(2))
        .connect()
        .unwrap();
    let replica = Replica::with(CircuitConfig::standard(), shared);
    replica.connected().await;
    while redis.calls_of("ping").await < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Five checks answered, the first subscription held.
    assert_eq!(redis.calls_of("subscribe").await, 1);
    assert_eq!(replica.shared.status(), SharedStatus::Connected);
    assert_eq!(replica.shared.stats().outages, 0);
}
