//! A lane: one thread's queue of admissions and settles for one limiter, and whether a
//! flight (the task sending them to Redis) is running for it. Requests that arrive while a
//! flight's call is out wait in the queue and go together in the next call.

use super::super::check::Denial;
use super::encode::Part;
use crate::StoreError;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

/// What an admission gets back: the script's decision, or why the call failed.
pub(super) type AdmitReply = Result<Result<(), Denial>, StoreError>;

/// What an awaited settle gets back.
pub(super) type SettleReply = Result<(), StoreError>;

/// A queued admission.
pub(super) struct Admit {
    pub part: Part,
    pub reply: oneshot::Sender<AdmitReply>,
}

/// A queued settle; `reply` is `None` when nobody waits for it.
pub(super) struct Settle {
    pub part: Part,
    pub reply: Option<oneshot::Sender<SettleReply>>,
}

/// What one call sends: the settles first, then the admissions.
#[derive(Default)]
pub(super) struct Batch {
    pub settles: Vec<Settle>,
    pub admits: Vec<Admit>,
}

#[derive(Default)]
struct Queue {
    admits: VecDeque<Admit>,
    settles: VecDeque<Settle>,
    /// A flight is running (or a caller is about to start one).
    busy: bool,
}

/// One thread's queue for one limiter.
#[derive(Default)]
pub(super) struct Lane {
    queue: Mutex<Queue>,
    /// Wakes a flight that holds settles back for an admission to join them.
    admitted: Notify,
}

/// What [`Lane::claim`] found.
pub(super) enum Claim {
    /// The lane is now busy with this batch: send it, then [`Lane::next`] until `None`.
    Batch(Batch),
    /// Nothing queued.
    Empty,
    /// A flight is running.
    Busy,
}

/// Takes up to `max` of each kind from the queue.
fn take(q: &mut Queue, max: usize) -> Batch {
    let settles = q.settles.len().min(max);
    let admits = q.admits.len().min(max);
    Batch {
        settles: q.settles.drain(..settles).collect(),
        admits: q.admits.drain(..admits).collect(),
    }
}

// === impl Lane ===

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; if something did, the queue is still whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an admission; `true` when the caller must start a flight.
    pub fn push_admit(&self, admit: Admit) -> bool {
        let start = {
            let mut q = self.lock();
            q.admits.push_back(admit);
            !std::mem::replace(&mut q.busy, true)
        };
        if !start {
            self.admitted.notify_one();
        }
        start
    }

    /// Whether only settles are queued (nothing waits for them).
    pub fn settles_only(&self) -> bool {
        let q = self.lock();
        q.admits.is_empty() && !q.settles.is_empty()
    }

    /// Waits until an admission is queued, for up to `limit`.
    pub async fn admission(&self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.admitted.notified()).await;
    }

    /// Queues a settle unless `max` are queued already (then it comes back); `Ok(true)`
    /// when the caller must start a flight.
    pub fn push_settle(&self, settle: Settle, max: usize) -> Result<bool, Settle> {
        let mut q = self.lock();
        if q.settles.len() >= max {
            return Err(settle);
        }
        q.settles.push_back(settle);
        Ok(!std::mem::replace(&mut q.busy, true))
    }

    /// The flight's next batch (up to `max` of each kind); `None`, and the lane idle, when
    /// nothing is queued.
    pub fn next(&self, max: usize) -> Option<Batch> {
        let mut q = self.lock();
        if q.admits.is_empty() && q.settles.is_empty() {
            q.busy = false;
            return None;
        }
        Some(take(&mut q, max))
    }

    /// A batch for a caller that is not a flight (a flush), if the lane is idle.
    pub fn claim(&self, max: usize) -> Claim {
        let mut q = self.lock();
        if q.busy {
            Claim::Busy
        } else if q.admits.is_empty() && q.settles.is_empty() {
            Claim::Empty
        } else {
            q.busy = true;
            Claim::Batch(take(&mut q, max))
        }
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        let q = self.lock();
        q.admits.is_empty() && q.settles.is_empty()
    }

    /// Marks the lane idle (its flight ended early, or could not start).
    pub fn set_idle(&self) {
        self.lock().busy = false;
    }
}

/// Held by a flight: marks its lane idle if the flight is dropped before it ends (its
/// runtime shut down), so a later push or flush starts another.
pub(super) struct Flying {
    lane: Arc<Lane>,
    landed: bool,
}

impl Flying {
    /// A flight on `lane` (already marked busy).
    pub fn new(lane: Arc<Lane>) -> Self {
        Self {
            lane,
            landed: false,
        }
    }

    /// The lane.
    pub fn lane(&self) -> &Lane {
        &self.lane
    }

    /// The flight ended normally ([`Lane::next`] marked the lane idle).
    pub fn land(mut self) {
        self.landed = true;
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        if !self.landed {
            self.lane.set_idle();
        }
    }
}
