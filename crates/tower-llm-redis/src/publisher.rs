//! The background writer: this replica's decisions, from a bounded queue,
//! to Redis (`SET key value PX ttl` for late joiners, unless a longer one
//! is stored; `PUBLISH` for the running replicas), never on the caller's
//! path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use crate::state::Shared;
use crate::wire::{Message, WireDecision, ttl_ms};

/// One write: the circuit key and its decision.
pub(crate) type Outgoing = (Arc<str>, WireDecision);

/// `KEYS[1]` = `ARGV[1]` with a time to live of `ARGV[3]` ms, unless it
/// holds an `until` (its first number) at or past `ARGV[2]` already.
const SET_IF_LONGER: &str = "local v = redis.call('GET', KEYS[1]) \
if v and tonumber(string.match(v, '^%d+')) >= tonumber(ARGV[2]) then return 0 end \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return 1";

/// The commands that share `decision` of `key`; `None` when it is over
/// already (nothing to tell).
pub(crate) fn pipeline(
    shared: &Shared,
    key: &str,
    decision: &WireDecision,
) -> Option<redis::Pipeline> {
    let mut pipe = redis::pipe();
    match (decision, shared.names.key_of(key, decision)) {
        (WireDecision::Pace { .. }, Some(redis_key)) => {
            // The latest view replaces the one before (each replica's
            // `apply_pacing` keeps the tighter of its own and this).
            let ttl = ttl_ms(decision.until_ms()?)?;
            pipe.cmd("SET")
                .arg(redis_key)
                .arg(decision.value().unwrap_or_default())
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        (_, Some(redis_key)) => {
            let until_ms = decision.until_ms()?;
            let ttl = ttl_ms(until_ms)?;
            // SET only if longer than what is stored: a shorter decision
            // (a clock a little behind, an older one told again after a
            // reconnect) never shortens what a late joiner loads.
            pipe.cmd("EVAL")
                .arg(SET_IF_LONGER)
                .arg(1)
                .arg(redis_key)
                .arg(decision.value().unwrap_or_default())
                .arg(until_ms)
                .arg(ttl)
                .ignore();
        }
        (_, None) => {
            pipe.cmd("DEL").arg(shared.names.open_key(key)).ignore();
        }
    }
    let message = Message {
        replica: shared.replica,
        key: key.to_owned(),
        decision: decision.clone(),
    };
    pipe.cmd("PUBLISH")
        .arg(shared.names.channel())
        .arg(message.encode())
        .ignore();
    Some(pipe)
}

/// After a failed write, how long until the writer tries again with what
/// this replica still holds (a slow Redis that recovers without dropping
/// the connection says nothing by itself).
const RECHECK: Duration = Duration::from_millis(500);

/// Writes what arrives on `queue` until the queue closes (or the task is
/// aborted with the last [`SharedState`](crate::SharedState)). After a
/// failed write, every [`RECHECK`] it writes this replica's own decisions
/// that still hold (or a `PING` when there are none) until one succeeds.
pub(crate) async fn run(
    shared: Arc<Shared>,
    client: redis::Client,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    let mut connection: Option<ConnectionManager> = None;
    let mut behind = false;
    loop {
        let next = if behind {
            tokio::select! {
                next = queue.recv() => next.map(Some),
                () = tokio::time::sleep(RECHECK) => Some(None),
            }
        } else {
            queue.recv().await.map(Some)
        };
        let written = match next {
            // The queue closed: the state is gone.
            None => return,
            Some(Some((key, decision))) => {
                shared.remember(&key, &decision);
                let Some(pipe) = pipeline(&shared, &key, &decision) else {
                    continue;
                };
                let written = write(&shared, &client, &mut connection, &pipe).await;
                if written {
                    shared.health.published.fetch_add(1, Ordering::Relaxed);
                }
                written
            }
            Some(None) => {
                let mut pipe = redis::pipe();
                pipe.cmd("PING").ignore();
                for (key, decision) in shared.own_state() {
                    if let Some(own) = pipeline(&shared, &key, &decision) {
                        for command in own.cmd_iter() {
                            pipe.add_command(command.clone()).ignore();
                        }
                    }
                }
                write(&shared, &client, &mut connection, &pipe).await
            }
        };
        behind = !written;
    }
}

/// Sends `pipe`, connecting first if need be; says how it went to the
/// health; `true` if written.
async fn write(
    shared: &Shared,
    client: &redis::Client,
    connection: &mut Option<ConnectionManager>,
    pipe: &redis::Pipeline,
) -> bool {
    let timeout = shared.timeout;
    if connection.is_none() {
        *connection = connect(client, timeout).await;
    }
    let Some(conn) = connection.as_mut() else {
        shared.health.failed.fetch_add(1, Ordering::Relaxed);
        shared.health.writing(false, &"cannot connect to write");
        return false;
    };
    match tokio::time::timeout(timeout, pipe.query_async::<()>(conn)).await {
        Ok(Ok(())) => {
            shared.health.writing(true, &"write succeeded");
            true
        }
        Ok(Err(error)) => {
            shared.health.failed.fetch_add(1, Ordering::Relaxed);
            shared.health.writing(false, &error);
            false
        }
        Err(_) => {
            shared.health.failed.fetch_add(1, Ordering::Relaxed);
            shared.health.writing(false, &"write timed out");
            false
        }
    }
}

/// A connection manager (it reconnects by itself once made); `None` if
/// Redis cannot be reached now.
async fn connect(client: &redis::Client, timeout: Duration) -> Option<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    match tokio::time::timeout(
        timeout.saturating_mul(2),
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    {
        Ok(Ok(manager)) => Some(manager),
        _ => None,
    }
}
