//! Stored responses in SQLite (`responses.sqlite` in the data directory), on a thread of
//! their own. Their own file: a response's content can be megabytes, and writing it never
//! waits behind the ledger's spend batches or the files' index.

use super::types::{Content, Kept, StoredResponse, Withheld, PURGE_BATCH};
use crate::files::Owner;
use crate::sql_int::{from_sql, to_sql};
use crate::sqlite_worker::SqliteWorker;
use crate::StoreError;
use bytes::Bytes;
use rusqlite::{params, OptionalExtension, Row};
use std::future::Future;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    withheld TEXT,
    response BLOB,
    input_items BLOB,
    conversation BLOB
);
CREATE INDEX IF NOT EXISTS responses_expires_at ON responses (expires_at);
";

/// One response, its columns in [`row`]'s order.
const SELECT_ONE: &str = "SELECT id, owner, created_at, expires_at, withheld, response,
    input_items, conversation FROM responses WHERE id = ?1 AND owner = ?2 AND expires_at > ?3";

/// The SQLite store of responses. Cheap to clone; the last clone dropped stops its thread.
#[derive(Debug, Clone)]
pub struct SqliteResponses {
    worker: SqliteWorker,
}

// === impl SqliteResponses ===

impl SqliteResponses {
    /// Opens (or creates) the file at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let worker = SqliteWorker::open(path, SCHEMA, "responses", "responses store")?;
        Ok(Self { worker })
    }

    /// See [`crate::responses::Backend::put`].
    pub fn put(
        &self,
        r: StoredResponse,
        purge_before: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.worker.run(move |conn| {
            let (withheld, content) = match &r.kept {
                Kept::Content(c) => (None, Some(c)),
                Kept::Withheld(w) => (Some(w.as_str()), None),
            };
            // Every response is a write: its statement is compiled once per connection.
            conn.prepare_cached(
                "INSERT INTO responses (id, owner, created_at, expires_at, withheld,
                 response, input_items, conversation) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET created_at = ?3, expires_at = ?4,
                 withheld = ?5, response = ?6, input_items = ?7, conversation = ?8
                 WHERE responses.owner = ?2",
            )?
            .execute(params![
                r.id,
                r.owner.as_stored(),
                to_sql(r.created_at),
                to_sql(r.expires_at),
                withheld,
                content.map(|c| &c.response[..]),
                content.map(|c| &c.input_items[..]),
                content.map(|c| &c.conversation[..]),
            ])?;
            if let Some(now) = purge_before {
                let n = conn
                    .prepare_cached(
                        "DELETE FROM responses WHERE id IN
                         (SELECT id FROM responses WHERE expires_at <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![to_sql(now), to_sql(PURGE_BATCH)])?;
                tracing::debug!(purged = n, "expired responses purged");
            }
            Ok(())
        })
    }

    /// See [`crate::responses::Backend::get`].
    pub async fn get(
        &self,
        id: &str,
        owner: &Owner,
        now: u64,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let (id, owner) = (id.to_string(), owner.as_stored().to_string());
        self.worker
            .run(move |conn| {
                Ok(conn
                    .prepare_cached(SELECT_ONE)?
                    .query_row(params![id, owner, to_sql(now)], row)
                    .optional()?)
            })
            .await
    }

    /// See [`crate::responses::Backend::delete`].
    pub async fn delete(&self, id: &str, owner: &Owner, now: u64) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_string(), owner.as_stored().to_string());
        self.worker
            .run(move |conn| {
                let n = conn
                    .prepare_cached(
                        "DELETE FROM responses WHERE id = ?1 AND owner = ?2 AND expires_at > ?3
                         AND withheld IS NULL",
                    )?
                    .execute(params![id, owner, to_sql(now)])?;
                Ok(n > 0)
            })
            .await
    }

    /// See [`crate::responses::Backend::purge`].
    pub async fn purge(&self, now: u64) -> Result<u64, StoreError> {
        self.worker
            .run(move |conn| {
                let n = conn.execute(
                    "DELETE FROM responses WHERE expires_at <= ?1",
                    params![to_sql(now)],
                )?;
                Ok(n as u64)
            })
            .await
    }
}

/// A row of [`SELECT_ONE`].
fn row(r: &Row<'_>) -> rusqlite::Result<StoredResponse> {
    let withheld: Option<String> = r.get(4)?;
    let blob = |i: usize| -> rusqlite::Result<Bytes> {
        Ok(Bytes::from(
            r.get::<_, Option<Vec<u8>>>(i)?.unwrap_or_default(),
        ))
    };
    let kept = match withheld {
        Some(w) => Kept::Withheld(Withheld::parse(&w)),
        None => Kept::Content(Content {
            response: blob(5)?,
            input_items: blob(6)?,
            conversation: blob(7)?,
        }),
    };
    Ok(StoredResponse {
        id: r.get(0)?,
        owner: Owner::from_stored(&r.get::<_, String>(1)?),
        created_at: from_sql(r.get(2)?),
        expires_at: from_sql(r.get(3)?),
        kept,
    })
}
