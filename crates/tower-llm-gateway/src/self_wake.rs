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
//! on, and polls the connection once more when its poll ends with such a
//! note. A second note is passed on to the task as it was: the connection
//! yields. A yield on purpose looks the same as the `want` wake-up (hyper's
//! dispatcher wakes itself and returns after sixteen messages in one poll,
//! so that one pipelining client cannot hold a worker), so the one poll
//! more lets such a connection handle up to 32 messages per turn instead
//! of 16, and no more. A wake arriving at any other time, or deferred by
//! tokio until the task's poll is over (`yield_now`, an exhausted
//! cooperative budget), goes to the task's waker as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;
use pin_project_lite::pin_project;

/// How many times in all the connection is polled in one poll of its
/// task: one more when it woke itself, never two more (see the module's
/// documentation: a yield of hyper's cannot be told from its `want`).
const POLLS: usize = 2;

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
        for _ in 0..POLLS {
            this.wakes.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut own);
            let state = this.wakes.state.swap(0, Ordering::AcqRel);
            if polled.is_ready() || state & WOKE == 0 {
                return polled;
            }
            // Out of tokio's budget for this poll (the wake noted came from
            // elsewhere; tokio defers its own): another poll would only be
            // told to wait.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        // Woke itself again: it yields, and the other tasks run first.
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
    fn a_future_that_wakes_itself_twice_yields_to_the_scheduler() {
        let task = Arc::new(Counter::default());
        let mut future = PollAgain::new(WakesItself {
            times: 100,
            polls: 0,
        });
        assert!(poll_once(&mut future, &task).is_pending());
        assert_eq!(future.inner.polls, POLLS);
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

    /// Reads `n` responses (each ends with the body `ok`) from `tcp`.
    async fn read_answers(tcp: &mut tokio::net::TcpStream, n: usize) -> usize {
        use tokio::io::AsyncReadExt;
        let (mut seen, mut buf) = (Vec::new(), vec![0_u8; 64 * 1024]);
        let count = |seen: &[u8]| seen.windows(8).filter(|w| w == b"HTTP/1.1").count();
        while count(&seen) < n || !seen.ends_with(b"ok") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(read) => seen.extend_from_slice(&buf[..read]),
            }
        }
        count(&seen)
    }

    /// A request with a body, its head and its body as two writes.
    const HEAD: &[u8] =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n";
    const BODY: &[u8] = b"hello";

    /// Through the gateway's own `serve`, on two workers: a handler that
    /// reads the body (hyper's `want` wake-up, the case this is for) and
    /// then yields, bodies arriving after their heads, several
    /// connections at once, then a graceful shutdown. A lost wake-up would
    /// leave a connection waiting: each answer has ten seconds to come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keep_alive_requests_whose_bodies_come_late_are_all_answered_then_shut_down() {
        use std::time::Duration;
        use tokio::io::AsyncWriteExt;
        use tokio::time::timeout;

        let router = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|body: bytes::Bytes| async move {
                tokio::task::yield_now().await;
                if body.as_ref() == BODY { "ok" } else { "no" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(crate::serve(
            listener,
            router,
            &crate::GatewayOptions::default(),
            async move {
                let _ = stopped.await;
            },
            crate::Closing::new(),
        ));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    let mut tcp = tokio::net::TcpStream::connect(addr)
                        .await
                        .expect("connects");
                    let _ = tcp.set_nodelay(true);
                    for i in 0..300 {
                        tcp.write_all(HEAD).await.expect("writes the head");
                        if i % 2 == 0 {
                            tokio::task::yield_now().await;
                        }
                        tcp.write_all(BODY).await.expect("writes the body");
                        let answered =
                            timeout(Duration::from_secs(10), read_answers(&mut tcp, 1)).await;
                        assert_eq!(answered, Ok(1), "request {i} answered");
                    }
                    tcp
                })
            })
            .collect();
        let mut open = Vec::new();
        for client in clients {
            open.push(client.await.expect("a client ends"));
        }
        let _ = stop.send(());
        for mut tcp in open {
            let closed = timeout(Duration::from_secs(10), read_answers(&mut tcp, 1)).await;
            assert_eq!(closed, Ok(0), "an idle connection is closed on shutdown");
        }
        let served = timeout(Duration::from_secs(10), serving).await;
        assert!(matches!(served, Ok(Ok(Ok(())))), "serve ends: {served:?}");
    }

    /// Counts the requests a connection handles in each poll of its task.
    struct Turns<F> {
        inner: Pin<Box<F>>,
        handled: Arc<AtomicUsize>,
        most: usize,
    }

    impl<F: Future> Future for Turns<F> {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let before = self.handled.load(Ordering::SeqCst);
            let polled = self.inner.as_mut().poll(cx);
            let turn = self.handled.load(Ordering::SeqCst) - before;
            self.most = self.most.max(turn);
            polled.map(|_| self.most)
        }
    }

    /// hyper's dispatcher yields after sixteen messages in one poll so that
    /// a pipelining client cannot hold a worker; its yield is a wake during
    /// the poll like any other, so `PollAgain` polls once more, and no more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipelining_client_gets_at_most_two_of_hypers_turns_per_poll() {
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address");
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&handled);
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accepts");
            let service =
                hyper::service::service_fn(move |_: http::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    )))
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            Turns {
                inner: Box::pin(PollAgain::new(connection)),
                handled,
                most: 0,
            }
            .await
        });
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        // All written before any answer is read (both fit in the sockets'
        // buffers): the connection finds many requests at once.
        let requests = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(500);
        tcp.write_all(&requests).await.expect("writes");
        assert_eq!(read_answers(&mut tcp, 500).await, 500);
        drop(tcp);
        let most = server.await.expect("the server ends");
        assert!(most > 16, "hyper's own turn is sixteen: {most}");
        assert!(most <= 32, "at most two turns per poll: {most}");
    }
}
