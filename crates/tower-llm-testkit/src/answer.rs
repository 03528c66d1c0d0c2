//! A healthy answer, whole or streamed, possibly cut as the fault says.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, header};

use crate::api::{EventWriter, Exchange, full_body};
use crate::body::{ConnState, SimBody, Tail};
use crate::capacity::Slot;
use crate::delay::Delay;
use crate::fault::{Cut as StreamCut, StreamShape};
use crate::record::Counters;
use crate::respond::{error_response, success_headers};
use crate::server::Shared;

/// A healthy answer, whole or streamed, possibly cut as `shape` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn answer(
    shared: &Shared,
    ex: &Exchange<'_>,
    shape: &StreamShape,
    stream: bool,
    took: Duration,
    delay_seed: u64,
    conn: Arc<ConnState>,
    slot: Slot,
) -> Response<SimBody> {
    let tokens = &shared.config.reply;
    if let (false, Some(StreamCut::Error(_, failure))) = (stream, &shape.cut) {
        // A whole-body request cannot carry an in-band error: it gets the status.
        return error_response(shared, ex, failure, Some(slot));
    }
    let counter = if shape.cut.is_some() {
        &shared.counters.broken_streams
    } else {
        &shared.counters.answered
    };
    Counters::bump(counter);
    let mut headers = HeaderMap::new();
    let body = if stream {
        let shown = match &shape.cut {
            Some(StreamCut::Error(n, _) | StreamCut::Drop(n) | StreamCut::Stall(n)) => {
                (*n).min(tokens.len())
            }
            _ => tokens.len(),
        };
        let mut writer = EventWriter::new(ex, shown);
        // An error before any content is the stream's very first event.
        if !matches!(shape.cut, Some(StreamCut::Error(0, _))) {
            writer.preamble();
        }
        for token in &tokens[..shown] {
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
            Some(StreamCut::Stall(_)) => Tail::Stall {
                keepalive: ex
                    .api
                    .keepalive()
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
        SimBody::events(
            writer.into_events(),
            token_delay,
            delay_seed,
            tail,
            None,
            conn,
            Some(slot),
        )
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
                let events = crate::api::Events {
                    data: whole.slice(..whole.len() / 2),
                    breaks: Vec::new(),
                };
                let tail = match cut {
                    StreamCut::Stall(_) => Tail::Stall { keepalive: None },
                    _ => Tail::Abort,
                };
                SimBody::events(
                    events,
                    Delay::ZERO,
                    delay_seed,
                    tail,
                    Some(len),
                    conn,
                    Some(slot),
                )
            }
        }
    };
    success_headers(&mut headers, ex, took);
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}
