//! The embedded cache store: one SQLite file (WAL, `synchronous=NORMAL`), owned by one
//! dedicated OS thread.
//!
//! Why a thread: SQLite calls block, and sluice's workers are single-threaded tokio
//! runtimes that must never block. So the connection lives on its own thread, fed by a
//! channel: a `get` sends its request with a oneshot for the answer; `put`s are drained in
//! batches (up to `batch_size` messages) and written in one transaction per batch, with the
//! counters' pending increments. The queue is bounded in puts: past `max_queued_puts` waiting,
//! a put is dropped and counted rather than grow memory without bound.
//!
//! On disk: `cache_entries(key, value, expires_at, semantic)` and `cache_counters(name,
//! value)`, schema version in `PRAGMA user_version`. `semantic` is the semantic index's
//! record of the entry's question, or NULL (a column added in place to an older file, whose
//! version stays 1: an older sluice still opens it). Expired rows are purged on open and every
//! `purge_interval` (60 s) of wall time. A row is charged `length(value) +
//! length(semantic) + 32 + ROW_OVERHEAD` bytes (a running total, recounted at each purge); after each batch, if
//! the total is past `max_disk_bytes`, the soonest-expiring rows are deleted until it is
//! under 90% of it (so the deletion is not redone on every batch). Between two checks the
//! file can overshoot by at most one batch.

use crate::cache_stats::{CacheStats, CounterDelta, PendingCounters};
use crate::index_records::{IndexCursor, IndexRecord};
use crate::sql_int::{from_sql, to_sql};
use crate::sqlite_file;
use crate::{unix_now_ms, Key, StoreError, UnixMs};
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Statement};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The schema this code reads and writes.
const SCHEMA_VERSION: i64 = 1;

/// Bytes charged per row on top of its value and key: the row header, the key index entry
/// and the expiry index entry, approximately.
pub const ROW_OVERHEAD: u64 = 64;

fn row_charge(value_len: u64) -> u64 {
    value_len + 32 + ROW_OVERHEAD
}

/// Tuning for [`SqliteCache::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Upper bound of the rows' charged bytes.
    pub max_disk_bytes: u64,
    /// Puts waiting for the writer beyond which new puts are dropped.
    pub max_queued_puts: usize,
    /// Messages written per transaction at most.
    pub batch_size: usize,
    /// How often expired rows are purged.
    pub purge_interval: Duration,
}

