//! The capacity model: at most `C` requests in service at once; the rest
//! wait in a bounded queue or are shed with an overload error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::delay::Delay;

/// How much a simulated provider can serve at once.
///
/// A request holds one of `concurrency` slots from the moment it is admitted
/// until its response body has been sent (so a stream occupies its slot for
/// its whole length), and spends `service_time` in it — plus any latency the
/// simulator or its fault adds: a slow provider is slow while busy — before
/// its response headers go out. When every slot is taken, the request waits,
/// first come first served, in a queue of at most `max_queued` (latency
/// grows with load, as it does at a real provider), for at most `max_wait`;
/// beyond either it is shed with the API's overload reply (529 on
/// Anthropic, 503 elsewhere) without reaching the fault plan.
///
/// This is what makes overload, recovery and metastable failure testable:
/// with service time `S` and concurrency `C`, the provider serves `C / S`
/// requests per second, and retries that exceed it keep the queue full.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_testkit::Capacity;
///
/// // 8 at once, 100 ms each: 80 requests/s; up to 32 wait for at most 1 s.
/// let capacity = Capacity::new(8)
///     .service_time(Duration::from_millis(100))
///     .queue(32, Some(Duration::from_secs(1)));
/// assert_eq!(capacity.concurrency(), 8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    concurrency: usize,
    service_time: Delay,
    max_queued: usize,
    max_wait: Option<Duration>,
}

impl Capacity {
    /// At most `concurrency` requests in service at once, no service time,
    /// and no queue: requests beyond it are shed.
    pub fn new(concurrency: usize) -> Self {
        Capacity {
            concurrency,
            service_time: Delay::ZERO,
            max_queued: 0,
            max_wait: None,
        }
    }

    /// The time a request spends in its slot before its response headers.
    pub fn service_time(mut self, service_time: impl Into<Delay>) -> Self {
        self.service_time = service_time.into();
        self
    }

    /// Requests that find every slot taken wait, up to `max_queued` of them,
    /// each for at most `max_wait` (`None`: as long as it takes).
    pub fn queue(mut self, max_queued: usize, max_wait: Option<Duration>) -> Self {
        self.max_queued = max_queued;
        self.max_wait = max_wait;
        self
    }

    /// Requests that find every slot taken are shed at once (the default).
    pub fn shed(mut self) -> Self {
        self.max_queued = 0;
        self
    }

    /// Requests in service at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Time in service per request.
    pub fn service_time_delay(&self) -> Delay {
        self.service_time
    }
}

/// The gate's state: slots in use and the queue, in arrival order.
#[derive(Debug, Default)]
struct GateState {
    capacity: Option<Capacity>,
    in_service: usize,
    peak_in_service: usize,
    /// Waiting requests, oldest first; a freed slot goes to the front.
    waiters: VecDeque<(u64, oneshot::Sender<Delay>)>,
    next_waiter: u64,
}

impl GateState {
    fn has_room(&self) -> bool {
        self.capacity
            .is_none_or(|c| self.in_service < c.concurrency)
    }

    fn service_time(&self) -> Delay {
        self.capacity.map_or(Delay::ZERO, |c| c.service_time)
    }

    /// Takes a slot for a newcomer or a waiter.
    fn occupy(&mut self) {
        self.in_service += 1;
        self.peak_in_service = self.peak_in_service.max(self.in_service);
    }

    /// Hands free slots to waiters, oldest first, while there is room.
    fn hand_over(&mut self) {
        while self.has_room() {
            let Some((_, waiter)) = self.waiters.pop_front() else {
                return;
            };
            // A waiter that is gone cannot take it; the next one may.
            if waiter.send(self.service_time()).is_ok() {
                self.occupy();
            }
        }
    }
}

/// Admission to service, first come first served: shared by every
/// connection of a simulator.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
}

/// A slot in service; frees it (to the oldest waiter) when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    gate: Arc<Gate>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    QueueFull,
    WaitedTooLong,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state is counters and a queue: a panic elsewhere cannot leave it torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_capacity(&self, capacity: Option<Capacity>) {
        let mut state = self.lock();
        state.capacity = capacity;
        // More (or unlimited) room goes to the waiters at once.
        state.hand_over();
    }

    pub(crate) fn capacity(&self) -> Option<Capacity> {
        self.lock().capacity
    }

    /// (in service, queued, peak in service).
    pub(crate) fn in_service(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.in_service, state.waiters.len(), state.peak_in_service)
    }

    /// Admits a request, after the ones already waiting. Returns the slot and
    /// the service time to spend in it.
    pub(crate) async fn admit(self: &Arc<Self>) -> Result<(Slot, Delay), Shed> {
        let (mut waiting, max_wait) = {
            let mut state = self.lock();
            // Nobody jumps the queue: a newcomer takes a free slot only if
            // nobody is waiting for it.
            if state.waiters.is_empty() && state.has_room() {
                state.occupy();
                return Ok((
                    Slot {
                        gate: Arc::clone(self),
                    },
                    state.service_time(),
                ));
            }
            // (Without a capacity there is always room, so this is Some.)
            let (max_queued, max_wait) = state
                .capacity
                .map_or((0, None), |c| (c.max_queued, c.max_wait));
            if state.waiters.len() >= max_queued {
                return Err(Shed::QueueFull);
            }
            let (sender, receiver) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.waiters.push_back((id, sender));
            (
                Waiting {
                    gate: self,
                    id,
                    receiver: Some(receiver),
                },
                max_wait,
            )
        };
        let handed = match (
            waiting.receiver.as_mut(),
            max_wait.and_then(|wait| Instant::now().checked_add(wait)),
        ) {
            (Some(receiver), Some(deadline)) => {
                tokio::time::timeout_at(deadline, receiver).await.ok()
            }
            (Some(receiver), None) => Some(receiver.await),
            (None, _) => None,
        };
        match handed {
            Some(Ok(service_time)) => {
                waiting.receiver = None;
                Ok((
                    Slot {
                        gate: Arc::clone(self),
                    },
                    service_time,
                ))
            }
            // Timed out (or, impossibly, the sender vanished): leave the
            // queue, unless a slot was handed over in the meantime.
            _ => match waiting.leave() {
                Some(service_time) => Ok((
                    Slot {
                        gate: Arc::clone(self),
                    },
                    service_time,
                )),
                None => Err(Shed::WaitedTooLong),
            },
        }
    }
}

