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

use crate::ledger::counters::Counters;
use crate::ledger::protocol::{Msg, Reply, RECORD_COLUMNS};
use crate::ledger::types::{
    BudgetPeriod, Dimension, KeyRecord, LedgerOptions, Purged, Report, ReportRow, SpendRecord,
    DAY_MS,
};
use crate::{unix_now_ms, StoreError, UnixMs};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The schema this code reads and writes.
const SCHEMA_VERSION: i64 = 1;

/// How often the writer applies retention.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Counters>,
    max_queued: u64,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        let conn = crate::sqlite_file::open_wal(path, "sqlite ledger")?;
        migrate(&conn)?;
        let shared = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let max_queued = options.max_queued as u64;
        let thread = std::thread::Builder::new()
            .name("sluice-sqlite-ledger".into())
            .spawn(move || {
                let mut w = Writer {
                    conn,
                    shared: thread_shared,
                    options,
                    draining: false,
                };
                w.run(&rx);
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                shared,
                max_queued,
                thread: Mutex::new(Some(thread)),
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
        if !shared.enqueue(self.inner.max_queued) {
            return;
        }
        if self.inner.tx.send(Msg::Record(Box::new(r))).is_err() {
            shared.resolved(1, false);
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
        self.ask(|reply| Msg::Report {
            by,
            since,
            now,
            reply,
        })
        .await
    }

    /// See [`crate::Ledger::export`].
    pub async fn export(&self, since: UnixMs) -> Result<Vec<SpendRecord>, StoreError> {
        self.ask(|reply| Msg::Export { since, reply }).await
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

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    // `BEGIN IMMEDIATE` takes the write lock first, so two processes opening a new file at
    // once migrate it once: the second reads the first's version.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = migrate_locked(conn);
    match &result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

fn migrate_locked(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => {
            conn.execute_batch(
                "CREATE TABLE spend_log (
                     id INTEGER PRIMARY KEY,
                     ts_ms INTEGER NOT NULL,
                     request_id TEXT NOT NULL,
                     key_id TEXT,
                     key_name TEXT,
                     endpoint TEXT NOT NULL,
                     route TEXT,
                     model TEXT,
                     provider TEXT,
                     status INTEGER NOT NULL,
                     prompt_tokens INTEGER NOT NULL,
                     completion_tokens INTEGER NOT NULL,
                     cached_tokens INTEGER NOT NULL,
                     cache_write_tokens INTEGER NOT NULL,
                     reasoning_tokens INTEGER NOT NULL,
                     cost_nano_usd INTEGER NOT NULL,
                     latency_ms INTEGER NOT NULL,
                     ttft_ms INTEGER,
                     cache TEXT NOT NULL,
                     attempts INTEGER NOT NULL,
                     stream INTEGER NOT NULL,
                     usage_estimated INTEGER NOT NULL
                 );
                 CREATE INDEX spend_log_ts ON spend_log (ts_ms);
                 CREATE INDEX spend_log_key_ts ON spend_log (key_id, ts_ms);
                 CREATE TABLE spend_daily (
                     day INTEGER NOT NULL,
                     key_id TEXT NOT NULL,
                     key_name TEXT NOT NULL,
                     model TEXT NOT NULL,
                     provider TEXT NOT NULL,
                     route TEXT NOT NULL,
                     requests INTEGER NOT NULL,
                     errors INTEGER NOT NULL,
                     prompt_tokens INTEGER NOT NULL,
                     completion_tokens INTEGER NOT NULL,
                     cached_tokens INTEGER NOT NULL,
                     cache_write_tokens INTEGER NOT NULL,
                     reasoning_tokens INTEGER NOT NULL,
                     cost_nano_usd INTEGER NOT NULL,
                     latency_ms_sum INTEGER NOT NULL,
                     PRIMARY KEY (day, key_id, model, provider, route)
                 );
                 CREATE TABLE budget_spend (
                     key_id TEXT NOT NULL,
                     window TEXT NOT NULL,
                     cost_nano_usd INTEGER NOT NULL,
                     PRIMARY KEY (key_id, window)
                 );
                 CREATE TABLE keys (
                     id TEXT PRIMARY KEY NOT NULL,
                     name TEXT NOT NULL,
                     hash TEXT NOT NULL UNIQUE,
                     hint TEXT NOT NULL,
                     models TEXT NOT NULL,
                     rpm INTEGER,
                     tpm INTEGER,
                     max_concurrent INTEGER,
                     budget_nano_usd INTEGER,
                     budget_period TEXT NOT NULL,
                     metadata TEXT NOT NULL,
                     created_ms INTEGER NOT NULL,
                     expires_ms INTEGER,
                     revoked_ms INTEGER
                 );
                 CREATE INDEX keys_name ON keys (name);
                 PRAGMA user_version = 1;",
            )?;
            Ok(())
        }
        SCHEMA_VERSION => Ok(()),
        other => Err(StoreError::Unavailable(format!(
            "sqlite ledger schema version {other} is newer than this sluice ({SCHEMA_VERSION})"
        ))),
    }
}

struct Writer {
    conn: Connection,
    shared: Arc<Counters>,
    options: LedgerOptions,
    /// Stopping: write what is queued without waiting for more.
    draining: bool,
}

const KEY_COLUMNS: &str = "id, name, hash, hint, models, rpm, tpm, max_concurrent, \
     budget_nano_usd, budget_period, metadata, created_ms, expires_ms, revoked_ms";

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let opt = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(from_sql))
    };
    let models: String = r.get(4)?;
    let period: String = r.get(9)?;
    Ok(KeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        hash: r.get(2)?,
        hint: r.get(3)?,
        models: serde_json::from_str(&models).unwrap_or_default(),
        rpm: opt(5)?,
        tpm: opt(6)?,
        max_concurrent: opt(7)?,
        budget_nano_usd: opt(8)?,
        budget_period: BudgetPeriod::parse(&period).unwrap_or_default(),
        metadata: r.get(10)?,
        created_ms: from_sql(r.get(11)?),
        expires_ms: opt(12)?,
        revoked_ms: opt(13)?,
    })
}

