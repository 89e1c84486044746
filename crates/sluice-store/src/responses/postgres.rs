//! Stored responses in PostgreSQL (the ledger's database, `storage.database_url`), shared
//! by replicas: table `responses`, created if absent. A response made through one replica
//! is read, continued and deleted through any other.

use super::types::{Content, Kept, StoredResponse, Withheld, PURGE_BATCH};
use crate::files::Owner;
use crate::pg_worker::{PgWorker, Schema};
use crate::sql_int::{from_sql, to_sql};
use crate::StoreError;
use bytes::Bytes;
use std::future::Future;
use tokio_postgres::Row;

const SCHEMA: Schema = Schema {
    name: "responses",
    ddl: "
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    withheld TEXT,
    response BYTEA,
    input_items BYTEA,
    conversation BYTEA
);
CREATE INDEX IF NOT EXISTS responses_expires_at ON responses (expires_at);
",
    // "sluice" + 4.
    lock: 0x736c_7569_6365_0004,
};

/// The columns read back, in [`response_from_row`]'s order.
const COLUMNS: &str =
    "id, owner, created_at, expires_at, withheld, response, input_items, conversation";

/// The PostgreSQL store of responses. Cheap to clone; the last clone dropped stops its
/// thread.
#[derive(Debug, Clone)]
pub struct PgResponses {
    worker: PgWorker,
}

// === impl PgResponses ===

impl PgResponses {
    /// Connects to `url` and creates the table if absent; blocks until connected, or failed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            worker: PgWorker::open(url, SCHEMA)?,
        })
    }

    /// See [`crate::responses::Backend::put`].
    pub fn put(
        &self,
        r: StoredResponse,
        purge_before: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.worker.run(move |c| async move {
            let (withheld, content) = match &r.kept {
                Kept::Content(c) => (None, Some(c)),
                Kept::Withheld(w) => (Some(w.as_str()), None),
            };
            c.execute(
                "INSERT INTO responses (id, owner, created_at, expires_at, withheld, response,
                 input_items, conversation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE SET created_at = $3, expires_at = $4,
                 withheld = $5, response = $6, input_items = $7, conversation = $8
                 WHERE responses.owner = $2",
                &[
                    &r.id,
                    &r.owner.as_stored(),
                    &to_sql(r.created_at),
                    &to_sql(r.expires_at),
                    &withheld,
                    &content.map(|c| &c.response[..]),
                    &content.map(|c| &c.input_items[..]),
                    &content.map(|c| &c.conversation[..]),
                ],
            )
            .await?;
            if let Some(now) = purge_before {
                let n = c
                    .execute(
                        "DELETE FROM responses WHERE id IN
                         (SELECT id FROM responses WHERE expires_at <= $1 LIMIT $2)",
                        &[&to_sql(now), &to_sql(PURGE_BATCH)],
                    )
                    .await?;
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
        let row = self
            .worker
            .run(move |c| async move {
                let sql = format!(
                    "SELECT {COLUMNS} FROM responses WHERE id = $1 AND owner = $2
                     AND expires_at > $3"
                );
                c.query_opt(&sql, &[&id, &owner, &to_sql(now)]).await
            })
            .await?;
        row.as_ref().map(response_from_row).transpose()
    }

    /// See [`crate::responses::Backend::delete`].
    pub async fn delete(&self, id: &str, owner: &Owner, now: u64) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_string(), owner.as_stored().to_string());
        self.worker
            .run(move |c| async move {
                c.execute(
                    "DELETE FROM responses WHERE id = $1 AND owner = $2 AND expires_at > $3
                     AND withheld IS NULL",
                    &[&id, &owner, &to_sql(now)],
                )
                .await
                .map(|n| n > 0)
            })
            .await
    }

    /// See [`crate::responses::Backend::purge`].
    pub async fn purge(&self, now: u64) -> Result<u64, StoreError> {
        self.worker
            .run(move |c| async move {
                c.execute(
                    "DELETE FROM responses WHERE expires_at <= $1",
                    &[&to_sql(now)],
                )
                .await
            })
            .await
    }
}

/// A row of [`COLUMNS`].
fn response_from_row(r: &Row) -> Result<StoredResponse, StoreError> {
    let withheld: Option<String> = r.try_get(4)?;
    let blob = |i: usize| -> Result<Bytes, StoreError> {
        Ok(Bytes::from(
            r.try_get::<_, Option<Vec<u8>>>(i)?.unwrap_or_default(),
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
    let owner: String = r.try_get(1)?;
    Ok(StoredResponse {
        id: r.try_get(0)?,
        owner: Owner::from_stored(&owner),
        created_at: from_sql(r.try_get(2)?),
        expires_at: from_sql(r.try_get(3)?),
        kept,
    })
}
