//! A worker's idle connections to one upstream: the most recently used is taken first,
//! one found closed is dropped and the next tried, at most `pool_max_idle_per_host` are
//! kept, and none longer than `pool_idle_timeout_ms` (a timer task on the worker's runtime
//! closes them, and ends while the pool is empty); after a burst the server shrinks it to the
//! few most recently used ([`Pool::shrink`]).

use super::conn::Conn;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// One worker's idle connections.
pub(super) struct Pool {
    inner: Mutex<Inner>,
    idle_timeout: Duration,
    max_idle: usize,
}

#[derive(Default)]
struct Inner {
    /// Oldest first.
    idle: Vec<Idle>,
    /// A timer task is closing expired connections.
    reaping: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    pub(super) fn new(idle_timeout: Duration, max_idle: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            idle_timeout,
            max_idle,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a list of connections, still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection still open (see [`Conn::is_alive`]).
    pub(super) fn checkout(&self) -> Option<Conn> {
        let mut inner = self.lock();
        let now = Instant::now();
        while let Some(Idle { mut conn, since }) = inner.idle.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout && conn.is_alive() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request, unless the pool is full or no runtime is here to
    /// close it once expired.
    pub(super) fn put(self: &Arc<Self>, conn: Conn) {
        if self.max_idle == 0 || self.idle_timeout.is_zero() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut inner = self.lock();
        if inner.idle.len() >= self.max_idle {
            return;
        }
        inner.idle.push(Idle {
            conn,
            since: Instant::now(),
        });
        if !inner.reaping {
            inner.reaping = true;
            runtime.spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Closes the idle connections beyond the `keep` most recently used (after a burst: the
    /// connections it opened are not kept for the idle timeout).
    pub(super) fn shrink(&self, keep: usize) {
        let surplus = {
            let mut inner = self.lock();
            let extra = inner.idle.len().saturating_sub(keep);
            inner.idle.drain(..extra).collect::<Vec<_>>()
        };
        // Closed outside the lock.
        drop(surplus);
    }

    /// Calls `f` on each idle connection.
    #[cfg(test)]
    pub(super) fn each_idle(&self, f: impl Fn(&Conn)) {
        self.lock().idle.iter().for_each(|i| f(&i.conn));
    }

    /// How many idle connections the pool holds.
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// Closes the expired connections; the next expiry, or `None` (and no more reaping)
    /// once the pool is empty.
    fn expire(&self) -> Option<Instant> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner
            .idle
            .retain(|i| now.saturating_duration_since(i.since) < self.idle_timeout);
        let next = inner.idle.first().map(|i| i.since + self.idle_timeout);
        inner.reaping = next.is_some();
        next
    }
}

/// The pool's timer: closes connections as they expire, while there are any.
async fn reap(pool: Weak<Pool>) {
    loop {
        let Some(next) = pool.upgrade().and_then(|p| p.expire()) else {
            return;
        };
        tokio::time::sleep_until(next).await;
    }
}
