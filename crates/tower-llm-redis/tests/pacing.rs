//! Pacing shared through a real `redis-server`: what one replica's
//! answers said a key has left reaches the others, which then hold their
//! calls to that key instead of meeting the provider's 429s.
//!
//! Run with `--nocapture` to see the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{RedisServer, Replica, key, time_until};
use tower_llm_circuit::CircuitConfig;
use tower_llm_classify::ErrorKind;
use tower_llm_testkit::{ProviderLimits, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_one_replica_saw_exhausted_is_held_by_the_others_until_its_reset() {
    let redis = RedisServer::start();
    let fleet = [(); 3].map(|()| Replica::new(&redis.url(), "gw-pace", CircuitConfig::standard()));
    for replica in &fleet {
        replica.connected().await;
    }
    let [a, b, c] = &fleet;
    // The provider allows 3 requests a minute to this key, whoever sends
    // them: A sends all 3, and the last answer says none is left.
    let sim = Simulator::builder()
        .rate_limits(ProviderLimits::rpm(3))
        .start()
        .await
        .unwrap();
    for _ in 0..3 {
        a.call(&sim, "gpt-4o").await.unwrap();
    }
    assert!(a.handle.paced_for(&key("gpt-4o")).is_some());

    let mut reached = Vec::new();
    for replica in [b, c] {
        reached.push(
            time_until("A's view reached the replica", || {
                replica.handle.paced_for(&key("gpt-4o")).is_some()
            })
            .await,
        );
    }
    println!("pacing view (0 left) from A's answer to B and C, sharing every 250 ms: {reached:?}");
    // B and C answer at once, sending nothing the provider would refuse.
    for replica in [b, c] {
        let error = replica.call(&sim, "gpt-4o").await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::RateLimited);
    }
    assert_eq!(sim.requests().len(), 3);
    assert_eq!(sim.stats().errors, 0, "no 429 from the provider");
    // B and C heard it from A and did not tell it back.
    assert_eq!(a.shared.stats().applied, 0);
}