// === impl Writer ===

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        self.maintain();
        let mut next_purge = Instant::now() + PURGE_INTERVAL;
        loop {
            let wait = next_purge.saturating_duration_since(Instant::now());
            let stop = match rx.recv_timeout(wait) {
                Ok(first) => self.batch(first, rx),
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if Instant::now() >= next_purge {
                self.maintain();
                next_purge = Instant::now() + PURGE_INTERVAL;
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

    fn maintain(&mut self) {
        match self.purge(unix_now_ms()) {
            Ok(p) if p != Purged::default() => tracing::debug!(?p, "sqlite ledger: purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sqlite ledger: purge failed"),
        }
    }

    /// Handles `first` and what follows it: records are gathered until `batch_size` of them
    /// are here, `flush_interval` has passed since the first, or a flush, a query or the
    /// shutdown arrives, and are then written in one transaction (so a light, steady load
    /// costs one commit per interval, not one per request); other messages are answered
    /// after it. Returns whether to stop.
    fn batch(&mut self, first: Msg, rx: &mpsc::Receiver<Msg>) -> bool {
        let mut records: Vec<SpendRecord> = Vec::new();
        let mut flushes = Vec::new();
        let mut rest = Vec::new();
        let mut stop = false;
        let deadline = Instant::now() + self.options.flush_interval;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => records.push(*r),
                Msg::Flush(reply) => {
                    flushes.push(reply);
                    break;
                }
                Msg::Shutdown => {
                    stop = true;
                    break;
                }
                other => {
                    // A query: answer it once the records before it are written.
                    rest.push(other);
                    break;
                }
            }
            if records.len() >= self.options.batch_size.max(1) {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::TryRecvError::Disconnected) => None,
                Err(mpsc::TryRecvError::Empty) if self.draining => None,
                Err(mpsc::TryRecvError::Empty) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            stop = true;
                            None
                        }
                    }
                }
            };
        }
        if !records.is_empty() {
            let n = records.len() as u64;
            self.shared.queued.fetch_sub(n, Relaxed);
            match self.write(&records) {
                Ok(()) => {
                    self.shared.written.fetch_add(n, Relaxed);
                }
                Err(e) => {
                    self.shared.errors.fetch_add(n, Relaxed);
                    tracing::warn!(error = %e, records = n, "sqlite ledger: batch write failed");
                }
            }
        }
        for reply in flushes {
            let _ = reply.send(());
        }
        for msg in rest {
            self.answer(msg);
        }
        stop
    }

    fn write(&mut self, records: &[SpendRecord]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let mut sums = BatchSums::default();
        {
            let mut insert = tx.prepare(
                "INSERT INTO spend_log (ts_ms, request_id, key_id, key_name, endpoint, route,
                     model, provider, status, prompt_tokens, completion_tokens, cached_tokens,
                     cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms,
                     cache, attempts, stream, usage_estimated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19, ?20, ?21)",
            )?;
            for r in records {
                insert.execute(params![
                    to_sql(r.ts_ms),
                    r.request_id,
                    r.key_id,
                    r.key_name,
                    r.endpoint,
                    r.route,
                    r.model,
                    r.provider,
                    r.status,
                    to_sql(r.prompt_tokens),
                    to_sql(r.completion_tokens),
                    to_sql(r.cached_tokens),
                    to_sql(r.cache_write_tokens),
                    to_sql(r.reasoning_tokens),
                    to_sql(r.cost_nano_usd),
                    to_sql(r.latency_ms),
                    r.ttft_ms.map(to_sql),
                    r.cache,
                    r.attempts,
                    r.stream,
                    r.usage_estimated,
                ])?;
                sums.add(r);
            }
            let mut rollup = tx.prepare(
                "INSERT INTO spend_daily (day, key_id, key_name, model, provider, route,
                     requests, errors, prompt_tokens, completion_tokens, cached_tokens,
                     cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms_sum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (day, key_id, model, provider, route) DO UPDATE SET
                     key_name = CASE WHEN excluded.key_name = '' THEN key_name
                                     ELSE excluded.key_name END,
                     requests = requests + excluded.requests,
                     errors = errors + excluded.errors,
                     prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                     completion_tokens = completion_tokens + excluded.completion_tokens,
                     cached_tokens = cached_tokens + excluded.cached_tokens,
                     cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
                     reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
                     cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd,
                     latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum",
            )?;
            for (k, s) in &sums.rollups {
                rollup.execute(params![
                    to_sql(k.day),
                    k.key_id,
                    s.key_name,
                    k.model,
                    k.provider,
                    k.route,
                    to_sql(s.requests),
                    to_sql(s.errors),
                    to_sql(s.prompt_tokens),
                    to_sql(s.completion_tokens),
                    to_sql(s.cached_tokens),
                    to_sql(s.cache_write_tokens),
                    to_sql(s.reasoning_tokens),
                    to_sql(s.cost_nano_usd),
                    to_sql(s.latency_ms_sum),
                ])?;
            }
            let mut window = tx.prepare(
                "INSERT INTO budget_spend (key_id, window, cost_nano_usd) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key_id, window) DO UPDATE SET
                     cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd",
            )?;
            for ((key_id, w), cost) in &sums.windows {
                window.execute(params![key_id, w, to_sql(*cost)])?;
            }
        }
        tx.commit()
    }

    fn answer(&mut self, msg: Msg) {
        match msg {
            Msg::Report {
                by,
                since,
                now,
                reply,
            } => {
                let _ = reply.send(self.report(by, since, now).map_err(StoreError::from));
            }
            Msg::Export { since, reply } => {
                let r = (|| {
                    let mut s = self.conn.prepare(&format!(
                        "SELECT {RECORD_COLUMNS} FROM spend_log WHERE ts_ms >= ?1 ORDER BY ts_ms, id"
                    ))?;
                    let rows = s.query_map(params![to_sql(since)], |r| {
                        let n = |i| -> rusqlite::Result<u64> { Ok(from_sql(r.get::<_, i64>(i)?)) };
                        Ok(SpendRecord {
                            ts_ms: n(0)?,
                            request_id: r.get(1)?,
                            key_id: r.get(2)?,
                            key_name: r.get(3)?,
                            endpoint: r.get(4)?,
                            route: r.get(5)?,
                            model: r.get(6)?,
                            provider: r.get(7)?,
                            status: r.get(8)?,
                            prompt_tokens: n(9)?,
                            completion_tokens: n(10)?,
                            cached_tokens: n(11)?,
                            cache_write_tokens: n(12)?,
                            reasoning_tokens: n(13)?,
                            cost_nano_usd: n(14)?,
                            latency_ms: n(15)?,
                            ttft_ms: r.get::<_, Option<i64>>(16)?.map(from_sql),
                            cache: r.get(17)?,
                            attempts: r.get(18)?,
                            stream: r.get(19)?,
                            usage_estimated: r.get(20)?,
                        })
                    })?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })();
                let _ = reply.send(r.map_err(StoreError::from));
            }
            Msg::WindowSpend {
                key_id,
                window,
                reply,
            } => {
                let r = self
                    .conn
                    .query_row(
                        "SELECT cost_nano_usd FROM budget_spend WHERE key_id = ?1 AND window = ?2",
                        params![key_id, window],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                    .map(|v| v.map_or(0, from_sql));
                let _ = reply.send(r.map_err(StoreError::from));
            }
            Msg::Purge { now, reply } => {
                let _ = reply.send(self.purge(now).map_err(StoreError::from));
            }
            Msg::KeyByHash { hash, reply } => {
                let r = self
                    .conn
                    .query_row(
                        &format!("SELECT {KEY_COLUMNS} FROM keys WHERE hash = ?1"),
                        params![hash],
                        key_from_row,
                    )
                    .optional();
                let _ = reply.send(r.map_err(StoreError::from));
            }
            Msg::Key { id, reply } => {
                let r = self
                    .conn
                    .query_row(
                        &format!(
                            "SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1 OR name = ?1
                             ORDER BY id = ?1 DESC, created_ms DESC LIMIT 1"
                        ),
                        params![id],
                        key_from_row,
                    )
                    .optional();
                let _ = reply.send(r.map_err(StoreError::from));
            }
            Msg::Keys(reply) => {
                let r = (|| {
                    let mut s = self.conn.prepare(&format!(
                        "SELECT {KEY_COLUMNS} FROM keys ORDER BY created_ms, id"
                    ))?;
                    let rows = s.query_map([], key_from_row)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })();
                let _ = reply.send(r.map_err(StoreError::from));
            }
            Msg::SaveKey { key, reply } => {
                let _ = reply.send(self.save_key(&key).map_err(StoreError::from));
            }
            Msg::Record(_) | Msg::Flush(_) | Msg::Shutdown => {}
        }
    }

    fn save_key(&mut self, k: &KeyRecord) -> rusqlite::Result<()> {
        let models = serde_json::to_string(&k.models).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            &format!(
                "INSERT INTO keys ({KEY_COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, hash = excluded.hash,
                     hint = excluded.hint, models = excluded.models, rpm = excluded.rpm,
                     tpm = excluded.tpm, max_concurrent = excluded.max_concurrent,
                     budget_nano_usd = excluded.budget_nano_usd,
                     budget_period = excluded.budget_period, metadata = excluded.metadata,
                     created_ms = excluded.created_ms, expires_ms = excluded.expires_ms,
                     revoked_ms = excluded.revoked_ms"
            ),
            params![
                k.id,
                k.name,
                k.hash,
                k.hint,
                models,
                k.rpm.map(to_sql),
                k.tpm.map(to_sql),
                k.max_concurrent.map(to_sql),
                k.budget_nano_usd.map(to_sql),
                k.budget_period.as_str(),
                k.metadata,
                to_sql(k.created_ms),
                k.expires_ms.map(to_sql),
                k.revoked_ms.map(to_sql),
            ],
        )?;
        Ok(())
    }

    fn report(&mut self, by: Dimension, since: UnixMs, now: UnixMs) -> rusqlite::Result<Report> {
        let from_rollups = reads_rollups(since, now, self.options.retention_days);
        let col = by.column();
        let sql = if from_rollups {
            format!(
                "SELECT coalesce(nullif({col}, ''), '-') AS g, sum(requests), sum(errors),
                     sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens),
                     sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nano_usd)
                 FROM spend_daily WHERE day >= ?1 GROUP BY g
                 ORDER BY sum(cost_nano_usd) DESC, g"
            )
        } else {
            format!(
                "SELECT coalesce(nullif({col}, ''), '-') AS g, count(*), sum(status >= 400),
                     sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens),
                     sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nano_usd)
                 FROM spend_log WHERE ts_ms >= ?1 GROUP BY g
                 ORDER BY sum(cost_nano_usd) DESC, g"
            )
        };
        let bound = if from_rollups { since / DAY_MS } else { since };
        let mut s = self.conn.prepare(&sql)?;
        let rows = s.query_map(params![to_sql(bound)], |r| {
            let n = |i| -> rusqlite::Result<u64> { Ok(from_sql(r.get::<_, i64>(i)?)) };
            Ok(ReportRow {
                group: r.get(0)?,
                requests: n(1)?,
                errors: n(2)?,
                prompt_tokens: n(3)?,
                completion_tokens: n(4)?,
                cached_tokens: n(5)?,
                cache_write_tokens: n(6)?,
                reasoning_tokens: n(7)?,
                cost_nano_usd: n(8)?,
            })
        })?;
        Ok(Report {
            rows: rows.collect::<rusqlite::Result<_>>()?,
            from_rollups,
        })
    }

    fn purge(&mut self, now: UnixMs) -> rusqlite::Result<Purged> {
        let tx = self.conn.transaction()?;
        let mut purged = Purged::default();
        if self.options.retention_days > 0 {
            let horizon = now.saturating_sub(self.options.retention_days * DAY_MS);
            purged.records = tx.execute(
                "DELETE FROM spend_log WHERE ts_ms < ?1",
                params![to_sql(horizon)],
            )? as u64;
        }
        if self.options.rollup_retention_days > 0 {
            let horizon = now.saturating_sub(self.options.rollup_retention_days * DAY_MS);
            purged.rollups = tx.execute(
                "DELETE FROM spend_daily WHERE day < ?1",
                params![to_sql(horizon / DAY_MS)],
            )? as u64;
        }
        let (day, month) = current_windows(now);
        purged.windows = tx.execute(
            "DELETE FROM budget_spend WHERE (window LIKE 'd:%' AND window < ?1)
                 OR (window LIKE 'm:%' AND window < ?2)",
            params![day, month],
        )? as u64;
        tx.commit()?;
        Ok(purged)
    }
}