impl SqliteOptions {
    /// Defaults: 10,000 queued puts, batches of 256, a purge every 60 s.
    pub fn new(max_disk_bytes: u64) -> Self {
        Self {
            max_disk_bytes,
            max_queued_puts: 10_000,
            batch_size: 256,
            purge_interval: Duration::from_secs(60),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Msg {
    Get {
        key: Key,
        now: UnixMs,
        reply: Reply<Option<(Bytes, UnixMs)>>,
    },
    Put {
        key: Key,
        value: Bytes,
        expires_at: UnixMs,
        index: Option<Bytes>,
    },
    /// Every live entry's index record.
    Index {
        now: UnixMs,
        reply: Reply<Vec<IndexRecord>>,
    },
    Clear(Reply<u64>),
    Stats(Reply<CacheStats>),
    Purge {
        now: UnixMs,
        reply: Reply<u64>,
    },
    Flush(oneshot::Sender<()>),
    /// Counter increments are pending: write them with the next batch.
    Wake,
    Shutdown,
}

/// What the handles and the writer thread share.
#[derive(Debug, Default)]
struct Shared {
    queued_puts: AtomicUsize,
    errors: AtomicU64,
    dropped: AtomicU64,
    counters: PendingCounters,
    /// Set while a [`Msg::Wake`] is on its way, so counting sends one message per batch.
    wake_sent: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    max_queued_puts: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn shutdown(&self) {
        sqlite_file::stop_writer(&self.tx, &self.thread, Msg::Shutdown, "sqlite cache");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The SQLite cache store. Cheap to clone; the last clone dropped flushes and stops the
/// writer thread.
#[derive(Debug, Clone)]
pub struct SqliteCache {
    inner: Arc<Inner>,
}

// === impl SqliteCache ===

impl SqliteCache {
    /// Opens (or creates) the cache file at `path` with default options.
    pub fn open(path: &Path, max_disk_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::new(max_disk_bytes))
    }

    /// Opens (or creates) the cache file at `path`, purges expired rows, and starts the
    /// writer thread.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let conn = sqlite_file::retry_busy(|| {
            let conn = sqlite_file::open_wal(path, "sqlite cache")?;
            migrate(&conn)?;
            Ok(conn)
        })?;
        let shared = Arc::new(Shared::default());
        let max_queued_puts = options.max_queued_puts;
        let (tx, rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-sqlite-cache".into())
            .spawn(move || writer_thread(&conn, &rx, &thread_shared, &options))?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                shared,
                max_queued_puts,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    async fn ask<T>(&self, msg: impl FnOnce(Reply<T>) -> Msg) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.tx.send(msg(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The value under `key` and its expiry, if live at `now` (an expired row is deleted).
    pub async fn get(&self, key: &Key, now: UnixMs) -> Result<Option<(Bytes, UnixMs)>, StoreError> {
        let key = *key;
        self.ask(|reply| Msg::Get { key, now, reply }).await
    }

    /// Queues a write; dropped (and counted) when `max_queued_puts` are already waiting.
    pub fn put(&self, key: Key, value: Bytes, expires_at: UnixMs) {
        self.put_indexed(key, value, expires_at, None);
    }

    /// [`Self::put`] with the semantic index's record of the entry, kept in the same row
    /// (and so expired and evicted with it).
    pub fn put_indexed(&self, key: Key, value: Bytes, expires_at: UnixMs, index: Option<Bytes>) {
        let shared = &self.inner.shared;
        if shared.queued_puts.fetch_add(1, Relaxed) >= self.inner.max_queued_puts {
            shared.queued_puts.fetch_sub(1, Relaxed);
            shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        let msg = Msg::Put {
            key,
            value,
            expires_at,
            index,
        };
        if self.inner.tx.send(msg).is_err() {
            shared.queued_puts.fetch_sub(1, Relaxed);
            shared.errors.fetch_add(1, Relaxed);
            tracing::debug!("sqlite cache put: writer gone");
        }
    }

    /// The index records of the live entries when `cursor` has read nothing yet; nothing
    /// after (this file has one writer, whose records its own index already holds).
    pub async fn index_since(
        &self,
        cursor: &mut IndexCursor,
        now: UnixMs,
    ) -> Result<Vec<IndexRecord>, StoreError> {
        if cursor.started {
            return Ok(Vec::new());
        }
        let records = self.ask(|reply| Msg::Index { now, reply }).await?;
        cursor.started = true;
        Ok(records)
    }

    /// Deletes every entry; returns how many rows were deleted.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        self.ask(Msg::Clear).await
    }

    /// Entries live now (wall clock), their value bytes, and the counters.
    pub async fn stats(&self) -> Result<CacheStats, StoreError> {
        self.ask(Msg::Stats).await
    }

    /// Deletes the rows expired at `now` now rather than at the next periodic purge;
    /// returns how many.
    pub async fn purge_expired(&self, now: UnixMs) -> Result<u64, StoreError> {
        self.ask(|reply| Msg::Purge { now, reply }).await
    }

    /// Adds to the counters; written with the next batch.
    pub fn add_counters(&self, d: CounterDelta) {
        let shared = &self.inner.shared;
        shared.counters.add(d);
        if !shared.wake_sent.swap(true, Relaxed) {
            // Errors mean the writer is stopping; it saves the counters on its way out.
            let _ = self.inner.tx.send(Msg::Wake);
        }
    }

    /// Waits until every put and counter increment issued before is committed.
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(reply)).is_ok() {
            let _ = done.await;
        }
    }

    /// Flushes and stops the writer thread, blocking until it is done; later operations
    /// fail with [`StoreError::Unavailable`]. Dropping the last clone does the same.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Failed writes since open.
    pub fn errors(&self) -> u64 {
        self.inner.shared.errors.load(Relaxed)
    }

    /// Puts dropped because the writer was behind, since open.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Relaxed)
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("sqlite cache writer stopped".into())
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE cache_entries (
                     key BLOB PRIMARY KEY NOT NULL,
                     value BLOB NOT NULL,
                     expires_at INTEGER NOT NULL
                 );
                 CREATE INDEX cache_entries_expires_at ON cache_entries (expires_at);
                 CREATE TABLE cache_counters (
                     name TEXT PRIMARY KEY NOT NULL,
                     value INTEGER NOT NULL
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
            add_semantic_column(conn)
        }
        SCHEMA_VERSION => add_semantic_column(conn),
        other => Err(StoreError::Unavailable(format!(
            "sqlite cache schema version {other} is newer than this sluice ({SCHEMA_VERSION})"
        ))),
    }
}

/// Adds `cache_entries.semantic` to a file made before it (no version change: a nullable
/// column an older sluice does not read).
fn add_semantic_column(conn: &Connection) -> Result<(), StoreError> {
    let has: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('cache_entries') WHERE name = 'semantic'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE cache_entries ADD COLUMN semantic BLOB")?;
    }
    Ok(())
}

/// The bytes of a row charged beside its key and overhead.
const CHARGED_LEN: &str = "length(value) + coalesce(length(semantic), 0)";

/// The writer thread's state: prepared statements and the running byte total.
struct Writer<'c> {
    conn: &'c Connection,
    shared: &'c Shared,
    max_disk_bytes: u64,
    disk_bytes: u64,
    select: Statement<'c>,
    length: Statement<'c>,
    upsert: Statement<'c>,
    delete: Statement<'c>,
    add_counter: Statement<'c>,
    oldest: Statement<'c>,
}

