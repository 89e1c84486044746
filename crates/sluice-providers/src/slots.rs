//! A provider's bound on requests in flight (`max_connections`): the bound is shared out
//! evenly among the worker threads (each has its own upstream pool, so its own slots), and
//! a request past its worker's share waits, in arrival order, until an answer on that
//! worker ended (within the request's own deadline). In HTTP/1.1 a request in flight holds
//! one upstream connection, so the bound is one on the connections open to the provider (and
//! on their buffers): a burst of thousands of client connections shares a few hundred.
//! The gateway bounds the requests it runs at once the same way
//! (`server.max_requests_in_flight`).

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bound's slots: none (no bound), or one set per worker thread.
pub struct Slots(Option<Box<[Arc<Semaphore>]>>);

/// A request's slot, held until its answer ended (or was dropped).
pub type Slot = OwnedSemaphorePermit;

/// Every slot of the worker is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Slots {
    /// `max` slots shared out among `workers` workers (rounded up); `0`: no bound.
    pub fn new(max: usize, workers: usize) -> Self {
        let workers = workers.max(1);
        let per_worker = max.div_ceil(workers);
        Self((per_worker > 0).then(|| {
            (0..workers)
                .map(|_| Arc::new(Semaphore::new(per_worker)))
                .collect()
        }))
    }

    /// Waits for a slot of worker `worker` (at once when there is no bound: `None`).
    pub async fn take(&self, worker: usize) -> Option<Slot> {
        let worker = self.of(worker)?;
        // Never closed: the semaphore lives as long as the bound.
        Arc::clone(worker).acquire_owned().await.ok()
    }

    /// A slot of worker `worker` if one is free now (`Ok(None)` when there is no bound), or
    /// [`Full`] (whoever waits for one with [`Slots::take`] still comes after those already
    /// waiting).
    pub fn try_take(&self, worker: usize) -> Result<Option<Slot>, Full> {
        match self.of(worker) {
            None => Ok(None),
            Some(w) => Arc::clone(w)
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| Full),
        }
    }

    fn of(&self, worker: usize) -> Option<&Arc<Semaphore>> {
        let slots = self.0.as_ref()?;
        Some(&slots[worker % slots.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    #[tokio::test]
    async fn a_request_past_the_bound_waits_for_an_answer_to_end_in_arrival_order() {
        let slots = Slots::new(4, 2);
        let a = slots.take(0).await;
        let b = slots.take(0).await;
        assert!(a.is_some() && b.is_some());
        // Worker 1 has its own.
        assert!(slots.take(1).await.is_some());
        let mut third = Box::pin(slots.take(0));
        let mut fourth = Box::pin(slots.take(0));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert!(fourth.as_mut().poll(&mut cx).is_pending());
        drop(a);
        assert!(
            fourth.as_mut().poll(&mut cx).is_pending(),
            "first come first served"
        );
        assert!(third.as_mut().poll(&mut cx).is_ready());
        drop(b);
        assert!(fourth.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn the_bound_is_shared_out_rounded_up() {
        let slots = Slots::new(3, 2);
        let held = [slots.take(1).await, slots.take(1).await];
        assert!(held.iter().all(Option::is_some));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Box::pin(slots.take(1)).as_mut().poll(&mut cx).is_pending());
    }

    #[tokio::test]
    async fn a_free_slot_is_taken_at_once_and_a_full_worker_says_so() {
        let slots = Slots::new(2, 2);
        let held = slots.try_take(0).unwrap();
        assert!(held.is_some());
        assert_eq!(slots.try_take(0).err(), Some(Full));
        assert!(slots.try_take(1).unwrap().is_some(), "another worker's own");
        drop(held);
        assert!(slots.try_take(0).unwrap().is_some());
        assert!(Slots::new(0, 2).try_take(0).unwrap().is_none(), "no bound");
    }

    #[tokio::test]
    async fn no_bound_never_waits() {
        let slots = Slots::new(0, 2);
        for _ in 0..10_000 {
            assert!(slots.take(0).await.is_none());
        }
    }
}
