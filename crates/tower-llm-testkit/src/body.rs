//! The response body: whole, or a stream of events that may be slow, cut
//! short, stalled or dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::api::Events;
use crate::capacity::Slot;
use crate::delay::{Delay, key};

/// What a connection's response asks of its socket.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Close with RST (SO_LINGER 0) instead of FIN.
    pub(crate) reset: AtomicBool,
    /// Fail the next flush: the bytes written so far go out, then the
    /// connection closes without finishing the response.
    pub(crate) abort_after_flush: AtomicBool,
}

/// How a stream of events ends.
#[derive(Debug)]
pub(crate) enum Tail {
    /// Cleanly, after its last event.
    Finish,
    /// The connection closes after the last event reached the socket.
    Abort,
    /// Nothing more; `keepalive` bytes every interval, if any.
    Stall {
        keepalive: Option<(&'static [u8], Duration)>,
    },
}

/// The body of every simulator response.
#[derive(Debug)]
pub(crate) struct SimBody {
    inner: Inner,
    /// The capacity slot, released when the body is done or dropped.
    slot: Option<Slot>,
}

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Events(Box<EventBody>),
}

/// How fast a stream's events go out.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pacing {
    /// Before each content event after the first.
    pub(crate) token_delay: Delay,
    /// Draws of `token_delay` are keyed by this and the event's number.
    pub(crate) delay_seed: u64,
    /// Between the preamble and the first content event.
    pub(crate) first_token: Duration,
}

#[derive(Debug)]
struct EventBody {
    events: Events,
    /// The next entry of `events.breaks` to stop at.
    next_break: usize,
    /// Bytes of `events.data` sent so far.
    pos: usize,
    token_delay: Delay,
    delay_seed: u64,
    /// The first-token wait, until it is spent.
    first_token: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    tail: Tail,
    /// A length to announce (a whole body that will be cut short).
    announced_len: Option<u64>,
    conn: Arc<ConnState>,
    done: bool,
}

/// The error a body yields when it is told to fail (never seen by clients:
/// the connection just closes).
#[derive(Debug)]
pub(crate) struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response cut by the fault plan")
    }
}

impl std::error::Error for Cut {}

impl SimBody {
    pub(crate) fn full(bytes: Bytes, slot: Option<Slot>) -> Self {
        SimBody {
            inner: Inner::Full(Some(bytes)),
            slot,
        }
    }

    /// `events` (the first content `pacing.first_token` after the preamble,
    /// later ones `pacing.token_delay` apart), then `tail`.
    pub(crate) fn events(
        events: Events,
        pacing: Pacing,
        tail: Tail,
        announced_len: Option<u64>,
        conn: Arc<ConnState>,
        slot: Option<Slot>,
    ) -> Self {
        SimBody {
            inner: Inner::Events(Box::new(EventBody {
                events,
                next_break: 0,
                pos: 0,
                token_delay: pacing.token_delay,
                delay_seed: pacing.delay_seed,
                first_token: Some(pacing.first_token).filter(|d| !d.is_zero()),
                sleep: None,
                tail,
                announced_len,
                conn,
                done: false,
            })),
            slot,
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Events(body) => body.poll_next(cx),
        };
        if let Poll::Ready(None) = polled {
            this.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Events(body) => body.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Events(body) => match body.announced_len {
                Some(len) => SizeHint::with_exact(len),
                None => SizeHint::default(),
            },
        }
    }
}

impl EventBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
                if self.pos >= self.events.data.len() {
                    // A keep-alive is due.
                    if let Tail::Stall {
                        keepalive: Some((bytes, interval)),
                    } = self.tail
                    {
                        self.sleep = Some(Box::pin(tokio::time::sleep(interval)));
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(bytes)))));
                    }
                }
            }
            // The preamble is out (or there is none): the first content waits.
            if self.pos == self.events.first_content
                && let Some(wait) = self.first_token.take()
            {
                self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                continue;
            }
            let len = self.events.data.len();
            if self.pos < len {
                // Never past the first-token pause while it is pending.
                let stop = match self.first_token {
                    Some(_) if self.pos < self.events.first_content => self.events.first_content,
                    _ => len,
                };
                // Without a delay, everything up to `stop` goes in one frame;
                // with one, the frame ends where the next pause is.
                let next_break = self.events.breaks.get(self.next_break).copied();
                let (end, at_break) = match next_break {
                    Some(at) if !self.token_delay.is_zero() && at <= stop => (at, true),
                    _ => (stop, false),
                };
                let chunk = self.events.data.slice(self.pos..end);
                self.pos = end;
                if at_break {
                    self.next_break += 1;
                    let delay = self.token_delay.sample(key(
                        self.delay_seed,
                        self.next_break as u64,
                        0x0074_6F6B,
                    ));
                    self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
                } else if self.pos >= len {
                    self.arm_tail();
                    // A clean end goes out with the last chunk.
                    self.done = matches!(self.tail, Tail::Finish);
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            // Nothing (more) to send: how the body ends.
            self.arm_tail();
            match self.tail {
                Tail::Finish => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                // The socket fails its next flush; until then, nothing more.
                Tail::Abort => return Poll::Pending,
                Tail::Stall { keepalive: Some(_) } if self.sleep.is_some() => continue,
                Tail::Stall { .. } => return Poll::Pending,
            }
        }
    }

    /// Called once the last event is handed out: prepares how the body ends.
    fn arm_tail(&mut self) {
        match self.tail {
            Tail::Finish => {}
            Tail::Abort => self.conn.abort_after_flush.store(true, Ordering::Release),
            Tail::Stall {
                keepalive: Some((_, interval)),
            } => {
                if self.sleep.is_none() {
                    self.sleep = Some(Box::pin(tokio::time::sleep(interval)));
                }
            }
            Tail::Stall { keepalive: None } => {}
        }
    }
}
