//! The embedded ledger: virtual keys and the spend log in one SQLite file (WAL,
//! `synchronous=NORMAL`), owned by one dedicated OS thread, as the cache's store is.
//!
//! Why a thread: SQLite calls block, and the gateway's workers are single-threaded tokio
//! runtimes that must never block. Requests reach the thread over a channel; records are
//! drained in batches (whatever is queued, up to `batch_size`) and written in one
//! transaction per batch together with the batch's roll-up and budget-window sums,
//! aggregated in memory first, so a batch of 512 records costs 512 inserts and a handful of
//! upserts. Queries (reports, key lookups) are answered on the same thread between
//! batches; the gateway caches keys, so lookups are rare.
//!
//! Schema: see [`crate::ledger`]; version in `PRAGMA user_version`.
//!
//! The files: this one is the handle; `writer` is the thread, `batch` a batch's
//! transaction, `reports` the reads of the spend log and retention, `keys` the virtual
//! keys, `schema` the tables.

mod batch;
mod keys;
mod reports;
mod schema;
mod writer;

use crate::ledger::counters::Counters;
use crate::ledger::protocol::{Msg, Reply};
use crate::ledger::types::{Dimension, KeyRecord, LedgerOptions, Purged, Report, SpendRecord};
use crate::{StoreError, UnixMs};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Counters>,
    max_queued: u64,
    /// Records queued that make a full batch: the writer is woken for them.
    batch_size: u64,
    /// The writer, to wake: records do not wake it until a batch is full (it gathers them
    /// for `flush_interval`, parked); flushes, queries and the shutdown wake it at once.
    writer: std::thread::Thread,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Sends a message the writer must see now.
    fn send_now(&self, msg: Msg) -> Result<(), mpsc::SendError<Msg>> {
        let sent = self.tx.send(msg);
        self.writer.unpark();
        sent
    }
}

impl Inner {
    fn shutdown(&self) {
        crate::sqlite_file::stop_writer(&self.tx, &self.thread, Msg::Shutdown, "sqlite ledger");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The SQLite ledger. Cheap to clone; the last clone dropped writes what is queued and
/// stops the writer thread.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    inner: Arc<Inner>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("sqlite ledger writer stopped".into())
}

// === impl SqliteLedger ===

impl SqliteLedger {
    /// Opens (or creates) the ledger file at `path`, applies retention, and starts the
    /// writer thread.
    pub fn open(path: &Path, options: LedgerOptions) -> Result<Self, StoreError> {
        let conn = crate::sqlite_file::retry_busy(|| {
            let conn = crate::sqlite_file::open_wal(path, "sqlite ledger")?;
            schema::migrate(&conn)?;
            Ok(conn)
        })?;
        let shared = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let max_queued = options.max_queued as u64;
        let batch_size = options.batch_size.max(1) as u64;
        let thread = writer::spawn(conn, Arc::clone(&shared), options, rx)?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                shared,
                max_queued,
                batch_size,
                writer: thread.thread().clone(),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    async fn ask<T>(&self, msg: impl FnOnce(Reply<T>) -> Msg) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.send_now(msg(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// See [`crate::Ledger::record`].
    pub fn record(&self, r: SpendRecord) {
        let shared = &self.inner.shared;
        let Some(queued) = shared.enqueue(self.inner.max_queued) else {
            return;
        };
        if self.inner.tx.send(Msg::Record(Box::new(r))).is_err() {
            shared.resolved(1, false);
        }
        if queued >= self.inner.batch_size {
            // Costs an atomic swap unless the writer is parked.
            self.inner.writer.unpark();
        }
    }

    /// See [`crate::Ledger::flush`].
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.send_now(Msg::Flush(reply)).is_ok() {
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
        let (key_id, window) = (key_id.to_string(), window.to_string());
        self.ask(|reply| Msg::WindowSpend {
            key_id,
            window,
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
        let hash = hash.to_string();
        self.ask(|reply| Msg::KeyByHash { hash, reply }).await
    }

    /// See [`crate::Ledger::key`].
    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_string();
        self.ask(|reply| Msg::Key { id, reply }).await
    }

    /// See [`crate::Ledger::keys`].
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.ask(Msg::Keys).await
    }

    /// See [`crate::Ledger::save_key`].
    pub async fn save_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let key = Box::new(key.clone());
        self.ask(|reply| Msg::SaveKey { key, reply }).await
    }

    /// Writes what is queued and stops the writer thread, blocking until it is done.
    pub fn shutdown(&self) {
        self.inner.shutdown();
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
