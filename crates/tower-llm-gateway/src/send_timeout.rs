//! A connection to a caller whose writes may not stall forever: a caller
//! that stops reading (its window and our send buffer full) is disconnected
//! once a write has made no progress for the send timeout, as nginx's
//! `send_timeout` does. Without it such a caller would hold its stream's
//! concurrency permit, and its upstream stream, for as long as it likes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::LONGEST_TIMEOUT;

pin_project_lite::pin_project! {
    /// `io` whose writes fail with `TimedOut` after `timeout` without
    /// progress. Reads pass through untouched.
    #[derive(Debug)]
    pub struct SendTimeout<T> {
        #[pin]
        io: T,
        // Armed when a write first returns `Pending`, disarmed by any
        // progress: the happy path never touches the timer. Boxed (once
        // per connection): hyper wants its IO `Unpin`.
        stalled: Pin<Box<Sleep>>,
        armed: bool,
        timeout: Duration,
    }
}

impl<T> SendTimeout<T> {
    /// Wraps `io`. Must be called within a Tokio runtime.
    pub fn new(io: T, timeout: Duration) -> Self {
        let timeout = timeout.min(LONGEST_TIMEOUT);
        SendTimeout {
            io,
            stalled: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            timeout,
        }
    }
}

/// Passes a write's `poll` on, timing a stall: `Pending` arms the timer
/// (once), anything else disarms it; a fired timer turns `Pending` into `TimedOut`.
fn watch<R>(
    poll: Poll<io::Result<R>>,
    mut stalled: Pin<&mut Sleep>,
    armed: &mut bool,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<R>> {
    if poll.is_ready() {
        *armed = false;
        return poll;
    }
    if !*armed {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Poll::Pending;
        };
        stalled.as_mut().reset(deadline);
        *armed = true;
    }
    if stalled.poll(cx).is_pending() {
        return Poll::Pending;
    }
    *armed = false;
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the caller took no bytes for {} ms (send_timeout_ms)",
            timeout.as_millis()
        ),
    )))
}

impl<T: AsyncWrite> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write(cx, buf);
        watch(poll, this.stalled.as_mut(), this.armed, *this.timeout, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write_vectored(cx, bufs);
        watch(poll, this.stalled.as_mut(), this.armed, *this.timeout, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    // Flushing and shutting down pass through: hyper flushes only after
    // its writes went out, and a TCP flush or shutdown never waits.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl<T: AsyncRead> AsyncRead for SendTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}
