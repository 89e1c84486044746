//! The writer thread: owns the connection, gathers records into batches and writes each in
//! one transaction, answers queries between batches, purges hourly, and at shutdown writes
//! what is still queued.

use super::{batch, keys, reports};
use crate::ledger::counters::Counters;
use crate::ledger::protocol::{Msg, Reply};
use crate::ledger::types::{LedgerOptions, Purged, SpendRecord};
use crate::{unix_now_ms, StoreError};
use rusqlite::Connection;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often the writer applies retention.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// How long the writer waits, once nothing more comes, before handing back the pages its
/// connection cached while writing (SQLite's page cache: up to 2 MiB by default, which a
/// writer that went quiet no longer needs; it fills again as writes resume).
const QUIET_RELEASE: Duration = Duration::from_secs(5);

/// Starts the writer thread on `conn`, fed by `rx`.
pub(super) fn spawn(
    conn: Connection,
    shared: Arc<Counters>,
    options: LedgerOptions,
    rx: mpsc::Receiver<Msg>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-sqlite-ledger".into())
        .spawn(move || {
            let mut w = Writer {
                conn: &conn,
                statements: None,
                shared,
                options,
                draining: false,
            };
            w.run(&rx);
        })
}

struct Writer<'c> {
    conn: &'c Connection,
    /// Prepared at the first batch, kept for the writer's life.
    statements: Option<batch::Statements<'c>>,
    shared: Arc<Counters>,
    options: LedgerOptions,
    /// Stopping: write what is queued without waiting for more.
    draining: bool,
}

/// What one batch gathered: records to write in one transaction, and what ended it.
struct Gathered {
    records: Vec<SpendRecord>,
    /// A flush, answered once the records are written.
    flush: Option<oneshot::Sender<()>>,
    /// A query, answered once the records before it are written.
    query: Option<Msg>,
    /// The shutdown was asked for, or every handle is gone.
    stop: bool,
}

/// When the writer hands its page cache back: [`QUIET_RELEASE`] after its last message,
/// once (until it is busy again).
#[derive(Debug, Default)]
struct Quiet(Option<Instant>);

impl Quiet {
    /// The writer handled a message at `now`.
    fn busy(&mut self, now: Instant) {
        self.0 = Some(now + QUIET_RELEASE);
    }

    /// The earlier of the release, when one is due, and `other`.
    fn until(&self, other: Instant) -> Instant {
        self.0.map_or(other, |r| r.min(other))
    }

    /// Whether to release now (once for each busy spell).
    fn due(&mut self, now: Instant) -> bool {
        let due = self.0.is_some_and(|r| now >= r);
        if due {
            self.0 = None;
        }
        due
    }
}

/// What [`Writer::next_before`] found.
enum Next {
    Msg(Msg),
    Deadline,
    /// Every handle is gone.
    Gone,
}

// === impl Writer ===

impl<'c> Writer<'c> {
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        self.maintain();
        let mut next_purge = Instant::now() + PURGE_INTERVAL;
        let mut quiet = Quiet::default();
        loop {
            let wait = quiet
                .until(next_purge)
                .saturating_duration_since(Instant::now());
            let stop = match rx.recv_timeout(wait) {
                Ok(first) => {
                    quiet.busy(Instant::now());
                    self.batch(first, rx)
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if Instant::now() >= next_purge {
                self.maintain();
                next_purge = Instant::now() + PURGE_INTERVAL;
            }
            if quiet.due(Instant::now()) {
                self.release_cache();
            }
            if stop {
                break;
            }
        }
        // Shutdown: whatever is still queued behind the stop message is written too, at once.
        self.draining = true;
        while let Ok(first) = rx.try_recv() {
            self.batch(first, rx);
        }
    }

    /// Hands the connection's cached pages back (`PRAGMA shrink_memory`).
    fn release_cache(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!(error = %e, "sqlite ledger: shrink_memory failed");
        }
    }

    fn maintain(&mut self) {
        match reports::purge(self.conn, unix_now_ms(), &self.options) {
            Ok(p) if p != Purged::default() => tracing::debug!(?p, "sqlite ledger: purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sqlite ledger: purge failed"),
        }
    }

    /// Handles `first` and what follows it (see [`Writer::gather`]): writes the records
    /// gathered in one transaction, then answers the flush or the query that ended the
    /// gathering. Returns whether to stop.
    fn batch(&mut self, first: Msg, rx: &mpsc::Receiver<Msg>) -> bool {
        let gathered = self.gather(first, rx);
        if !gathered.records.is_empty() {
            self.write(&gathered.records);
        }
        if let Some(reply) = gathered.flush {
            let _ = reply.send(());
        }
        if let Some(query) = gathered.query {
            self.answer(query);
        }
        gathered.stop
    }

