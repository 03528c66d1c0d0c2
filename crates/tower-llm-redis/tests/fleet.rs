//! The fleet's goals, against a real `redis-server`: how fast a decision
//! reaches the other replicas (printed, not asserted), one probe per open
//! interval for the whole fleet, no call failing while Redis is killed
//! mid-run, and the state converging when it is back. Three replicas in one
//! process, each with its own connections; one simulated provider.
//!
//! Run with `--nocapture` to see the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{RedisServer, Replica, key, percentiles, time_until};
use tower_llm_circuit::{CircuitConfig, CircuitState};
use tower_llm_classify::ErrorKind;
use tower_llm_redis::SharedStatus;
use tower_llm_testkit::{Fault, FaultPlan, Simulator};

const PREFIX: &str = "gw-fleet";

/// Opens a key at its first failure (one call, one decision).
fn trips_at_once() -> CircuitConfig {
    CircuitConfig::fast_trip()
        .to_builder()
        .consecutive_failures(Some(1))
        .build()
        .unwrap()
}

/// Opens at its first failure for 300 ms each time, one probe, no jitter.
fn short_open() -> CircuitConfig {
    CircuitConfig::fast_trip()
        .to_builder()
        .consecutive_failures(Some(1))
        .open_duration(Duration::from_millis(300), 1.0, Duration::from_millis(300))
        .open_jitter(0.0)
        .half_open_probes(1)
        .build()
        .unwrap()
}

async fn fleet(redis: &RedisServer, config: fn() -> CircuitConfig) -> [Arc<Replica>; 3] {
    let fleet = [(); 3].map(|()| Arc::new(Replica::new(&redis.url(), PREFIX, config())));
    for replica in &fleet {
        replica.connected().await;
    }
    fleet
}

