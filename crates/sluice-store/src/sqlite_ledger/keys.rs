//! The virtual keys: lookups by hash and by id or name, the list, and the upsert.

use crate::ledger::types::{BudgetPeriod, KeyRecord};
use crate::sql_int::{from_sql, to_sql};
use rusqlite::{params, Connection, OptionalExtension, Row};

/// The columns of `keys`, in [`key_from_row`]'s order.
const KEY_COLUMNS: &str = "id, name, hash, hint, models, rpm, tpm, max_concurrent, \
     budget_nano_usd, budget_period, metadata, created_ms, expires_ms, revoked_ms, guardrails";

/// The key whose secret hashes to `hash`.
pub(super) fn by_hash(conn: &Connection, hash: &str) -> rusqlite::Result<Option<KeyRecord>> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM keys WHERE hash = ?1"),
        params![hash],
        key_from_row,
    )
    .optional()
}

/// The key with id `id`, else the newest named `id`.
pub(super) fn by_id_or_name(conn: &Connection, id: &str) -> rusqlite::Result<Option<KeyRecord>> {
    conn.query_row(
        &format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1 OR name = ?1
             ORDER BY id = ?1 DESC, created_ms DESC LIMIT 1"
        ),
        params![id],
        key_from_row,
    )
    .optional()
}

/// Every key, oldest first.
pub(super) fn all(conn: &Connection) -> rusqlite::Result<Vec<KeyRecord>> {
    let mut s = conn.prepare(&format!(
        "SELECT {KEY_COLUMNS} FROM keys ORDER BY created_ms, id"
    ))?;
    let rows = s.query_map([], key_from_row)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
}

/// Inserts `k`, or replaces the key with its id.
pub(super) fn save(conn: &Connection, k: &KeyRecord) -> rusqlite::Result<()> {
    let models = serde_json::to_string(&k.models).unwrap_or_else(|_| "[]".into());
    let guardrails = serde_json::to_string(&k.guardrails).unwrap_or_else(|_| "[]".into());
    conn.execute(
        &format!(
            "INSERT INTO keys ({KEY_COLUMNS}) VALUES
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, hash = excluded.hash,
                 hint = excluded.hint, models = excluded.models, rpm = excluded.rpm,
                 tpm = excluded.tpm, max_concurrent = excluded.max_concurrent,
                 budget_nano_usd = excluded.budget_nano_usd,
                 budget_period = excluded.budget_period, metadata = excluded.metadata,
                 created_ms = excluded.created_ms, expires_ms = excluded.expires_ms,
                 revoked_ms = excluded.revoked_ms, guardrails = excluded.guardrails"
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
            guardrails,
        ],
    )?;
    Ok(())
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let opt = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(from_sql))
    };
    let models: String = r.get(4)?;
    let period: String = r.get(9)?;
    let guardrails: Option<String> = r.get(14)?;
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
        guardrails: guardrails
            .and_then(|g| serde_json::from_str(&g).ok())
            .unwrap_or_default(),
    })
}
