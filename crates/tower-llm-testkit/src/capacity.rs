//! The capacity model: at most `C` requests in service at once; the rest
//! wait in a bounded queue or are shed with an overload error.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::delay::Delay;

/// How much a simulated provider can serve at once.
///
/// A request holds one of `concurrency` slots from the moment it is admitted
/// until its response body has been sent (so a stream occupies its slot for
/// its whole length), and spends `service_time` in it before its response
/// headers go out. When every slot is taken, the request waits in a queue of
/// at most `max_queued` (latency grows with load, as it does at a real
/// provider), for at most `max_wait`; beyond either it is shed with the
/// API's overload reply (529 on Anthropic, 503 elsewhere).
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

/// Counts of the gate, for [`Stats`](crate::Stats).
#[derive(Debug, Default)]
struct GateState {
    capacity: Option<Capacity>,
    in_service: usize,
    queued: usize,
    peak_in_service: usize,
}

/// Admission to service: shared by every connection of a simulator.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    notify: Notify,
}

/// A slot in service; frees it when dropped.
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
        // The state is counters only: a panic elsewhere cannot leave it torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_capacity(&self, capacity: Option<Capacity>) {
        self.lock().capacity = capacity;
        // More (or unlimited) room: let every waiter look again.
        self.notify.notify_waiters();
    }

    pub(crate) fn capacity(&self) -> Option<Capacity> {
        self.lock().capacity
    }

    pub(crate) fn in_service(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.in_service, state.queued, state.peak_in_service)
    }

    /// Admits a request, waiting in the queue if the capacity allows it.
    /// Returns the slot and the service time to spend in it.
    pub(crate) async fn admit(self: &Arc<Self>) -> Result<(Slot, Delay), Shed> {
        let mut queued: Option<Queued<'_>> = None;
        let mut deadline: Option<Instant> = None;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a slot freed in between wakes us.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let service_time = match state.capacity {
                    None => Some(Delay::ZERO),
                    Some(capacity) if state.in_service < capacity.concurrency => {
                        Some(capacity.service_time)
                    }
                    Some(_) => None,
                };
                if let Some(service_time) = service_time {
                    if let Some(place) = queued.take() {
                        // Leaving the queue for a slot, under the same lock.
                        std::mem::forget(place);
                        state.queued -= 1;
                    }
                    state.in_service += 1;
                    state.peak_in_service = state.peak_in_service.max(state.in_service);
                    return Ok((
                        Slot {
                            gate: Arc::clone(self),
                        },
                        service_time,
                    ));
                }
                if queued.is_none() {
                    let max_queued = state.capacity.map_or(0, |c| c.max_queued);
                    if state.queued >= max_queued {
                        return Err(Shed::QueueFull);
                    }
                    state.queued += 1;
                    deadline = state
                        .capacity
                        .and_then(|c| c.max_wait)
                        .map(|wait| Instant::now() + wait);
                    drop(state);
                    queued = Some(Queued { gate: self });
                }
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(Shed::WaitedTooLong);
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// A place in the queue; leaves it when dropped (a cancelled request).
struct Queued<'a> {
    gate: &'a Gate,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.gate.lock().queued -= 1;
        // This waiter may have been the one a freed slot woke: pass it on.
        self.gate.notify.notify_one();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.lock().in_service -= 1;
        self.gate.notify.notify_one();
    }
}