/// A place in the queue. Dropped early (the client hung up, or the wait
/// timed out), it leaves the queue, or passes on a slot handed to it.
struct Waiting<'a> {
    gate: &'a Gate,
    id: u64,
    /// `None` once a slot handed over has become a [`Slot`].
    receiver: Option<oneshot::Receiver<Delay>>,
}

impl Waiting<'_> {
    /// Leaves the queue; returns the service time if a slot was handed
    /// over before we could leave (the slot is then ours).
    fn leave(&mut self) -> Option<Delay> {
        let mut receiver = self.receiver.take()?;
        let mut state = self.gate.lock();
        if let Some(position) = state.waiters.iter().position(|(id, _)| *id == self.id) {
            state.waiters.remove(position);
            return None;
        }
        // Not in the queue: it was popped, and handing over happens under
        // the lock we hold, so the slot's service time is in the channel.
        receiver.try_recv().ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.leave().is_some() {
            // A slot was handed to a request that is gone: pass it on.
            let mut state = self.gate.lock();
            state.in_service -= 1;
            state.hand_over();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.in_service -= 1;
        state.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn poll<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// The slot of an admission that must be ready now.
    fn admitted<F: Future<Output = Result<(Slot, Delay), Shed>>>(
        future: std::pin::Pin<&mut F>,
    ) -> Slot {
        match poll(future) {
            Poll::Ready(Ok((slot, _))) => slot,
            other => panic!("not admitted: {:?}", other.map(|r| r.map(|_| ()))),
        }
    }

    fn gate(capacity: Capacity) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        gate.set_capacity(Some(capacity));
        gate
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_oldest_waiter_not_a_newcomer() {
        let gate = gate(Capacity::new(1).queue(5, None));
        let (first, _) = gate.admit().await.unwrap();
        let mut waiter = pin!(gate.admit());
        assert!(poll(waiter.as_mut()).is_pending());
        drop(first);
        // The slot is the waiter's even before it runs again.
        let mut newcomer = pin!(gate.admit());
        assert!(
            poll(newcomer.as_mut()).is_pending(),
            "the newcomer must queue"
        );
        let _slot = admitted(waiter.as_mut());
        assert_eq!(gate.in_service(), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_waiter_that_is_dropped_after_being_handed_a_slot_passes_it_on() {
        let gate = gate(Capacity::new(1).queue(5, None));
        let (first, _) = gate.admit().await.unwrap();
        let mut second = Box::pin(gate.admit());
        let mut third = pin!(gate.admit());
        assert!(poll(second.as_mut()).is_pending());
        assert!(poll(third.as_mut()).is_pending());
        drop(first); // handed to `second` ...
        drop(second); // ... which is gone: `third` gets it.
        let _slot = admitted(third.as_mut());
        assert_eq!(gate.in_service(), (1, 0, 1));
    }

    #[tokio::test]
    async fn a_full_queue_sheds_at_once() {
        let gate = gate(Capacity::new(1).queue(1, None));
        let (_first, _) = gate.admit().await.unwrap();
        let mut waiter = pin!(gate.admit());
        assert!(poll(waiter.as_mut()).is_pending());
        assert_eq!(gate.admit().await.err(), Some(Shed::QueueFull));
    }

    #[tokio::test]
    async fn raising_the_capacity_admits_waiters_in_order() {
        let gate = gate(Capacity::new(0).queue(5, None));
        let mut a = pin!(gate.admit());
        let mut b = pin!(gate.admit());
        let mut c = pin!(gate.admit());
        for f in [a.as_mut(), b.as_mut()] {
            assert!(poll(f).is_pending());
        }
        assert!(poll(c.as_mut()).is_pending());
        gate.set_capacity(Some(Capacity::new(2).queue(5, None)));
        let _a = admitted(a.as_mut());
        let _b = admitted(b.as_mut());
        assert!(poll(c.as_mut()).is_pending());
        assert_eq!(gate.in_service(), (2, 1, 2));
    }
}
