//! [`PollAgain`]: a connection that wakes itself while it is polled is
//! polled again at once, instead of through the scheduler.
//!
//! A hyper connection wakes its own task on every request with a body: the
//! handler's first read of the body tells the connection it wants data
//! (hyper's `want` signal), and that wakes the connection's task while it
//! is still being polled. tokio's multi-threaded scheduler treats a task
//! woken during its own poll as a task yielding: it goes to the back of the
//! run queue and an idle worker is woken (a futex call, a thread out of
//! its sleep) to steal it. On a gateway at low concurrency that is one
//! cross-thread wake-up per request and the connection moving between
//! threads, with nothing gained: the same poll goes on to read the body.
//! A bare proxy does not pay it, since its body is read by the client's
//! connection task, a task of its own.
//!
//! [`PollAgain`] gives the connection a waker of its own that notes a wake
//! arriving while the connection is being polled, rather than passing it
//! on, and polls the connection again when its poll ends with such a note
//! — at most [`REPOLLS`] times in a row, after which it yields as the
//! connection asked, so that a connection that yields on purpose (hyper's
//! read loop after sixteen messages, tokio's cooperative budget) still
//! lets others run. A wake arriving at any other time goes to the task's
//! waker as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;
use pin_project_lite::pin_project;

/// How many times in a row a connection that woke itself is polled again
/// before it is left to the scheduler.
const REPOLLS: usize = 4;

/// The connection is being polled: a wake is noted, not passed on.
const POLLING: u8 = 0b01;
/// A wake arrived while the connection was being polled.
const WOKE: u8 = 0b10;

/// What the connection's own waker and [`PollAgain`] share.
#[derive(Debug, Default)]
struct Wakes {
    state: AtomicU8,
    /// The task's waker, as of the last poll.
    task: AtomicWaker,
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // One atomic step: either the poll in progress sees the note when
        // it ends, or the poll has ended and the task is woken.
        if self.state.fetch_or(WOKE, Ordering::AcqRel) & POLLING == 0 {
            self.task.wake();
        }
    }
}

pin_project! {
    /// Polls `inner` again at once when it woke itself during its poll (see
    /// the module's documentation).
    #[derive(Debug)]
    pub(crate) struct PollAgain<F> {
        #[pin]
        inner: F,
        wakes: Arc<Wakes>,
        waker: Waker,
    }
}

impl<F> PollAgain<F> {
    pub(crate) fn new(inner: F) -> Self {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        PollAgain {
            inner,
            wakes,
            waker,
        }
    }

    /// The connection itself (to ask it to shut down gracefully).
    pub(crate) fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().inner
    }
}

impl<F: Future> Future for PollAgain<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        this.wakes.task.register(cx.waker());
        let mut own = Context::from_waker(this.waker);
        for _ in 0..REPOLLS {
            this.wakes.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut own);
            let state = this.wakes.state.swap(0, Ordering::AcqRel);
            if polled.is_ready() || state & WOKE == 0 {
                return polled;
            }
            // Out of tokio's budget for this poll: the connection would
            // only be told to wait again.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        // Still waking itself: let the other tasks run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wakes it receives.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself during its first `times` polls, then is ready.
    struct WakesItself {
        times: usize,
        polls: usize,
    }

    impl Future for WakesItself {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.times {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn poll_once<F: Future + Unpin>(future: &mut F, task: &Arc<Counter>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::clone(task));
        Pin::new(future).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_future_that_wakes_itself_once_is_polled_again_without_waking_the_task() {
        let task = Arc::new(Counter::default());
        let mut future = PollAgain::new(WakesItself { times: 1, polls: 0 });
        assert_eq!(poll_once(&mut future, &task), Poll::Ready(2));
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_to_the_scheduler_after_a_few_polls() {
        let task = Arc::new(Counter::default());
        let mut future = PollAgain::new(WakesItself {
            times: 100,
            polls: 0,
        });
        assert!(poll_once(&mut future, &task).is_pending());
        assert_eq!(future.inner.polls, REPOLLS);
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "woken once, to yield");
    }

    /// Pending until woken from outside, then ready.
    struct WaitsForWake {
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
        woken: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Future for WaitsForWake {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.woken.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if let Ok(mut slot) = self.waker.lock() {
                *slot = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let task = Arc::new(Counter::default());
        let slot = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut future = PollAgain::new(WaitsForWake {
            waker: Arc::clone(&slot),
            woken: Arc::clone(&woken),
        });
        assert!(poll_once(&mut future, &task).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        woken.store(true, Ordering::SeqCst);
        let waker = slot.lock().ok().and_then(|mut s| s.take());
        assert!(waker.is_some(), "the future kept a waker");
        if let Some(waker) = waker {
            // From another thread, as the I/O driver would.
            std::thread::spawn(move || waker.wake())
                .join()
                .expect("the waking thread ends");
        }
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut future, &task), Poll::Ready(()));
    }
}
