//! The PostgreSQL ledger: virtual keys and the spend log in a database that several sluice
//! replicas share. Same schema and semantics as the SQLite ledger (see [`crate::ledger`]).
//!
//! Why a thread of its own: the gateway runs several single-threaded tokio runtimes, and a
//! PostgreSQL connection is a task that must keep being polled on one runtime. So the
//! connection lives on a dedicated OS thread running its own current-thread runtime, and
//! one task there (the writer) owns it. The handles talk to it over an unbounded tokio
//! channel: [`PgLedger::record`] sends the record and returns (the queue is bounded by a
//! counter: past `max_queued` waiting records it drops and counts instead of sending);
//! queries send their request with a oneshot for the answer. [`PgLedger::open`] connects
//! and creates the schema on that thread while the caller waits on a std channel, so it
//! works outside a runtime as well as inside one (it blocks the caller for the connect, 5 s
//! at most unless the URL sets `connect_timeout`, and the schema check).
//!
//! The writer: records gather until `batch_size` are waiting, the oldest has waited
//! `flush_interval`, or a [`PgLedger::flush`] asks. A batch is one transaction of three
//! pipelined statements: the records as one `INSERT ... SELECT * FROM UNNEST($1::bigint[],
//! ...)`, then the batch's daily roll-up rows and budget windows, summed in Rust first (so
//! no row is touched twice by one statement) and sorted (so replicas lock rows in the same
//! order), as `INSERT ... ON CONFLICT ... DO UPDATE SET x = t.x + EXCLUDED.x`. Queries are
//! served on the same connection between batches.
//!
//! Failures: when a batch fails, the writer waits (200 ms, doubling up to 5 s) and tries
//! again. A failure of the connection (refused, closed, or an operation past its 30 s time
//! limit) counts as a try for every waiting record, and the connection is made anew (at
//! once, then with the same backoff between failed connects); a statement's error counts
//! for that batch's records only. A record that has had [`MAX_ATTEMPTS`] tries is given up
//! and counted in [`PgLedger::errors`]: records are never lost without being counted, and
//! a `flush` returns within a minute or so even with the database gone. Queries made
//! while the writer backs off between connects fail at once with
//! [`StoreError::Unavailable`]. A batch whose commit was sent but not acknowledged (the
//! connection broke at that moment) is retried and may then be written twice: delivery is
//! at least once.
//!
//! The writer runs [`PgLedger::purge`] once started (right after `open` returns) and then
//! hourly. The last handle dropped
//! writes what is still queued (one try) and stops the thread, blocking until it is done.
//!
//! TLS is not yet supported: the connection is plain TCP (`NoTls`; a URL with
//! `sslmode=require` fails to connect). The schema is created with `CREATE TABLE IF NOT
//! EXISTS` under an advisory lock (replicas may start together), and `sluice_schema`
//! holds its version: a newer one is refused.
//!
//! The files: this one is the handle; `runtime` starts the writer's thread and runtime,
//! `writer` is the task there, `queue` the records waiting with their tries and the
//! flushes, `link` the connection and its reconnects, `backoff` the waits after failures,
//! `schema` the migration, `conn` the prepared statements and queries, `batch` a batch's
//! statements and their columns (integers converted by `crate::sql_int`).

mod backoff;
mod batch;
mod conn;
mod link;
mod queue;
mod runtime;
mod schema;
mod writer;

pub use queue::MAX_ATTEMPTS;

use crate::ledger::counters::Counters;
use crate::ledger::protocol::{Msg, Reply};
use crate::ledger::types::{Dimension, KeyRecord, LedgerOptions, Purged, Report, SpendRecord};
use crate::{StoreError, UnixMs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
struct Inner {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Counters>,
    max_queued: u64,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Msg::Shutdown);
            if thread.join().is_err() {
                tracing::warn!("postgres ledger writer panicked");
            }
        }
    }
}

/// The PostgreSQL ledger (see the module docs). Cheap to clone; the last clone dropped
/// writes what is queued and stops the writer thread.
#[derive(Debug, Clone)]
pub struct PgLedger {
    inner: Arc<Inner>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("postgres ledger writer stopped".into())
}

// === impl PgLedger ===