fn cooling(replica: &Replica, key: &str) -> bool {
    replica
        .handle
        .snapshot()
        .iter()
        .any(|k| *k.key == *key && k.cooldown_remaining.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_open_and_every_cooldown_of_one_replica_reaches_the_other_two() {
    const SAMPLES: usize = 200;
    let redis = RedisServer::start();
    let [a, b, c] = fleet(&redis, trips_at_once).await;
    let sim = Simulator::builder()
        .plan(FaultPlan::always(Fault::overloaded()))
        .start()
        .await
        .unwrap();

    // An outage found by A: from A's breaker opening (the call that opened
    // it returned) until B and C refuse the key too.
    let mut opened = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let model = format!("down-{i}");
        let error = a.call(&sim, &model).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Overloaded);
        assert_eq!(a.handle.state(&key(&model)), Some(CircuitState::Open));
        opened.push(
            time_until("the open reached B and C", || {
                b.handle.state(&key(&model)) == Some(CircuitState::Open)
                    && c.handle.state(&key(&model)) == Some(CircuitState::Open)
            })
            .await,
        );
    }

    // A 429 with `retry-after: 30` seen by A: until B and C cool down too.
    sim.set_plan(FaultPlan::always(Fault::rate_limited(Duration::from_secs(
        30,
    ))));
    let mut cooled = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let model = format!("limited-{i}");
        let error = a.call(&sim, &model).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RateLimited);
        let key = key(&model);
        cooled.push(
            time_until("the cooldown reached B and C", || {
                cooling(&b, &key) && cooling(&c, &key)
            })
            .await,
        );
    }
    println!(
        "propagation on loopback, open (A's breaker opened -> B and C open): {}",
        percentiles(&mut opened)
    );
    println!(
        "propagation on loopback, 429 retry-after 30 (A's answer -> B and C cool down): {}",
        percentiles(&mut cooled)
    );
    // Every decision was written (and pacing views besides: the 429s said
    // none was left).
    let written = || a.shared.stats().published >= 2 * SAMPLES as u64;
    time_until("every decision written", written).await;
    assert_eq!(a.shared.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_calling_a_key_stop_once_another_replicas_429_reaches_them() {
    // One round is a handful of calls against a bound of a few: the figure
    // is the sum over several rounds, each on a key of its own (the last
    // one's cooldown lasts 30 s).
    const MODELS: [&str; 8] = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4o-mini",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "o1",
    ];
    let redis = RedisServer::start();
    let fleet = fleet(&redis, CircuitConfig::standard).await;
    // The same circuit key (provider and model) on two simulators: A meets
    // the 429 on one, B and C keep calling the other until told.
    let limited = Simulator::builder()
        .plan(FaultPlan::always(Fault::rate_limited(Duration::from_secs(
            30,
        ))))
        .start()
        .await
        .unwrap();
    let served = Arc::new(Simulator::start().await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let round = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let loads: Vec<_> = fleet[1..]
        .iter()
        .map(|replica| {
            let (replica, served) = (Arc::clone(replica), Arc::clone(&served));
            let (stop, round) = (Arc::clone(&stop), Arc::clone(&round));
            let refused = Arc::clone(&refused);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let model = MODELS[round.load(Ordering::Relaxed)];
                    if let Err(e) = replica.call(&served, model).await {
                        assert_eq!(e.kind(), ErrorKind::RateLimited);
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();

    let (mut meanwhile, mut after, mut bound) = (0, 0, 0.0);
    let mut propagations = Vec::new();
    let mut rates = Vec::new();
    for (i, model) in MODELS.iter().enumerate() {
        round.store(i, Ordering::Relaxed);
        let loading = Instant::now();
        let at_load = served.requests().len();
        while served.requests().len() < at_load + 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = served.requests().len();
        // B and C's request rate together.
        let rate = (before - at_load) as f64 / loading.elapsed().as_secs_f64();
        let started = Instant::now();
        let error = fleet[0].call(&limited, model).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RateLimited);
        for replica in &fleet[1..] {
            time_until("the cooldown reached the replica", || {
                cooling(replica, &key(model))
            })
            .await;
        }
        let propagated = started.elapsed();
        let after_cooldown = served.requests().len();
        let refused_at_cooldown = refused.load(Ordering::Relaxed);
        while refused.load(Ordering::Relaxed) < refused_at_cooldown + 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Once told, B and C send nothing more to the key: at most the call
        // each had in flight.
        let at_end = served.requests().len();
        assert!(
            at_end - after_cooldown <= 2,
            "{model}: {after_cooldown} then {at_end}"
        );
        meanwhile += after_cooldown - before;
        after += at_end - after_cooldown;
        bound += 2.0 * rate * propagated.as_secs_f64();
        propagations.push(propagated);
        rates.push(rate);
    }
    stop.store(true, Ordering::Relaxed);
    for load in loads {
        load.await.unwrap();
    }
    // The bound is 2 x their rate x the propagation delay: twice
    // what they send while the decision travels (a call sent before the
    // decision could be heard cannot be taken back).
    let mean_rate = rates.iter().sum::<f64>() / rates.len() as f64;
    println!(
        "B and C calling one key at {mean_rate:.0}/s together, {} rounds (a key each): from \
         A's call to both cooling {}; their calls that reached the provider meanwhile: \
         {meanwhile} in all, rate x propagation = {:.1}, the bound 2 x that = {bound:.1}; \
         after: {after} (in flight when told); refused locally: {}",
        MODELS.len(),
        percentiles(&mut propagations),
        bound / 2.0,
        refused.load(Ordering::Relaxed),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_sends_one_probe_per_open_interval_and_closes_with_it() {
    let redis = RedisServer::start();
    let fleet = fleet(&redis, short_open).await;
    let sim = Simulator::builder()
        .plan(FaultPlan::always(Fault::overloaded()))
        .start()
        .await
        .unwrap();
    let model = "gpt-4o";
    let error = fleet[0].call(&sim, model).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    for replica in &fleet[1..] {
        time_until("the open reached the replica", || {
            replica.handle.state(&key(model)) == Some(CircuitState::Open)
        })
        .await;
    }

    // Every replica calls every 5 ms through several 300 ms open
    // intervals, the target still down.
    let sent_before = sim.requests().len();
    let mut reached_target = [0u64; 3];
    let mut calls = [0u64; 3];
    let until = Instant::now() + Duration::from_millis(1_600);
    while Instant::now() < until {
        for (i, replica) in fleet.iter().enumerate() {
            calls[i] += 1;
            let error = replica.call(&sim, model).await.unwrap_err();
            if error.kind() != ErrorKind::CircuitOpen {
                reached_target[i] += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let probes = sim.requests().len() - sent_before;
    println!(
        "one target down for 1.6 s, 300 ms open intervals: calls per replica {calls:?}, \
         reached the target {reached_target:?}, probes in all {probes}"
    );
    assert_eq!(
        reached_target[1..],
        [0, 0],
        "only the replica that opened the key probes it"
    );
    assert!(reached_target[0] >= 1, "the opener probed");
    assert_eq!(probes as u64, reached_target[0]);

    // The target is back: the opener's next probe closes the key
    // everywhere.
    sim.set_plan(FaultPlan::healthy());
    while fleet[0].call(&sim, model).await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        fleet[0].handle.state(&key(model)),
        Some(CircuitState::Closed)
    );
    for replica in &fleet[1..] {
        time_until("the close reached the replica", || {
            replica.handle.state(&key(model)) == Some(CircuitState::Closed)
        })
        .await;
        replica.call(&sim, model).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_fails_while_redis_is_killed_mid_run_and_the_fleet_converges_when_it_is_back() {
    let mut redis = RedisServer::start();
    let fleet = fleet(&redis, CircuitConfig::fast_trip).await;
    let sim = Arc::new(Simulator::start().await.unwrap());
    let dead = Simulator::builder()
        .plan(FaultPlan::always(Fault::overloaded()))
        .start()
        .await
        .unwrap();

    // Each replica calls a healthy target in a loop, timing every call,
    // while Redis is killed and started again.
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = fleet
        .iter()
        .map(|replica| {
            let (replica, sim) = (Arc::clone(replica), Arc::clone(&sim));
            let (phase, stop) = (Arc::clone(&phase), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies: [Vec<Duration>; 3] = Default::default();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    replica.call(&sim, "gpt-4o").await.unwrap();
                    latencies[phase.load(Ordering::Relaxed)].push(start.elapsed());
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.kill();
    phase.store(1, Ordering::Relaxed);
    for replica in &fleet {
        replica.status_becomes(SharedStatus::Degraded).await;
    }
    // A finds an outage while Redis is away.
    while fleet[0].handle.state(&key("flaky")) != Some(CircuitState::Open) {
        let _ = fleet[0].call(&dead, "flaky").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.restart();
    let back = Instant::now();
    phase.store(2, Ordering::Relaxed);
    for replica in &fleet {
        replica.status_becomes(SharedStatus::Connected).await;
    }
    let reconnected = back.elapsed();
    for replica in &fleet[1..] {
        time_until("A's outage decision reached the replica", || {
            replica.handle.state(&key("flaky")) == Some(CircuitState::Open)
        })
        .await;
    }
    let converged = back.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut phases: [Vec<Duration>; 3] = Default::default();
    for load in loads {
        // A call that failed would have panicked its task.
        for (all, one) in phases.iter_mut().zip(load.await.unwrap()) {
            all.extend(one);
        }
    }
    for (name, samples) in ["redis up", "redis killed", "redis back"]
        .iter()
        .zip(phases.iter_mut())
    {
        assert!(!samples.is_empty(), "calls made while {name}");
        println!("call latency, {name}: {}", percentiles(samples));
    }
    println!(
        "redis back (answering PING) -> every replica connected: {reconnected:?}; \
         -> A's outage decision open on B and C: {converged:?}"
    );
    assert!(fleet[0].shared.stats().outages >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_makes_no_call_wait_and_the_fleet_catches_up_when_it_answers() {
    let redis = RedisServer::start();
    let [a, b, _c] = fleet(&redis, CircuitConfig::standard).await;
    let healthy = Simulator::start().await.unwrap();
    let limited = Simulator::builder()
        .plan(FaultPlan::always(Fault::rate_limited(Duration::from_secs(
            30,
        ))))
        .start()
        .await
        .unwrap();

    // Redis answers nothing for 2 s (busy, as a slow one), its
    // connections open.
    let mut connection = redis.connection().await;
    let stall = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(2)
            .query_async::<()>(&mut connection)
            .await
    });
    while redis.answers() {
        tokio::task::yield_now().await;
    }
    // A takes a decision: its write times out, A goes on alone.
    let error = a.call(&limited, "gpt-4o").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    a.status_becomes(SharedStatus::Degraded).await;
    let mut latencies = Vec::new();
    while !redis.answers() {
        for _ in 0..20 {
            let start = Instant::now();
            a.call(&healthy, "other").await.unwrap();
            latencies.push(start.elapsed());
        }
    }
    // (The client that sent `DEBUG SLEEP` may have given up waiting.)
    let _ = stall.await.unwrap();
    println!(
        "calls while Redis was stalled: {}",
        percentiles(&mut latencies)
    );

    // Redis answers again: A writes what it holds, B hears it.
    a.status_becomes(SharedStatus::Connected).await;
    time_until("A's cooldown reached B after the stall", || {
        cooling(&b, &key("gpt-4o"))
    })
    .await;
    assert!(a.shared.stats().failed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_decision_never_shortens_what_is_stored() {
    let redis = RedisServer::start();
    let [a, b, _c] = fleet(&redis, CircuitConfig::standard).await;
    let sim = Simulator::builder()
        .plan(FaultPlan::script([
            Fault::rate_limited(Duration::from_secs(60)),
            Fault::rate_limited(Duration::from_secs(5)),
        ]))
        .start()
        .await
        .unwrap();
    let _ = a.call(&sim, "gpt-4o").await;
    time_until("A's long cooldown reached B", || {
        cooling(&b, &key("gpt-4o"))
    })
    .await;
    // B, told about the 60 s, sends nothing; reset by hand, it hears 5 s.
    b.handle.reset(&key("gpt-4o"));
    let _ = b.call(&sim, "gpt-4o").await;
    time_until("B's short cooldown was written", || {
        b.shared.stats().published >= 1
    })
    .await;

    let stored: String = redis::cmd("GET")
        .arg(format!("{PREFIX}:cooldown:{}", key("gpt-4o")))
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let until_ms: u64 = stored.split(' ').next().unwrap().parse().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        until_ms > now_ms + 30_000,
        "the 60 s cooldown is still stored: {stored}"
    );
    // A kept its own longer cooldown too.
    let left = a
        .handle
        .snapshot()
        .into_iter()
        .find(|k| *k.key == key("gpt-4o"))
        .and_then(|k| k.cooldown_remaining)
        .unwrap();
    assert!(left > Duration::from_secs(30));
}