fn writer_thread(
    conn: &Connection,
    rx: &mpsc::Receiver<Msg>,
    shared: &Shared,
    options: &SqliteOptions,
) {
    let mut writer = match Writer::new(conn, shared, options.max_disk_bytes) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "sqlite cache writer cannot start");
            return;
        }
    };
    writer.maintain(unix_now_ms());
    let mut next_purge = Instant::now() + options.purge_interval;
    loop {
        let wait = next_purge.saturating_duration_since(Instant::now());
        let stop = match rx.recv_timeout(wait) {
            Ok(first) => writer.batch(first, rx, options.batch_size.max(1)),
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if Instant::now() >= next_purge {
            writer.maintain(unix_now_ms());
            next_purge = Instant::now() + options.purge_interval;
        }
        if stop {
            break;
        }
    }
    // Shutdown: whatever is still queued behind the stop message is written too.
    let mut rest: Vec<Msg> = rx.try_iter().collect();
    if !rest.is_empty() {
        let first = rest.remove(0);
        let (tx, rx) = mpsc::channel();
        for m in rest {
            let _ = tx.send(m);
        }
        drop(tx);
        writer.batch(first, &rx, usize::MAX);
    }
    writer.save_counters_alone();
}

// === impl Writer ===

impl<'c> Writer<'c> {
    fn new(
        conn: &'c Connection,
        shared: &'c Shared,
        max_disk_bytes: u64,
    ) -> rusqlite::Result<Self> {
        Ok(Self {
            conn,
            shared,
            max_disk_bytes,
            disk_bytes: 0,
            select: conn.prepare("SELECT value, expires_at FROM cache_entries WHERE key = ?1")?,
            length: conn.prepare(&format!(
                "SELECT {CHARGED_LEN} FROM cache_entries WHERE key = ?1"
            ))?,
            upsert: conn.prepare(
                "INSERT INTO cache_entries (key, value, expires_at, semantic) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                     expires_at = excluded.expires_at, semantic = excluded.semantic",
            )?,
            delete: conn.prepare("DELETE FROM cache_entries WHERE key = ?1")?,
            add_counter: conn.prepare(
                "INSERT INTO cache_counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            )?,
            oldest: conn.prepare(&format!(
                "SELECT key, {CHARGED_LEN} FROM cache_entries ORDER BY expires_at, rowid LIMIT 256"
            ))?,
        })
    }

    fn error(&self, what: &str, e: &rusqlite::Error) {
        self.shared.errors.fetch_add(1, Relaxed);
        tracing::debug!(error = %e, "sqlite cache {what} failed");
    }

    /// Handles `first` and whatever else is queued (up to `limit` messages) in one
    /// transaction. Returns whether a shutdown was asked for.
    fn batch(&mut self, first: Msg, rx: &mpsc::Receiver<Msg>, limit: usize) -> bool {
        if let Err(e) = self.conn.execute_batch("BEGIN") {
            self.error("begin", &e);
        }
        let mut after_commit: Vec<oneshot::Sender<()>> = Vec::new();
        let mut stop = false;
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(msg) = next.take() {
            handled += 1;
            match msg {
                Msg::Get { key, now, reply } => {
                    let _ = reply.send(self.get(&key, now).map_err(StoreError::from));
                }
                Msg::Put {
                    key,
                    value,
                    expires_at,
                    index,
                } => {
                    self.shared.queued_puts.fetch_sub(1, Relaxed);
                    if let Err(e) = self.put(&key, &value, expires_at, index.as_deref()) {
                        self.error("put", &e);
                    }
                }
                Msg::Index { now, reply } => {
                    let _ = reply.send(self.index(now).map_err(StoreError::from));
                }
                Msg::Clear(reply) => {
                    let _ = reply.send(self.clear().map_err(StoreError::from));
                }
                Msg::Stats(reply) => {
                    let _ = reply.send(self.stats().map_err(StoreError::from));
                }
                Msg::Purge { now, reply } => {
                    let _ = reply.send(self.purge(now).map_err(StoreError::from));
                }
                Msg::Flush(reply) => after_commit.push(reply),
                Msg::Wake => {}
                Msg::Shutdown => stop = true,
            }
            if !stop && handled < limit {
                next = rx.try_recv().ok();
            }
        }
        self.save_counters();
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            self.error("commit", &e);
            let _ = self.conn.execute_batch("ROLLBACK");
            // What the rollback undid is unknown here: count bytes again.
            self.recount();
        }
        if self.disk_bytes > self.max_disk_bytes {
            self.shrink();
        }
        for reply in after_commit {
            let _ = reply.send(());
        }
        stop
    }

