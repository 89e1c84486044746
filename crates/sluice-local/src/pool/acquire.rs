//! [`Pool::acquire`]: a lease on a model, loading it first (once, however many ask) and waiting
//! in line when the memory it needs is held by models in use.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::clock::Clock;
use super::error::{PoolError, PoolErrorKind};
use super::handle::Pool;
use super::keep_alive::KeepAlive;
use super::lease::{Lease, Pending, Release};
use super::loader::Loader;
use super::spec::ModelSpec;
use super::state::{Entry, Inner, Outcome, Phase, State};

impl<L: Loader, C: Clock> Pool<L, C> {
    /// A lease on the model, loading it first if needed (see the module docs). `keep_alive`
    /// overrides the model's for the idle period after this lease.
    ///
    /// When the memory it needs is held by models in use, it waits (up to
    /// [`PoolConfig::busy_wait`](super::PoolConfig::busy_wait)) for a lease to end or a model
    /// to unload and tries again, so a workload that cycles through more models than fit queues
    /// rather than fails.
    pub async fn acquire(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease<L::Model>, PoolError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.busy_wait;
        let mut ticket = Ticket {
            inner: &*self.inner,
            id: None,
        };
        loop {
            // Registered before trying, so a release between the failure and the wait counts.
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let result = if ticket.behind_others(name) {
                None
            } else {
                Some(self.acquire_once(name, keep_alive).await)
            };
            let last = match result {
                Some(Err(e)) if matches!(e.kind(), PoolErrorKind::BudgetBusy { .. }) => Some(e),
                Some(other) => return other,
                None => None,
            };
            ticket.queue();
            if tokio::time::Instant::now() >= deadline
                || tokio::time::timeout_at(deadline, freed).await.is_err()
            {
                return match last {
                    Some(e) => Err(e),
                    // Timed out behind others: one last try of its own.
                    None => self.acquire_once(name, keep_alive).await,
                };
            }
        }
    }

    /// One try: the model if it is loaded, else the outcome of its load (started here unless
    /// one is under way).
    async fn acquire_once(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease<L::Model>, PoolError> {
        let (mut outcome, pending) = match self.join(name, keep_alive)? {
            Joined::Loaded(lease) => return Ok(lease),
            Joined::Loading(outcome, pending) => (outcome, pending),
        };
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        match result {
            Some(Ok(model)) => Ok(pending.into_lease(model)),
            Some(Err(error)) => Err(error),
            None => Err(PoolError::load_failed(
                name,
                crate::ErrorKind::Internal("the load task ended without a result".into()).into(),
            )),
        }
    }

    /// Under the lock: counts the acquire in flight on the model's entry (so the model cannot
    /// be evicted before it is used), starting its load when it has none.
    fn join(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Joined<L::Model>, PoolError> {
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        let now = self.inner.clock.now();
        let record = state
            .models
            .get(name)
            .ok_or_else(|| PoolErrorKind::NotFound(name.to_owned()))?;
        let spec = Arc::clone(&record.spec);
        let pending = |id| Pending {
            pool: Arc::clone(&self.inner) as Arc<dyn Release<L::Model>>,
            name: name.to_owned(),
            id,
            keep_alive,
            armed: true,
        };
        Ok(match state.entries.get_mut(name) {
            Some(entry) => {
                entry.in_flight += 1;
                entry.last_used = now;
                match &entry.phase {
                    Phase::Loaded(model) => {
                        Joined::Loaded(pending(entry.id).into_lease(Arc::clone(model)))
                    }
                    Phase::Loading(tx) => Joined::Loading(tx.subscribe(), pending(entry.id)),
                }
            }
            None => {
                let (id, outcome) = self.start_load(state, name, spec, keep_alive, now);
                Joined::Loading(outcome, pending(id))
            }
        })
    }

    /// Adds a loading entry for `name` (one acquire in flight) and starts its load on tokio's
    /// blocking pool; returns the entry's id and the receiver of the load's outcome.
    fn start_load(
        &self,
        state: &mut State<L::Model>,
        name: &str,
        spec: Arc<ModelSpec>,
        keep_alive: Option<KeepAlive>,
        now: Instant,
    ) -> (u64, watch::Receiver<Option<Outcome<L::Model>>>) {
        let id = state.next_id;
        state.next_id += 1;
        let (tx, rx) = watch::channel(None);
        state.entries.insert(
            name.to_owned(),
            Entry {
                id,
                phase: Phase::Loading(tx),
                estimated: None,
                measured: None,
                engine: None,
                context_length: None,
                reserved: 0,
                in_flight: 1,
                last_used: now,
                keep_alive: keep_alive.unwrap_or_else(|| self.inner.keep_alive(&spec)),
            },
        );
        let inner = Arc::clone(&self.inner);
        let job_name = name.to_owned();
        // Detached: the load finishes (and releases or commits its reservation) even if every
        // waiter goes away.
        drop(tokio::task::spawn_blocking(move || {
            inner.run_load(&job_name, id, &spec)
        }));
        (id, rx)
    }
}

/// What an acquire found under the lock: the model loaded, or a load to wait for.
enum Joined<M: Send + Sync + 'static> {
    Loaded(Lease<M>),
    Loading(watch::Receiver<Option<Outcome<M>>>, Pending<M>),
}

/// An acquire's place in [`State::waiting`]; leaving (done, failed, timed out or cancelled)
/// takes it out and wakes the others, so the next in line may load.
struct Ticket<'a, L: Loader, C: Clock> {
    inner: &'a Inner<L, C>,
    id: Option<u64>,
}

impl<L: Loader, C: Clock> Ticket<'_, L, C> {
    /// Whether an acquire of `name` must let the acquires ahead of it go first: it needs a load
    /// and another acquire is first in line. Such an acquire takes a place in line.
    fn behind_others(&mut self, name: &str) -> bool {
        let inner = self.inner;
        let mut state = inner.lock();
        let needs_load = !state.entries.contains_key(name);
        let ahead = match self.id {
            Some(id) => state.waiting.front().is_some_and(|&first| first != id),
            None => !state.waiting.is_empty(),
        };
        if needs_load && ahead && self.id.is_none() {
            self.id = Some(Self::take(&mut state));
        }
        needs_load && ahead
    }

    /// Takes a place in line, unless it has one.
    fn queue(&mut self) {
        if self.id.is_none() {
            let inner = self.inner;
            let mut state = inner.lock();
            self.id = Some(Self::take(&mut state));
        }
    }

    fn take(state: &mut State<L::Model>) -> u64 {
        let id = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(id);
        id
    }
}

impl<L: Loader, C: Clock> Drop for Ticket<'_, L, C> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.lock().waiting.retain(|&t| t != id);
            self.inner.freed.notify_waiters();
        }
    }
}
