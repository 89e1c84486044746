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

use crate::ledger::counters::Counters;
use crate::ledger::protocol::{Msg, Reply, RECORD_COLUMNS};
use crate::ledger::types::{
    BudgetPeriod, Dimension, KeyRecord, LedgerOptions, Purged, Report, ReportRow, SpendRecord,
    DAY_MS,
};
use crate::{unix_now_ms, StoreError, UnixMs};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

/// The schema version this code reads and writes (in `sluice_schema`).
const SCHEMA_VERSION: i32 = 1;

/// Tries a record gets before it is given up and counted in [`PgLedger::errors`].
pub const MAX_ATTEMPTS: u32 = 6;

/// Connect timeout unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time limit of one batch or query; past it the connection is dropped and made anew.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Time limit of a purge (the first after enabling retention may delete a lot).
const PURGE_TIMEOUT: Duration = Duration::from_secs(600);

/// First wait after a failure; doubled at each failure in a row up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the writer purges.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Messages the writer handles at most between two looks at its timers.
const DRAIN_LIMIT: usize = 1024;

/// The advisory lock that serializes schema creation across replicas ("sluice" + 1).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_0001;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS spend_log (
    id BIGSERIAL PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    key_name TEXT,
    endpoint TEXT NOT NULL,
    route TEXT,
    model TEXT,
    provider TEXT,
    status INTEGER NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_nano_usd BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    cache TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    stream BOOLEAN NOT NULL,
    usage_estimated BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_log_ts_ms ON spend_log (ts_ms);
CREATE INDEX IF NOT EXISTS spend_log_key_id_ts_ms ON spend_log (key_id, ts_ms);
CREATE TABLE IF NOT EXISTS spend_daily (
    day BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_nano_usd BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    PRIMARY KEY (day, key_id, model, provider, route)
);
CREATE TABLE IF NOT EXISTS budget_spend (
    key_id TEXT NOT NULL,
    "window" TEXT NOT NULL,
    cost_nano_usd BIGINT NOT NULL,
    PRIMARY KEY (key_id, "window")
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    models TEXT NOT NULL,
    rpm BIGINT,
    tpm BIGINT,
    max_concurrent BIGINT,
    budget_nano_usd BIGINT,
    budget_period TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    revoked_ms BIGINT
);
"#;

const INSERT_LOG: &str = "INSERT INTO spend_log (ts_ms, request_id, key_id, key_name, endpoint,
        route, model, provider, status, prompt_tokens, completion_tokens, cached_tokens,
        cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms, ttft_ms, cache,
        attempts, stream, usage_estimated)
    SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
        $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::INTEGER[], $10::BIGINT[], $11::BIGINT[],
        $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::BIGINT[],
        $17::BIGINT[], $18::TEXT[], $19::INTEGER[], $20::BOOLEAN[], $21::BOOLEAN[])";

const UPSERT_DAILY: &str = "INSERT INTO spend_daily AS t (day, key_id, key_name, model,
        provider, route, requests, errors, prompt_tokens, completion_tokens, cached_tokens,
        cache_write_tokens, reasoning_tokens, cost_nano_usd, latency_ms_sum)
    SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
        $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[],
        $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[])
    ON CONFLICT (day, key_id, model, provider, route) DO UPDATE SET
        key_name = EXCLUDED.key_name,
        requests = t.requests + EXCLUDED.requests,
        errors = t.errors + EXCLUDED.errors,
        prompt_tokens = t.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = t.completion_tokens + EXCLUDED.completion_tokens,
        cached_tokens = t.cached_tokens + EXCLUDED.cached_tokens,
        cache_write_tokens = t.cache_write_tokens + EXCLUDED.cache_write_tokens,
        reasoning_tokens = t.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano_usd = t.cost_nano_usd + EXCLUDED.cost_nano_usd,
        latency_ms_sum = t.latency_ms_sum + EXCLUDED.latency_ms_sum";

const UPSERT_BUDGET: &str = r#"INSERT INTO budget_spend AS t (key_id, "window", cost_nano_usd)
    SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[])
    ON CONFLICT (key_id, "window") DO UPDATE SET
        cost_nano_usd = t.cost_nano_usd + EXCLUDED.cost_nano_usd"#;

const WINDOW_SPEND: &str =
    r#"SELECT cost_nano_usd FROM budget_spend WHERE key_id = $1 AND "window" = $2"#;

/// The columns of `keys`, in [`key_from_row`]'s order.
const KEY_COLUMNS: &str = "id, name, hash, hint, models, rpm, tpm, max_concurrent, \
    budget_nano_usd, budget_period, metadata, created_ms, expires_ms, revoked_ms";

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn opt_to_sql(n: Option<u64>) -> Option<i64> {
    n.map(to_sql)
}