    fn get(&mut self, key: &Key, now: UnixMs) -> rusqlite::Result<Option<(Bytes, UnixMs)>> {
        let row = self
            .select
            .query_row(params![&key[..]], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?;
        let Some((value, expires_at)) = row else {
            return Ok(None);
        };
        let expires_at = from_sql(expires_at);
        if expires_at <= now {
            self.delete(key)?;
            return Ok(None);
        }
        Ok(Some((Bytes::from(value), expires_at)))
    }

    fn old_len(&mut self, key: &Key) -> rusqlite::Result<Option<u64>> {
        self.length
            .query_row(params![&key[..]], |r| r.get::<_, i64>(0))
            .optional()
            .map(|len| len.map(from_sql))
    }

    fn delete(&mut self, key: &Key) -> rusqlite::Result<()> {
        if let Some(len) = self.old_len(key)? {
            self.delete.execute(params![&key[..]])?;
            self.disk_bytes = self.disk_bytes.saturating_sub(row_charge(len));
        }
        Ok(())
    }

    fn put(
        &mut self,
        key: &Key,
        value: &[u8],
        expires_at: UnixMs,
        index: Option<&[u8]>,
    ) -> rusqlite::Result<()> {
        let charge = row_charge((value.len() + index.map_or(0, <[u8]>::len)) as u64);
        if charge > self.max_disk_bytes || expires_at <= unix_now_ms() {
            return self.delete(key);
        }
        if let Some(len) = self.old_len(key)? {
            self.disk_bytes = self.disk_bytes.saturating_sub(row_charge(len));
        }
        self.upsert
            .execute(params![&key[..], value, to_sql(expires_at), index])?;
        self.disk_bytes += charge;
        Ok(())
    }

    fn index(&mut self, now: UnixMs) -> rusqlite::Result<Vec<IndexRecord>> {
        let mut select = self.conn.prepare(
            "SELECT key, semantic, expires_at FROM cache_entries
             WHERE semantic IS NOT NULL AND expires_at > ?1 ORDER BY expires_at",
        )?;
        let rows = select.query_map(params![to_sql(now)], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, record, expires_at) = row?;
            // A key of another length is not one this code wrote: skipped.
            if let Ok(key) = Key::try_from(key.as_slice()) {
                out.push(IndexRecord {
                    key,
                    record: Bytes::from(record),
                    expires_at: from_sql(expires_at),
                });
            }
        }
        Ok(out)
    }

