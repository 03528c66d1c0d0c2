//! [`timer_heartbeat`]: one timer always pending, so that the timeouts each
//! request sets do not wake tokio's timer driver.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// How often [`timer_heartbeat`]'s timer fires: sooner than any timeout a
/// request sets on the happy path (the gateway's and the stack's are
/// seconds), rare enough to cost nothing (four wake-ups a second).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(250);

/// Keeps a timer pending on the current runtime for as long as it runs.
///
/// tokio wakes its timer driver (an eventfd write, and a thread woken from
/// `epoll_wait`) whenever a timer is set that is due before the driver's
/// next planned wake-up, and when no timer is pending at all, any timer is.
/// Between requests a server at low concurrency has none pending, so each
/// request's first timeout (hyper's header-read timeout, the body-read
/// limit, the attempt's time limit) paid a wake-up and the syscalls around
/// it. With this timer never more than [`HEARTBEAT_PERIOD`] away, a timeout
/// of seconds is filed in the wheel without one: under a one-connection
/// load (strace, `gateway_load --only gateway --mode whole --conns 1`) the
/// eventfd writes went from 1.02 to 0.28 per request and the futex calls
/// from 4.0 to 3.7.
///
/// [`serve`](crate::serve()) runs it for as long as it serves; a program
/// that serves [`router()`](crate::router()) itself can spawn it on the
/// same runtime. Never returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let heartbeat = tokio::spawn(tower_llm_gateway::timer_heartbeat());
/// // ... serve ...
/// heartbeat.abort();
/// # }
/// ```
pub async fn timer_heartbeat() {
    let mut beat = tokio::time::interval(HEARTBEAT_PERIOD);
    // A runtime too busy to fire it on time needs no catching up.
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
    }
}

/// Aborts the task it holds when dropped: a heartbeat lives exactly as long
/// as the future that started it, even one dropped midway.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
