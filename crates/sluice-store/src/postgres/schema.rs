//! The schema in PostgreSQL: created if absent at open, under an advisory lock (replicas
//! may start together); `sluice_schema` holds its version, and a newer one is refused.
//! Versions: 1, the first schema; 2, `spend_log.batch_id` (the batch a record's request was
//! a line of), added to a version-1 database in place; 3, `spend_log.guardrails` (what
//! guardrails found), added likewise; 4, `keys.guardrails` (a key's own guardrails, a JSON
//! array of names), added likewise; 5, a unique index on a batch line's `(batch_id,
//! request_id)` (a line is charged once, see `batch`), built after renaming any earlier
//! duplicate records of a line (`<request id>#<row id>`: they stay counted, as they were
//! charged).

use crate::StoreError;
use tokio_postgres::Client;

/// The schema version this code reads and writes (in `sluice_schema`).
const SCHEMA_VERSION: i32 = 5;

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
ALTER TABLE spend_log ADD COLUMN IF NOT EXISTS batch_id TEXT;
CREATE INDEX IF NOT EXISTS spend_log_batch_id ON spend_log (batch_id) WHERE batch_id IS NOT NULL;
ALTER TABLE spend_log ADD COLUMN IF NOT EXISTS guardrails TEXT;
ALTER TABLE keys ADD COLUMN IF NOT EXISTS guardrails TEXT;
"#;

/// Version 5's step, run once on a database of an older version (and on a new one): every
/// record of a batch line but its first renamed (an `EXISTS` probe of `spend_log_batch_id`
/// per row, not a `NOT IN` list, which PostgreSQL scans per row once it outgrows
/// `work_mem`), then the unique index built.
const LINE_INDEX: &str = "
UPDATE spend_log s SET request_id = s.request_id || '#' || s.id
    WHERE s.batch_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM spend_log o
        WHERE o.batch_id = s.batch_id AND o.request_id = s.request_id AND o.id < s.id);
CREATE UNIQUE INDEX IF NOT EXISTS spend_log_batch_line ON spend_log (batch_id, request_id)
    WHERE batch_id IS NOT NULL;
";

/// Creates the schema if absent, under an advisory lock; refuses a newer one.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
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
    if version.is_none_or(|v| v < 5) {
        tx.batch_execute(LINE_INDEX).await?;
    }
    match version {
        None => {
            tx.execute(
                "INSERT INTO sluice_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .await?;
        }
        Some(v) if v < SCHEMA_VERSION => {
            tx.execute("UPDATE sluice_schema SET version = $1", &[&SCHEMA_VERSION])
                .await?;
        }
        Some(_) => {}
    }
    tx.commit().await?;
    Ok(())
}
