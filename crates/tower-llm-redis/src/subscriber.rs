//! The background reader: other replicas' decisions, heard on the channel
//! as they are taken and loaded from the stored keys on every (re)connect,
//! applied to this replica's breakers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::state::Shared;
use crate::wire::{Message, StoredKind, WireDecision};

/// The first wait before reconnecting, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Redis back, a replica notices within this much (and the timeout).
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How many keys one `SCAN` step and one `MGET` ask for.
const BATCH: usize = 200;

/// Subscribes, loads the current state and applies what arrives, again
/// after every loss, until aborted with the last
/// [`SharedState`](crate::SharedState).
pub(crate) async fn run(shared: Arc<Shared>, client: redis::Client) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match session(&shared, &client).await {
            // Held a while: the next loss starts the backoff anew.
            Ok(()) => backoff = MIN_BACKOFF,
            Err(error) => shared.health.subscribed(false, &error),
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
    }
}

/// One connection's life: subscribe first (nothing said meanwhile is
/// missed), then load what is stored, then listen until it breaks.
async fn session(shared: &Shared, client: &redis::Client) -> redis::RedisResult<()> {
    let timeout = shared.timeout;
    let mut pubsub = within(timeout, client.get_async_pubsub()).await?;
    within(timeout, pubsub.subscribe(shared.names.channel())).await?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut connection = within(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    reload(shared, &mut connection).await?;
    republish(shared, &mut connection).await?;
    // The pacing task tells every view again at its next tick.
    shared.pacing.clear();
    drop(connection);
    // The republish wrote: writing works again too (the writer says
    // otherwise at its next failure).
    shared.health.writing(true, &"reconnected");
    shared.health.subscribed(true, &"subscribed");

    let (mut sink, mut stream) = pubsub.split();
    let mut liveness = tokio::time::interval(shared.liveness);
    liveness.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    if let Ok(text) = std::str::from_utf8(message.get_payload_bytes())
                        && let Some(message) = Message::decode(text)
                        && message.replica != shared.replica
                    {
                        shared.apply(&message.key, &message.decision);
                    }
                }
                None => {
                    shared.health.subscribed(false, &"subscription closed by the server");
                    return Ok(());
                }
            },
            _ = liveness.tick() => {
                // A connection that died without a word (a partition)
                // shows here, not in the stream.
                if let Err(error) = within(timeout, sink.ping::<redis::Value>()).await {
                    shared.health.subscribed(false, &error);
                    return Ok(());
                }
            }
        }
    }
}

/// Reads every decision stored under the prefix (`SCAN`, then `MGET` by
/// batch) and applies it.
async fn reload(shared: &Shared, connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let timeout = shared.timeout;
    let pattern = shared.names.pattern();
    let mut cursor: u64 = 0;
    loop {
        // Read as bytes: a key or a value that is not UTF-8 (anyone may
        // write under the prefix) is skipped, where a `String` reply would
        // fail the whole batch, and with it every reload, for good.
        let (next, keys): (u64, Vec<Vec<u8>>) = within(
            timeout,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(connection),
        )
        .await?;
        let ours: Vec<(StoredKind, &str, &[u8])> = keys
            .iter()
            .filter_map(|k| {
                let text = std::str::from_utf8(k).ok()?;
                shared
                    .names
                    .parse_key(text)
                    .map(|(kind, key)| (kind, key, k.as_slice()))
            })
            .collect();
        if !ours.is_empty() {
            let redis_keys: Vec<&[u8]> = ours.iter().map(|(_, _, k)| *k).collect();
            let values: Vec<Option<Vec<u8>>> = within(
                timeout,
                redis::cmd("MGET").arg(&redis_keys).query_async(connection),
            )
            .await?;
            for ((kind, key, _), value) in ours.iter().zip(values) {
                let decision = value
                    .as_deref()
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| WireDecision::parse_value(*kind, v));
                if let Some(decision) = decision {
                    shared.apply(key, &decision);
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}

/// After a reconnect, tells the others what this replica decided itself
/// and still holds (what it decided while Redis was away was lost).
/// Others' decisions it applied are not told again: their grace would be
/// added twice.
async fn republish(
    shared: &Shared,
    connection: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    for (key, decision) in shared.own_state() {
        if let Some(pipe) = crate::publisher::pipeline(shared, &key, &decision) {
            within(shared.timeout, pipe.query_async::<()>(connection)).await?;
        }
    }
    Ok(())
}

/// `future`, or a timeout error after `timeout`.
async fn within<T>(
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
    }
}