impl PgLedger {
    /// Connects to `url` (`postgres://user:password@host:port/db?options`; no TLS yet),
    /// creates the schema if absent, and starts the writer thread (which purges first).
    /// Fails if PostgreSQL cannot be reached or its schema is newer than this code's.
    /// Blocks the caller until connected and the schema checked, or failed.
    pub fn open(url: &str, options: LedgerOptions) -> Result<Self, StoreError> {
        let config = link::config(url)?;
        let shared = Arc::new(Counters::default());
        let max_queued = options.max_queued as u64;
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = runtime::start(config, options, Arc::clone(&shared), rx)?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                shared,
                max_queued,
                thread: Some(thread),
            }),
        })
    }

    async fn ask<T>(&self, msg: impl FnOnce(Reply<T>) -> Msg) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.tx.send(msg(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// See [`crate::Ledger::record`].
    pub fn record(&self, r: SpendRecord) {
        let shared = &self.inner.shared;
        if shared.enqueue(self.inner.max_queued).is_none() {
            return;
        }
        if self.inner.tx.send(Msg::Record(Box::new(r))).is_err() {
            shared.resolved(1, false);
            tracing::debug!("postgres ledger record: writer gone");
        }
    }

    /// See [`crate::Ledger::flush`].
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(reply)).is_ok() {
            let _ = done.await;
        }
    }

    /// See [`crate::Ledger::report`].
    pub async fn report(
        &self,
        by: Dimension,
        since: UnixMs,
        now: UnixMs,
    ) -> Result<Report, StoreError> {
        self.report_between(by, since, UnixMs::MAX, now).await
    }

    /// See [`crate::Ledger::report_between`].
    pub async fn report_between(
        &self,
        by: Dimension,
        since: UnixMs,
        until: UnixMs,
        now: UnixMs,
    ) -> Result<Report, StoreError> {
        self.ask(|reply| Msg::Report {
            by,
            since,
            until,
            now,
            reply,
        })
        .await
    }

    /// See [`crate::Ledger::export`].
    pub async fn export(&self, since: UnixMs) -> Result<Vec<SpendRecord>, StoreError> {
        self.ask(|reply| Msg::Export { since, reply }).await
    }

    /// See [`crate::Ledger::log`].
    pub async fn log(
        &self,
        query: crate::ledger::log::LogQuery,
    ) -> Result<crate::ledger::log::LogPage, StoreError> {
        let query = Box::new(query);
        self.ask(|reply| Msg::Log { query, reply }).await
    }

    /// See [`crate::Ledger::window_spend`].
    pub async fn window_spend(&self, key_id: &str, window: &str) -> Result<u64, StoreError> {
        self.ask(|reply| Msg::WindowSpend {
            key_id: key_id.to_string(),
            window: window.to_string(),
            reply,
        })
        .await
    }

    /// See [`crate::Ledger::purge`].
    pub async fn purge(&self, now: UnixMs) -> Result<Purged, StoreError> {
        self.ask(|reply| Msg::Purge { now, reply }).await
    }

    /// See [`crate::Ledger::key_by_hash`].
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.ask(|reply| Msg::KeyByHash {
            hash: hash.to_string(),
            reply,
        })
        .await
    }

    /// See [`crate::Ledger::key`].
    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.ask(|reply| Msg::Key {
            id: id.to_string(),
            reply,
        })
        .await
    }

    /// See [`crate::Ledger::keys`].
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.ask(Msg::Keys).await
    }

    /// See [`crate::Ledger::save_key`]. An empty `metadata` is stored as `{}`.
    pub async fn save_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.ask(|reply| Msg::SaveKey {
            key: Box::new(key.clone()),
            reply,
        })
        .await
    }

    /// See [`crate::Ledger::dropped`].
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Relaxed)
    }

    /// See [`crate::Ledger::errors`].
    pub fn errors(&self) -> u64 {
        self.inner.shared.errors.load(Relaxed)
    }

    /// See [`crate::Ledger::written`].
    pub fn written(&self) -> u64 {
        self.inner.shared.written.load(Relaxed)
    }

    /// See [`crate::Ledger::queued`].
    pub fn queued(&self) -> u64 {
        self.inner.shared.queued.load(Relaxed)
    }
}