fn opt_from_sql(n: Option<i64>) -> Option<u64> {
    n.map(from_sql)
}

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
        let mut config: Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        let shared = Arc::new(Counters::default());
        let max_queued = options.max_queued as u64;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-pg-ledger".into())
            .spawn(move || writer_thread(config, options, thread_shared, rx, ready_tx))?;
        let started = ready_rx.recv();
        match started {
            Ok(Ok(())) => Ok(Self {
                inner: Arc::new(Inner {
                    tx,
                    shared,
                    max_queued,
                    thread: Some(thread),
                }),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StoreError::Unavailable(
                    "postgres ledger writer failed to start".into(),
                ))
            }
        }
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

fn writer_thread(
    config: Config,
    options: LedgerOptions,
    shared: Arc<Counters>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    ready: std::sync::mpsc::SyncSender<Result<(), StoreError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    runtime.block_on(async move {
        let mut writer = Writer::new(config, options, shared);
        if let Err(e) = writer.start().await {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        writer.purge_now().await;
        writer.run(&mut rx).await;
        writer.stop(&mut rx).await;
    });
}

/// Runs `fut` within `limit`.
async fn within<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| StoreError::Timeout(limit))?
}

/// Connects, and drives the connection on this thread's runtime.
async fn connect(config: &Config) -> Result<Client, StoreError> {
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT)
        + Duration::from_secs(5);
    let (client, connection) = within(limit, async {
        config.connect(NoTls).await.map_err(StoreError::from)
    })
    .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres ledger connection ended");
        }
    });
    Ok(client)
}

