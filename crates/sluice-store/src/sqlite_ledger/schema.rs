//! The ledger's tables in the SQLite file, created at open; the version is in
//! `PRAGMA user_version`, and a newer one is refused. Versions: 1, the first schema; 2,
//! `spend_log.batch_id` (the batch a record's request was a line of), added to a version-1
//! file in place; 3, `spend_log.guardrails`; 4, `keys.guardrails` (a key's own guardrails,
//! a JSON array of names), each added in place; 5, a unique index on a batch line's
//! `(batch_id, request_id)` (a line is charged once, see `batch`), added in place after
//! renaming any earlier duplicate records of a line (`<request id>#<row id>`: they stay
//! counted, as they were charged, and the index can be built).

use crate::StoreError;
use rusqlite::Connection;

/// The schema this code reads and writes.
const SCHEMA_VERSION: i64 = 5;

/// Creates the tables in a new file; checks the version of an existing one.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
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

/// The migration, under the write lock: each version's step in turn, from the file's; then
/// the indexes no query needs dropped.
fn migrate_locked(conn: &Connection) -> Result<(), StoreError> {
    migrate_version(conn)?;
    drop_unused_indexes(conn)
}

/// No query reads `spend_log` by key (reports group the log by a column over a time range,
/// budget windows are in `budget_spend`), so the `(key_id, ts_ms)` index of the first
/// schema only cost every record an index insert: dropped, without a version change, so
/// that an older sluice still opens the file.
fn drop_unused_indexes(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("DROP INDEX IF EXISTS spend_log_key_ts;")?;
    Ok(())
}

/// Each version's step in turn, from the file's.
fn migrate_version(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => {
            create_v1(conn)?;
            add_batch_id(conn)?;
            add_guardrails(conn)?;
            add_key_guardrails(conn)?;
            add_line_index(conn)
        }
        1 => {
            add_batch_id(conn)?;
            add_guardrails(conn)?;
            add_key_guardrails(conn)?;
            add_line_index(conn)
        }
        2 => {
            add_guardrails(conn)?;
            add_key_guardrails(conn)?;
            add_line_index(conn)
        }
        3 => {
            add_key_guardrails(conn)?;
            add_line_index(conn)
        }
        4 => add_line_index(conn),
        SCHEMA_VERSION => Ok(()),
        other => Err(StoreError::Unavailable(format!(
            "sqlite ledger schema version {other} is newer than this sluice ({SCHEMA_VERSION})"
        ))),
    }
}

/// Version 2: the batch a record belongs to (`NULL` for a request that was not a batch's).
fn add_batch_id(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "ALTER TABLE spend_log ADD COLUMN batch_id TEXT;
         CREATE INDEX spend_log_batch ON spend_log (batch_id) WHERE batch_id IS NOT NULL;
         PRAGMA user_version = 2;",
    )?;
    Ok(())
}

/// Version 3: what guardrails found in a record's request and answer.
fn add_guardrails(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "ALTER TABLE spend_log ADD COLUMN guardrails TEXT;
         PRAGMA user_version = 3;",
    )?;
    Ok(())
}

/// Version 4: a key's own guardrails (`NULL`: none).
fn add_key_guardrails(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "ALTER TABLE keys ADD COLUMN guardrails TEXT;
         PRAGMA user_version = 4;",
    )?;
    Ok(())
}

/// Version 5: a batch line's record at most once (earlier duplicates renamed first).
fn add_line_index(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "UPDATE spend_log SET request_id = request_id || '#' || id
             WHERE batch_id IS NOT NULL AND id NOT IN (
                 SELECT min(id) FROM spend_log WHERE batch_id IS NOT NULL
                     GROUP BY batch_id, request_id);
         CREATE UNIQUE INDEX spend_log_batch_line ON spend_log (batch_id, request_id)
             WHERE batch_id IS NOT NULL;
         PRAGMA user_version = 5;",
    )?;
    Ok(())
}

/// Version 1, the whole first schema in one batch for a new file (the function is the
/// schema, hence its length).
fn create_v1(conn: &Connection) -> Result<(), StoreError> {
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