    /// Gathers records, starting with `first`, until `batch_size` of them are here,
    /// `flush_interval` has passed since the first, or a flush, a query or the shutdown
    /// arrives (so a light, steady load costs one commit per interval, not one per
    /// request). Between messages the thread is parked, not waiting on the channel, so
    /// records sent meanwhile wake nothing: the handles wake it for a full batch and for
    /// anything that must be answered.
    fn gather(&self, first: Msg, rx: &mpsc::Receiver<Msg>) -> Gathered {
        let mut g = Gathered {
            records: Vec::new(),
            flush: None,
            query: None,
            stop: false,
        };
        let deadline = Instant::now() + self.options.flush_interval;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => g.records.push(*r),
                Msg::Flush(reply) => {
                    g.flush = Some(reply);
                    break;
                }
                Msg::Shutdown => {
                    g.stop = true;
                    break;
                }
                query => {
                    g.query = Some(query);
                    break;
                }
            }
            if g.records.len() >= self.options.batch_size.max(1) {
                break;
            }
            next = match self.next_before(rx, deadline) {
                Next::Msg(m) => Some(m),
                Next::Deadline => None,
                Next::Gone => {
                    g.stop = true;
                    None
                }
            };
        }
        g
    }

    /// The next message, parking until one is queued or `deadline` passes.
    fn next_before(&self, rx: &mpsc::Receiver<Msg>, deadline: Instant) -> Next {
        loop {
            match rx.try_recv() {
                Ok(m) => return Next::Msg(m),
                Err(mpsc::TryRecvError::Disconnected) => return Next::Gone,
                Err(mpsc::TryRecvError::Empty) if self.draining => return Next::Deadline,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::Deadline;
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    /// Writes `records` in one transaction, and counts them written or failed.
    fn write(&mut self, records: &[SpendRecord]) {
        let n = records.len() as u64;
        self.shared.queued.fetch_sub(n, Relaxed);
        let written = match &mut self.statements {
            Some(s) => batch::write(self.conn, s, records),
            None => batch::Statements::prepare(self.conn).and_then(|mut s| {
                let written = batch::write(self.conn, &mut s, records);
                self.statements = Some(s);
                written
            }),
        };
        match written {
            Ok(()) => {
                self.shared.written.fetch_add(n, Relaxed);
            }
            Err(e) => {
                self.shared.errors.fetch_add(n, Relaxed);
                tracing::warn!(error = %e, records = n, "sqlite ledger: batch write failed");
            }
        }
    }

    fn answer(&mut self, query: Msg) {
        let conn = self.conn;
        match query {
            Msg::Report {
                by,
                since,
                until,
                now,
                reply,
            } => {
                let days = self.options.retention_days;
                let period = since..until;
                send(reply, reports::report(conn, by, period, now, days));
            }
            Msg::Export { since, reply } => send(reply, reports::export(conn, since)),
            Msg::Log { query, reply } => send(reply, reports::log(conn, &query)),
            Msg::WindowSpend {
                key_id,
                window,
                reply,
            } => send(reply, reports::window_spend(conn, &key_id, &window)),
            Msg::Purge { now, reply } => send(reply, reports::purge(conn, now, &self.options)),
            Msg::KeyByHash { hash, reply } => send(reply, keys::by_hash(conn, &hash)),
            Msg::Key { id, reply } => send(reply, keys::by_id_or_name(conn, &id)),
            Msg::Keys(reply) => send(reply, keys::all(conn)),
            Msg::SaveKey { key, reply } => send(reply, keys::save(conn, &key)),
            Msg::Record(_) | Msg::Flush(_) | Msg::Shutdown => {}
        }
    }
}

/// Sends a query's outcome to its asker.
fn send<T>(reply: Reply<T>, outcome: rusqlite::Result<T>) {
    let _ = reply.send(outcome.map_err(StoreError::from));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_cache_goes_back_once_after_a_quiet_spell() {
        let t = Instant::now();
        let later = t + PURGE_INTERVAL;
        let mut quiet = Quiet::default();
        assert_eq!(
            quiet.until(later),
            later,
            "nothing written: nothing to release"
        );
        assert!(!quiet.due(later));
        quiet.busy(t);
        assert_eq!(quiet.until(later), t + QUIET_RELEASE);
        assert!(!quiet.due(t + QUIET_RELEASE / 2), "not quiet long enough");
        quiet.busy(t + QUIET_RELEASE / 2);
        assert!(
            !quiet.due(t + QUIET_RELEASE),
            "busy again: counted from then"
        );
        assert!(quiet.due(t + QUIET_RELEASE * 2));
        assert!(
            !quiet.due(t + QUIET_RELEASE * 3),
            "once for each busy spell"
        );
        assert_eq!(quiet.until(later), later);
    }
}