/// Creates the schema if absent, under an advisory lock; refuses a newer one.
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS sluice_schema (version INTEGER NOT NULL);"
    ))
    .await?;
    let version: Option<i32> = tx
        .query_one("SELECT max(version) FROM sluice_schema", &[])
        .await?
        .try_get(0)?;
    if let Some(v) = version.filter(|&v| v > SCHEMA_VERSION) {
        return Err(StoreError::Unavailable(format!(
            "postgres ledger schema version {v} is newer than this sluice ({SCHEMA_VERSION})"
        )));
    }
    tx.batch_execute(SCHEMA).await?;
    if version.is_none() {
        tx.execute(
            "INSERT INTO sluice_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    insert_log: Statement,
    upsert_daily: Statement,
    upsert_budget: Statement,
    window_spend: Statement,
    key_by_hash: Statement,
    key: Statement,
    keys: Statement,
    save_key: Statement,
}

impl Conn {
    async fn prepare(client: Client) -> Result<Self, StoreError> {
        let by_hash = format!("SELECT {KEY_COLUMNS} FROM keys WHERE hash = $1");
        let key = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE id = $1 OR name = $1
             ORDER BY (id = $1) DESC, created_ms DESC, id DESC LIMIT 1"
        );
        let keys = format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_ms, id");
        let save = format!(
            "INSERT INTO keys ({KEY_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, hash = EXCLUDED.hash,
                 hint = EXCLUDED.hint, models = EXCLUDED.models, rpm = EXCLUDED.rpm,
                 tpm = EXCLUDED.tpm, max_concurrent = EXCLUDED.max_concurrent,
                 budget_nano_usd = EXCLUDED.budget_nano_usd,
                 budget_period = EXCLUDED.budget_period, metadata = EXCLUDED.metadata,
                 created_ms = EXCLUDED.created_ms, expires_ms = EXCLUDED.expires_ms,
                 revoked_ms = EXCLUDED.revoked_ms"
        );
        // Pipelined: one round trip for all of them.
        let (insert_log, upsert_daily, upsert_budget, window_spend, key_by_hash, key, keys, save) =
            tokio::try_join!(
                client.prepare(INSERT_LOG),
                client.prepare(UPSERT_DAILY),
                client.prepare(UPSERT_BUDGET),
                client.prepare(WINDOW_SPEND),
                client.prepare(&by_hash),
                client.prepare(&key),
                client.prepare(&keys),
                client.prepare(&save),
            )?;
        Ok(Self {
            client,
            insert_log,
            upsert_daily,
            upsert_budget,
            window_spend,
            key_by_hash,
            key,
            keys,
            save_key: save,
        })
    }

    /// Writes `batch` with its roll-ups and budget windows in one transaction.
    async fn write(&mut self, batch: &[Pending]) -> Result<(), StoreError> {
        let log_columns = LogColumns::new(batch);
        let sums = Sums::new(batch);
        let daily_columns = DailyColumns::new(&sums);
        let budget_columns = BudgetColumns::new(&sums);
        let (log, daily, budget) = (
            log_columns.params(),
            daily_columns.params(),
            budget_columns.params(),
        );
        let tx = self.client.transaction().await?;
        // Pipelined: the three statements go in one round trip.
        tokio::try_join!(
            tx.execute(&self.insert_log, &log),
            tx.execute(&self.upsert_daily, &daily),
            tx.execute(&self.upsert_budget, &budget),
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn report(
        &self,
        by: Dimension,
        since: UnixMs,
        now: UnixMs,
        retention_days: u64,
    ) -> Result<Report, StoreError> {
        let raw = retention_days == 0
            || since >= now.saturating_sub(retention_days.saturating_mul(DAY_MS));
        let group = format!("COALESCE(NULLIF({}, ''), '-')", by.column());
        let (table, requests, errors, since_column, since_value) = if raw {
            (
                "spend_log",
                "count(*)",
                "count(*) FILTER (WHERE status >= 400)",
                "ts_ms",
                to_sql(since),
            )
        } else {
            (
                "spend_daily",
                "sum(requests)",
                "sum(errors)",
                "day",
                to_sql(since / DAY_MS),
            )
        };
        let sql = format!(
            "SELECT {group}, {requests}::BIGINT, COALESCE({errors}, 0)::BIGINT,
                 COALESCE(sum(prompt_tokens), 0)::BIGINT,
                 COALESCE(sum(completion_tokens), 0)::BIGINT,
                 COALESCE(sum(cached_tokens), 0)::BIGINT,
                 COALESCE(sum(cache_write_tokens), 0)::BIGINT,
                 COALESCE(sum(reasoning_tokens), 0)::BIGINT,
                 COALESCE(sum(cost_nano_usd), 0)::BIGINT
             FROM {table} WHERE {since_column} >= $1
             GROUP BY 1 ORDER BY 9 DESC, {group} COLLATE \"C\""
        );
        let rows = self.client.query(&sql, &[&since_value]).await?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok(ReportRow {
                    group: r.try_get(0)?,
                    requests: from_sql(r.try_get(1)?),
                    errors: from_sql(r.try_get(2)?),
                    prompt_tokens: from_sql(r.try_get(3)?),
                    completion_tokens: from_sql(r.try_get(4)?),
                    cached_tokens: from_sql(r.try_get(5)?),
                    cache_write_tokens: from_sql(r.try_get(6)?),
                    reasoning_tokens: from_sql(r.try_get(7)?),
                    cost_nano_usd: from_sql(r.try_get(8)?),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        Ok(Report {
            rows,
            from_rollups: !raw,
        })
    }

    async fn export(&self, since: UnixMs) -> Result<Vec<SpendRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM spend_log WHERE ts_ms >= $1 ORDER BY ts_ms, id",
            RECORD_COLUMNS
        );
        let rows = self.client.query(&sql, &[&to_sql(since)]).await?;
        rows.iter()
            .map(|r| {
                let n = |i| -> Result<u64, tokio_postgres::Error> { Ok(from_sql(r.try_get(i)?)) };
                let status: i32 = r.try_get(8)?;
                let attempts: i32 = r.try_get(18)?;
                Ok(SpendRecord {
                    ts_ms: n(0)?,
                    request_id: r.try_get(1)?,
                    key_id: r.try_get(2)?,
                    key_name: r.try_get(3)?,
                    endpoint: r.try_get(4)?,
                    route: r.try_get(5)?,
                    model: r.try_get(6)?,
                    provider: r.try_get(7)?,
                    status: u16::try_from(status).unwrap_or(0),
                    prompt_tokens: n(9)?,
                    completion_tokens: n(10)?,
                    cached_tokens: n(11)?,
                    cache_write_tokens: n(12)?,
                    reasoning_tokens: n(13)?,
                    cost_nano_usd: n(14)?,
                    latency_ms: n(15)?,
                    ttft_ms: opt_from_sql(r.try_get(16)?),
                    cache: r.try_get(17)?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    stream: r.try_get(19)?,
                    usage_estimated: r.try_get(20)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(StoreError::from)
    }

    async fn window_spend(&self, key_id: &str, window: &str) -> Result<u64, StoreError> {
        let row = self
            .client
            .query_opt(&self.window_spend, &[&key_id, &window])
            .await?;
        Ok(match row {
            Some(row) => from_sql(row.try_get(0)?),
            None => 0,
        })
    }

    async fn purge(&mut self, now: UnixMs, options: &Retention) -> Result<Purged, StoreError> {
        let tx = self.client.transaction().await?;
        let mut purged = Purged::default();
        if options.raw_days > 0 {
            let before = now.saturating_sub(options.raw_days.saturating_mul(DAY_MS));
            purged.records = tx
                .execute("DELETE FROM spend_log WHERE ts_ms < $1", &[&to_sql(before)])
                .await?;
        }
        if options.rollup_days > 0 {
            let before = (now / DAY_MS).saturating_sub(options.rollup_days);
            purged.rollups = tx
                .execute("DELETE FROM spend_daily WHERE day < $1", &[&to_sql(before)])
                .await?;
        }
        let (today, _) = BudgetPeriod::Day.window(now);
        let (this_month, _) = BudgetPeriod::Month.window(now);
        purged.windows = tx
            .execute(
                r#"DELETE FROM budget_spend
                   WHERE (left("window", 2) = 'd:' AND "window" COLLATE "C" < $1)
                      OR (left("window", 2) = 'm:' AND "window" COLLATE "C" < $2)"#,
                &[&today, &this_month],
            )
            .await?;
        tx.commit().await?;
        Ok(purged)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = self.client.query_opt(&self.key_by_hash, &[&hash]).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = self.client.query_opt(&self.key, &[&id]).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.client.query(&self.keys, &[]).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn save_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let models = serde_json::to_string(&key.models)
            .map_err(|e| StoreError::Protocol(format!("key models: {e}")))?;
        let metadata = if key.metadata.is_empty() {
            "{}"
        } else {
            key.metadata.as_str()
        };
        self.client
            .execute(
                &self.save_key,
                &[
                    &key.id,
                    &key.name,
                    &key.hash,
                    &key.hint,
                    &models,
                    &opt_to_sql(key.rpm),
                    &opt_to_sql(key.tpm),
                    &opt_to_sql(key.max_concurrent),
                    &opt_to_sql(key.budget_nano_usd),
                    &key.budget_period.as_str(),
                    &metadata,
                    &to_sql(key.created_ms),
                    &opt_to_sql(key.expires_ms),
                    &opt_to_sql(key.revoked_ms),
                ],
            )
            .await?;
        Ok(())
    }
}

fn key_from_row(row: &Row) -> Result<KeyRecord, StoreError> {
    let id: String = row.try_get(0)?;
    let models: String = row.try_get(4)?;
    let models = if models.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&models).map_err(|e| {
            StoreError::Protocol(format!(
                "keys.models of {id} is not a JSON string array: {e}"
            ))
        })?
    };
    let period: String = row.try_get(9)?;
    let budget_period = BudgetPeriod::parse(&period)
        .ok_or_else(|| StoreError::Protocol(format!("keys.budget_period of {id} is {period:?}")))?;
    Ok(KeyRecord {
        id,
        name: row.try_get(1)?,
        hash: row.try_get(2)?,
        hint: row.try_get(3)?,
        models,
        rpm: opt_from_sql(row.try_get(5)?),
        tpm: opt_from_sql(row.try_get(6)?),
        max_concurrent: opt_from_sql(row.try_get(7)?),
        budget_nano_usd: opt_from_sql(row.try_get(8)?),
        budget_period,
        metadata: row.try_get(10)?,
        created_ms: from_sql(row.try_get(11)?),
        expires_ms: opt_from_sql(row.try_get(12)?),
        revoked_ms: opt_from_sql(row.try_get(13)?),
    })
}

/// A batch's records as the columns of the `UNNEST` insert.
struct LogColumns<'a> {
    ts_ms: Vec<i64>,
    request_id: Vec<&'a str>,
    key_id: Vec<Option<&'a str>>,
    key_name: Vec<Option<&'a str>>,
    endpoint: Vec<&'a str>,
    route: Vec<Option<&'a str>>,
    model: Vec<Option<&'a str>>,
    provider: Vec<Option<&'a str>>,
    status: Vec<i32>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    cached_tokens: Vec<i64>,
    cache_write_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    cost_nano_usd: Vec<i64>,
    latency_ms: Vec<i64>,
    ttft_ms: Vec<Option<i64>>,
    cache: Vec<&'a str>,
    attempts: Vec<i32>,
    stream: Vec<bool>,
    usage_estimated: Vec<bool>,
}

impl<'a> LogColumns<'a> {
    fn new(batch: &'a [Pending]) -> Self {
        let n = batch.len();
        let mut c = Self {
            ts_ms: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            key_id: Vec::with_capacity(n),
            key_name: Vec::with_capacity(n),
            endpoint: Vec::with_capacity(n),
            route: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            provider: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            prompt_tokens: Vec::with_capacity(n),
            completion_tokens: Vec::with_capacity(n),
            cached_tokens: Vec::with_capacity(n),
            cache_write_tokens: Vec::with_capacity(n),
            reasoning_tokens: Vec::with_capacity(n),
            cost_nano_usd: Vec::with_capacity(n),
            latency_ms: Vec::with_capacity(n),
            ttft_ms: Vec::with_capacity(n),
            cache: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            stream: Vec::with_capacity(n),
            usage_estimated: Vec::with_capacity(n),
        };
        for p in batch {
            let r = &p.record;
            c.ts_ms.push(to_sql(r.ts_ms));
            c.request_id.push(&r.request_id);
            c.key_id.push(r.key_id.as_deref());
            c.key_name.push(r.key_name.as_deref());
            c.endpoint.push(&r.endpoint);
            c.route.push(r.route.as_deref());
            c.model.push(r.model.as_deref());
            c.provider.push(r.provider.as_deref());
            c.status.push(i32::from(r.status));
            c.prompt_tokens.push(to_sql(r.prompt_tokens));
            c.completion_tokens.push(to_sql(r.completion_tokens));
            c.cached_tokens.push(to_sql(r.cached_tokens));
            c.cache_write_tokens.push(to_sql(r.cache_write_tokens));
            c.reasoning_tokens.push(to_sql(r.reasoning_tokens));
            c.cost_nano_usd.push(to_sql(r.cost_nano_usd));
            c.latency_ms.push(to_sql(r.latency_ms));
            c.ttft_ms.push(opt_to_sql(r.ttft_ms));
            c.cache.push(&r.cache);
            c.attempts
                .push(i32::try_from(r.attempts).unwrap_or(i32::MAX));
            c.stream.push(r.stream);
            c.usage_estimated.push(r.usage_estimated);
        }
        c
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 21] {
        [
            &self.ts_ms,
            &self.request_id,
            &self.key_id,
            &self.key_name,
            &self.endpoint,
            &self.route,
            &self.model,
            &self.provider,
            &self.status,
            &self.prompt_tokens,
            &self.completion_tokens,
            &self.cached_tokens,
            &self.cache_write_tokens,
            &self.reasoning_tokens,
            &self.cost_nano_usd,
            &self.latency_ms,
            &self.ttft_ms,
            &self.cache,
            &self.attempts,
            &self.stream,
            &self.usage_estimated,
        ]
    }
}

/// A roll-up row's primary key: day, key_id, model, provider, route (`''` for none).
type DailyKey<'a> = (i64, &'a str, &'a str, &'a str, &'a str);

/// What a batch adds to one roll-up row.
#[derive(Default)]
struct DailySum<'a> {
    key_name: &'a str,
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

/// A batch summed into roll-up rows and budget windows, in primary-key order.
struct Sums<'a> {
    daily: BTreeMap<DailyKey<'a>, DailySum<'a>>,
    budget: BTreeMap<(&'a str, String), u64>,
}

impl<'a> Sums<'a> {
    fn new(batch: &'a [Pending]) -> Self {
        let mut daily: BTreeMap<DailyKey<'a>, DailySum<'a>> = BTreeMap::new();
        let mut budget: BTreeMap<(&'a str, String), u64> = BTreeMap::new();
        for p in batch {
            let r = &p.record;
            let key_id = r.key_id.as_deref().unwrap_or("");
            let key = (
                to_sql(r.ts_ms / DAY_MS),
                key_id,
                r.model.as_deref().unwrap_or(""),
                r.provider.as_deref().unwrap_or(""),
                r.route.as_deref().unwrap_or(""),
            );
            let s = daily.entry(key).or_default();
            // The latest name wins (a key renamed during the day).
            s.key_name = r.key_name.as_deref().unwrap_or("");
            s.requests += 1;
            s.errors += u64::from(r.status >= 400);
            s.prompt_tokens = s.prompt_tokens.saturating_add(r.prompt_tokens);
            s.completion_tokens = s.completion_tokens.saturating_add(r.completion_tokens);
            s.cached_tokens = s.cached_tokens.saturating_add(r.cached_tokens);
            s.cache_write_tokens = s.cache_write_tokens.saturating_add(r.cache_write_tokens);
            s.reasoning_tokens = s.reasoning_tokens.saturating_add(r.reasoning_tokens);
            s.cost_nano_usd = s.cost_nano_usd.saturating_add(r.cost_nano_usd);
            s.latency_ms_sum = s.latency_ms_sum.saturating_add(r.latency_ms);
            if let Some(key_id) = r.key_id.as_deref() {
                for period in [BudgetPeriod::Total, BudgetPeriod::Day, BudgetPeriod::Month] {
                    let (window, _) = period.window(r.ts_ms);
                    let spent = budget.entry((key_id, window)).or_default();
                    *spent = spent.saturating_add(r.cost_nano_usd);
                }
            }
        }
        Self { daily, budget }
    }
}

/// Roll-up rows as the columns of the `UNNEST` upsert.
struct DailyColumns<'a> {
    day: Vec<i64>,
    key_id: Vec<&'a str>,
    key_name: Vec<&'a str>,
    model: Vec<&'a str>,
    provider: Vec<&'a str>,
    route: Vec<&'a str>,
    sums: [Vec<i64>; 9],
}

impl<'a> DailyColumns<'a> {
    fn new(sums: &Sums<'a>) -> Self {
        let mut c = Self {
            day: Vec::new(),
            key_id: Vec::new(),
            key_name: Vec::new(),
            model: Vec::new(),
            provider: Vec::new(),
            route: Vec::new(),
            sums: Default::default(),
        };
        for (&(day, key_id, model, provider, route), s) in &sums.daily {
            c.day.push(day);
            c.key_id.push(key_id);
            c.key_name.push(s.key_name);
            c.model.push(model);
            c.provider.push(provider);
            c.route.push(route);
            let values = [
                s.requests,
                s.errors,
                s.prompt_tokens,
                s.completion_tokens,
                s.cached_tokens,
                s.cache_write_tokens,
                s.reasoning_tokens,
                s.cost_nano_usd,
                s.latency_ms_sum,
            ];
            for (column, v) in c.sums.iter_mut().zip(values) {
                column.push(to_sql(v));
            }
        }
        c
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        let [a, b, c, d, e, f, g, h, i] = &self.sums;
        [
            &self.day,
            &self.key_id,
            &self.key_name,
            &self.model,
            &self.provider,
            &self.route,
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            i,
        ]
    }
}

/// Budget windows as the columns of the `UNNEST` upsert.
struct BudgetColumns<'a> {
    key_id: Vec<&'a str>,
    window: Vec<&'a str>,
    cost_nano_usd: Vec<i64>,
}

impl<'a> BudgetColumns<'a> {
    fn new(sums: &'a Sums<'a>) -> Self {
        let mut c = Self {
            key_id: Vec::new(),
            window: Vec::new(),
            cost_nano_usd: Vec::new(),
        };
        for ((key_id, window), &cost) in &sums.budget {
            c.key_id.push(*key_id);
            c.window.push(window.as_str());
            c.cost_nano_usd.push(to_sql(cost));
        }
        c
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 3] {
        [&self.key_id, &self.window, &self.cost_nano_usd]
    }
}

/// A record waiting for the writer.
struct Pending {
    record: Box<SpendRecord>,
    /// When the writer received it.
    arrived: Instant,
    /// Failed tries so far.
    attempts: u32,
}

/// The retention settings, copied out of the options for the queries.
#[derive(Clone, Copy)]
struct Retention {
    raw_days: u64,
    rollup_days: u64,
}

/// Why [`Link::get`] has no connection to give.
enum NoConn {
    /// Backing off after a failed connect: no attempt before this.
    Waiting(Instant),
    /// The connect attempt just made failed.
    Failed(StoreError),
}

impl From<NoConn> for StoreError {
    fn from(e: NoConn) -> Self {
        match e {
            NoConn::Waiting(at) => StoreError::Unavailable(format!(
                "postgres unreachable, next connect attempt in {:?}",
                at.saturating_duration_since(Instant::now())
            )),
            NoConn::Failed(e) => e,
        }
    }
}

/// The connection: made anew when it breaks, with backoff between failed connects.
struct Link {
    config: Config,
    conn: Option<Conn>,
    /// No connect attempt before this (set after a failed one).
    connect_at: Option<Instant>,
    backoff: Duration,
}

impl Link {
    /// The connection, connecting if there is none and the backoff allows.
    async fn get(&mut self) -> Result<&mut Conn, NoConn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            tracing::info!("postgres ledger: connection lost, reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            if let Some(at) = self.connect_at.filter(|&at| Instant::now() < at) {
                return Err(NoConn::Waiting(at));
            }
            let connected = match connect(&self.config).await {
                Ok(client) => within(OP_TIMEOUT, Conn::prepare(client)).await,
                Err(e) => Err(e),
            };
            match connected {
                Ok(conn) => {
                    tracing::info!("postgres ledger: connected");
                    self.connect_at = None;
                    self.backoff = BACKOFF_MIN;
                    self.conn = Some(conn);
                }
                Err(e) => {
                    self.connect_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return Err(NoConn::Failed(e));
                }
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| NoConn::Failed(StoreError::Unavailable("postgres not connected".into())))
    }

    /// Runs `op` on the connection within `limit`. On a timeout or a broken connection the
    /// connection is dropped, to be made anew at the next use.
    async fn run<T>(
        &mut self,
        limit: Duration,
        op: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.get().await?;
        let result = within(limit, op(conn)).await;
        if let Err(e) = &result {
            self.check(e);
        }
        result
    }

    /// After `e` from an operation on the connection: drops the connection if `e` means it
    /// is unusable (a timeout, or closed); returns whether it did.
    fn check(&mut self, e: &StoreError) -> bool {
        let broken = matches!(e, StoreError::Timeout(_))
            || self.conn.as_ref().is_none_or(|c| c.client.is_closed());
        if broken {
            self.conn = None;
        }
        broken
    }
}

/// The writer task's state.
struct Writer {
    link: Link,
    shared: Arc<Counters>,
    batch_size: usize,
    flush_interval: Duration,
    retention: Retention,
    pending: VecDeque<Pending>,
    /// No batch written before this (set after a failed one).
    retry_at: Option<Instant>,
    /// The wait after the next failed batch.
    backoff: Duration,
    /// Records received since open.
    received: u64,
    /// Flushes waiting, with the count of records received before each.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    next_purge: Instant,
}

impl Writer {
    fn new(config: Config, options: LedgerOptions, shared: Arc<Counters>) -> Self {
        Self {
            link: Link {
                config,
                conn: None,
                connect_at: None,
                backoff: BACKOFF_MIN,
            },
            shared,
            batch_size: options.batch_size.max(1),
            flush_interval: options.flush_interval,
            retention: Retention {
                raw_days: options.retention_days,
                rollup_days: options.rollup_retention_days,
            },
            pending: VecDeque::new(),
            retry_at: None,
            backoff: BACKOFF_MIN,
            received: 0,
            flushes: Vec::new(),
            next_purge: Instant::now() + PURGE_INTERVAL,
        }
    }

    /// Connects and creates the schema: what [`PgLedger::open`] waits for.
    async fn start(&mut self) -> Result<(), StoreError> {
        let mut client = connect(&self.link.config).await?;
        within(OP_TIMEOUT, migrate(&mut client)).await?;
        let conn = within(OP_TIMEOUT, Conn::prepare(client)).await?;
        self.link.conn = Some(conn);
        Ok(())
    }

    async fn purge_now(&mut self) {
        let retention = self.retention;
        let now = unix_now_ms();
        match self
            .link
            .run(PURGE_TIMEOUT, async |c| c.purge(now, &retention).await)
            .await
        {
            Ok(p) if p != Purged::default() => {
                tracing::debug!(
                    records = p.records,
                    rollups = p.rollups,
                    windows = p.windows,
                    "postgres ledger purged"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "postgres ledger purge failed"),
        }
        self.next_purge = Instant::now() + PURGE_INTERVAL;
    }

    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        loop {
            let wake = self.next_wake();
            let first = tokio::select! {
                biased;
                msg = rx.recv() => Some(msg),
                () = tokio::time::sleep_until(wake) => None,
            };
            if let Some(first) = first {
                let mut next = first;
                let mut handled = 0;
                loop {
                    match next {
                        None | Some(Msg::Shutdown) => return,
                        Some(msg) => self.handle(msg).await,
                    }
                    handled += 1;
                    if handled >= DRAIN_LIMIT || self.pending.len() >= self.batch_size {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(msg) => next = Some(msg),
                        Err(_) => break,
                    }
                }
            }
            self.tick().await;
        }
    }

    /// When the loop must wake up without a message: the next batch due, or the purge.
    fn next_wake(&self) -> Instant {
        let Some(front) = self.pending.front() else {
            return self.next_purge;
        };
        let mut due = if self.pending.len() >= self.batch_size || !self.flushes.is_empty() {
            Instant::now()
        } else {
            front.arrived + self.flush_interval
        };
        if let Some(at) = self.retry_at {
            due = due.max(at);
        }
        due.min(self.next_purge)
    }

    fn due(&self, now: Instant) -> bool {
        let Some(front) = self.pending.front() else {
            return false;
        };
        if self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        self.pending.len() >= self.batch_size
            || !self.flushes.is_empty()
            || now >= front.arrived + self.flush_interval
    }

    /// Writes the batches that are due, answers the flushes they complete, purges on time.
    async fn tick(&mut self) {
        while self.due(Instant::now()) {
            self.write_batch().await;
            self.answer_flushes();
        }
        self.answer_flushes();
        if Instant::now() >= self.next_purge {
            self.purge_now().await;
        }
    }

    async fn handle(&mut self, msg: Msg) {
        let retention = self.retention;
        let link = &mut self.link;
        match msg {
            Msg::Record(record) => {
                self.received += 1;
                self.pending.push_back(Pending {
                    record,
                    arrived: Instant::now(),
                    attempts: 0,
                });
            }
            Msg::Flush(reply) => self.flushes.push((self.received, reply)),
            Msg::Report {
                by,
                since,
                now,
                reply,
            } => {
                let days = retention.raw_days;
                let r = link
                    .run(OP_TIMEOUT, async |c| c.report(by, since, now, days).await)
                    .await;
                let _ = reply.send(r);
            }
            Msg::Export { since, reply } => {
                let r = link
                    .run(PURGE_TIMEOUT, async |c| c.export(since).await)
                    .await;
                let _ = reply.send(r);
            }
            Msg::WindowSpend {
                key_id,
                window,
                reply,
            } => {
                let r = link
                    .run(OP_TIMEOUT, async |c| c.window_spend(&key_id, &window).await)
                    .await;
                let _ = reply.send(r);
            }
            Msg::Purge { now, reply } => {
                let r = link
                    .run(PURGE_TIMEOUT, async |c| c.purge(now, &retention).await)
                    .await;
                let _ = reply.send(r);
            }
            Msg::KeyByHash { hash, reply } => {
                let r = link
                    .run(OP_TIMEOUT, async |c| c.key_by_hash(&hash).await)
                    .await;
                let _ = reply.send(r);
            }
            Msg::Key { id, reply } => {
                let r = link.run(OP_TIMEOUT, async |c| c.key(&id).await).await;
                let _ = reply.send(r);
            }
            Msg::Keys(reply) => {
                let r = link.run(OP_TIMEOUT, async |c| c.keys().await).await;
                let _ = reply.send(r);
            }
            Msg::SaveKey { key, reply } => {
                let r = link.run(OP_TIMEOUT, async |c| c.save_key(&key).await).await;
                let _ = reply.send(r);
            }
            Msg::Shutdown => {}
        }
    }

    /// Tries to write the oldest `batch_size` waiting records; returns whether it did.
    async fn write_batch(&mut self) -> bool {
        let n = self.pending.len().min(self.batch_size);
        let batch = &self.pending.make_contiguous()[..n];
        let (e, all) = match self.link.get().await {
            Ok(conn) => match within(OP_TIMEOUT, conn.write(batch)).await {
                Ok(()) => {
                    self.pending.drain(..n);
                    self.shared.resolved(n, true);
                    self.retry_at = None;
                    self.backoff = BACKOFF_MIN;
                    return true;
                }
                Err(e) => {
                    let broken = self.link.check(&e);
                    (e, broken)
                }
            },
            // Not a try: wait for the link's own backoff (queries' connects failed).
            Err(NoConn::Waiting(at)) => {
                self.retry_at = Some(at);
                return false;
            }
            Err(NoConn::Failed(e)) => (e, true),
        };
        self.retry_at = Some(Instant::now() + self.backoff);
        let retry_in = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        // A broken connection fails every waiting record's try, a statement's error only
        // the batch's: either way a prefix of the queue, so the records given up (those at
        // MAX_ATTEMPTS) are the oldest, and flushes stay in order.
        let tried = if all { self.pending.len() } else { n };
        for p in self.pending.iter_mut().take(tried) {
            p.attempts += 1;
        }
        let mut given_up = 0;
        while self
            .pending
            .front()
            .is_some_and(|p| p.attempts >= MAX_ATTEMPTS)
        {
            self.pending.pop_front();
            given_up += 1;
        }
        if given_up > 0 {
            self.shared.resolved(given_up, false);
            tracing::warn!(
                records = given_up,
                error = %e,
                "postgres ledger: records given up after {MAX_ATTEMPTS} tries"
            );
        } else {
            tracing::warn!(
                records = tried,
                error = %e,
                ?retry_in,
                "postgres ledger: write failed, will retry"
            );
        }
        false
    }

    /// Answers the flushes whose records are all written or given up.
    fn answer_flushes(&mut self) {
        let resolved = self.received - self.pending.len() as u64;
        if self.flushes.iter().any(|(target, _)| *target <= resolved) {
            for (target, reply) in std::mem::take(&mut self.flushes) {
                if target <= resolved {
                    let _ = reply.send(());
                } else {
                    self.flushes.push((target, reply));
                }
            }
        }
    }

    /// After a shutdown: writes what is left (one try per batch, stopping at the first
    /// failure), counts the rest as errors, and releases every flush.
    async fn stop(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Record(_) | Msg::Flush(_) => self.handle(msg).await,
                // Queries' senders get "writer stopped" when their reply is dropped.
                _ => {}
            }
        }
        self.link.connect_at = None;
        while !self.pending.is_empty() {
            if !self.write_batch().await {
                break;
            }
        }
        let rest = self.pending.len();
        if rest > 0 {
            self.pending.clear();
            self.shared.resolved(rest, false);
            tracing::warn!(
                records = rest,
                "postgres ledger stopped with records unwritten"
            );
        }
        for (_, reply) in self.flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}