/// The group a record adds to in `spend_daily`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RollupKey {
    day: u64,
    key_id: String,
    model: String,
    provider: String,
    route: String,
}

/// Sums of one roll-up group within a batch.
#[derive(Debug, Clone, Default)]
struct RollupSums {
    key_name: String,
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cost_nano_usd: u64,
    latency_ms_sum: u64,
}

/// A batch's additions to `spend_daily` and `budget_spend`.
#[derive(Debug, Default)]
struct BatchSums {
    rollups: HashMap<RollupKey, RollupSums>,
    windows: HashMap<(String, String), u64>,
}

impl BatchSums {
    fn add(&mut self, r: &SpendRecord) {
        let key = RollupKey {
            day: r.ts_ms / DAY_MS,
            key_id: r.key_id.clone().unwrap_or_default(),
            model: r.model.clone().unwrap_or_default(),
            provider: r.provider.clone().unwrap_or_default(),
            route: r.route.clone().unwrap_or_default(),
        };
        let s = self.rollups.entry(key).or_default();
        if let Some(name) = &r.key_name {
            s.key_name.clone_from(name);
        }
        s.requests += 1;
        s.errors += u64::from(r.status >= 400);
        s.prompt_tokens += r.prompt_tokens;
        s.completion_tokens += r.completion_tokens;
        s.cached_tokens += r.cached_tokens;
        s.cache_write_tokens += r.cache_write_tokens;
        s.reasoning_tokens += r.reasoning_tokens;
        s.cost_nano_usd += r.cost_nano_usd;
        s.latency_ms_sum += r.latency_ms;
        if let (Some(id), true) = (&r.key_id, r.cost_nano_usd > 0) {
            for period in [BudgetPeriod::Total, BudgetPeriod::Day, BudgetPeriod::Month] {
                let (window, _) = period.window(r.ts_ms);
                *self.windows.entry((id.clone(), window)).or_default() += r.cost_nano_usd;
            }
        }
    }
}

/// Which source a report reads, by the retention in force.
fn reads_rollups(since: UnixMs, now: UnixMs, retention_days: u64) -> bool {
    retention_days > 0 && since < now.saturating_sub(retention_days * DAY_MS)
}

/// Ended budget windows: day windows before today's and month windows before this month's
/// sort below these names.
fn current_windows(now: UnixMs) -> (String, String) {
    (
        BudgetPeriod::Day.window(now).0,
        BudgetPeriod::Month.window(now).0,
    )
}