    fn clear(&mut self) -> rusqlite::Result<u64> {
        let removed = self.conn.execute("DELETE FROM cache_entries", [])?;
        self.disk_bytes = 0;
        Ok(removed as u64)
    }

    fn stats(&mut self) -> rusqlite::Result<CacheStats> {
        self.save_counters();
        let (entries, bytes) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(length(value)), 0) FROM cache_entries WHERE expires_at > ?1",
            params![to_sql(unix_now_ms())],
            |r| Ok((from_sql(r.get(0)?), from_sql(r.get(1)?))),
        )?;
        let mut stats = CacheStats {
            entries,
            bytes,
            ..CacheStats::default()
        };
        let mut rows = self
            .conn
            .prepare("SELECT name, value FROM cache_counters")?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let value = from_sql(row.get(1)?);
            match name.as_str() {
                "hits" => stats.hits = value,
                "misses" => stats.misses = value,
                "saved_nano_usd" => stats.saved_nano_usd = value,
                "saved_ms" => stats.saved_ms = value,
                _ => {}
            }
        }
        Ok(stats)
    }

    /// Writes the pending counter increments inside the current transaction.
    fn save_counters(&mut self) {
        self.shared.wake_sent.store(false, Relaxed);
        let delta = self.shared.counters.take();
        if delta.is_zero() {
            return;
        }
        for (name, n) in delta.fields() {
            if n != 0 {
                if let Err(e) = self.add_counter.execute(params![name, to_sql(n)]) {
                    self.error("counters", &e);
                }
            }
        }
    }

    /// Writes the pending counter increments in a transaction of their own.
    fn save_counters_alone(&mut self) {
        if self.conn.execute_batch("BEGIN").is_ok() {
            self.save_counters();
            if let Err(e) = self.conn.execute_batch("COMMIT") {
                self.error("commit", &e);
            }
        }
    }

    fn purge(&mut self, now: UnixMs) -> rusqlite::Result<u64> {
        let removed = self.conn.execute(
            "DELETE FROM cache_entries WHERE expires_at <= ?1",
            params![to_sql(now)],
        )?;
        self.recount();
        Ok(removed as u64)
    }

    /// Counts the charged bytes from scratch.
    fn recount(&mut self) {
        let counted = self.conn.query_row(
            &format!("SELECT count(*), coalesce(sum({CHARGED_LEN}), 0) FROM cache_entries"),
            [],
            |r| Ok((from_sql(r.get(0)?), from_sql(r.get(1)?))),
        );
        match counted {
            Ok((rows, bytes)) => self.disk_bytes = bytes + rows * row_charge(0),
            Err(e) => self.error("recount", &e),
        }
    }

    /// Periodic upkeep: purge expired rows, then enforce the byte bound.
    fn maintain(&mut self, now: UnixMs) {
        match self.purge(now) {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "sqlite cache: expired rows purged"),
            Ok(_) => {}
            Err(e) => self.error("purge", &e),
        }
        if self.disk_bytes > self.max_disk_bytes {
            self.shrink();
        }
    }

    /// Deletes soonest-expiring rows until under 90% of the byte bound.
    fn shrink(&mut self) {
        let target = self.max_disk_bytes / 10 * 9;
        let result = (|| -> rusqlite::Result<()> {
            self.conn.execute_batch("BEGIN")?;
            while self.disk_bytes > target {
                let victims: Vec<(Vec<u8>, i64)> = self
                    .oldest
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                if victims.is_empty() {
                    self.disk_bytes = 0;
                    break;
                }
                for (key, len) in victims {
                    self.delete.execute(params![key])?;
                    self.disk_bytes = self.disk_bytes.saturating_sub(row_charge(from_sql(len)));
                    if self.disk_bytes <= target {
                        break;
                    }
                }
            }
            self.conn.execute_batch("COMMIT")
        })();
        if let Err(e) = result {
            self.error("shrink", &e);
            let _ = self.conn.execute_batch("ROLLBACK");
            self.recount();
        }
    }
}
