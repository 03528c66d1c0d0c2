//! A healthy answer, whole or streamed, possibly cut as the fault says.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, header};

use crate::api::{EventWriter, Events, Exchange, full_body};
use crate::body::{ConnState, Pacing, SimBody, Tail};
use crate::capacity::Slot;
use crate::fault::{Cut as StreamCut, StreamShape};
use crate::record::Counters;
use crate::respond::{error_response, success_headers};
use crate::server::Shared;

/// How one healthy answer goes out.
#[derive(Debug)]
pub(crate) struct Answering<'a> {
    pub(crate) shape: &'a StreamShape,
    /// Whether the request asked for a stream.
    pub(crate) stream: bool,
    /// Whether it continues a prefill (counted in `Stats::prefilled`).
    pub(crate) continues: bool,
    /// Where the answer starts in the reply: 0, or the end of a prefill
    /// the reply starts with.
    pub(crate) start: usize,
    /// The time spent before the head (`openai-processing-ms`).
    pub(crate) took: Duration,
    /// The first-token wait of a stream (a whole answer's is in `took`).
    pub(crate) first_token: Duration,
    /// Draws of the token delay are keyed by it.
    pub(crate) delay_seed: u64,
}

/// A healthy answer, whole or streamed, possibly cut as `how.shape` says.
pub(crate) fn answer(
    shared: &Shared,
    ex: &Exchange<'_>,
    how: Answering<'_>,
    conn: Arc<ConnState>,
    slot: Slot,
) -> Response<SimBody> {
    let shape = how.shape;
    let tokens = shared.config.reply.events_from(how.start);
    if let (false, Some(StreamCut::Error(_, failure))) = (how.stream, &shape.cut) {
        // A whole-body request cannot carry an in-band error: it gets the status.
        return error_response(shared, ex, failure, Some(slot));
    }
    let counter = if shape.cut.is_some() {
        &shared.counters.broken_streams
    } else {
        &shared.counters.answered
    };
    Counters::bump(counter);
    if how.continues {
        Counters::bump(&shared.counters.prefilled);
    }
    let mut headers = HeaderMap::new();
    let body = if how.stream {
        let shown = match &shape.cut {
            Some(
                StreamCut::Error(n, _) | StreamCut::Drop(n) | StreamCut::Stall { after: n, .. },
            ) => (*n).min(tokens.len()),
            _ => tokens.len(),
        };
        let mut writer = EventWriter::new(ex, shown);
        // An error before any content is the stream's very first event.
        if !matches!(shape.cut, Some(StreamCut::Error(0, _))) {
            writer.preamble();
        }
        for token in tokens.take(shown) {
            writer.content(token);
        }
        let tail = match &shape.cut {
            None => {
                writer.finish();
                Tail::Finish
            }
            Some(StreamCut::Error(_, failure)) => {
                writer.raw(&failure.in_band_event(ex));
                Tail::Finish
            }
            Some(StreamCut::NoTerminal) => Tail::Finish,
            Some(StreamCut::Drop(_)) => Tail::Abort,
            Some(StreamCut::Stall { keepalive, .. }) => Tail::Stall {
                keepalive: ex
                    .api
                    .keepalive()
                    .filter(|_| *keepalive)
                    .map(|bytes| (bytes, shared.config.keepalive_interval)),
            },
        };
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ex.api.stream_content_type()),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let token_delay = if shape.token_delay.is_zero() {
            shared.config.token_delay
        } else {
            shape.token_delay
        };
        let pacing = Pacing {
            token_delay,
            delay_seed: how.delay_seed,
            first_token: how.first_token,
        };
        SimBody::events(writer.into_events(), pacing, tail, None, conn, Some(slot))
    } else {
        let whole = full_body(ex, tokens);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &shape.cut {
            None | Some(StreamCut::Error(..)) => SimBody::full(whole, Some(slot)),
            Some(cut) => {
                // Announce the whole length, send half of it, then stop.
                let len = whole.len() as u64;
                let events = Events {
                    data: whole.slice(..whole.len() / 2),
                    ..Events::default()
                };
                let tail = match cut {
                    StreamCut::Stall { .. } => Tail::Stall { keepalive: None },
                    _ => Tail::Abort,
                };
                let pacing = Pacing {
                    delay_seed: how.delay_seed,
                    ..Pacing::default()
                };
                SimBody::events(events, pacing, tail, Some(len), conn, Some(slot))
            }
        }
    };
    success_headers(&mut headers, ex, how.took);
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}
