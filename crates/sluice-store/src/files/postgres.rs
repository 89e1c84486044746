//! The files' metadata in PostgreSQL (the ledger's database, `storage.database_url`), shared
//! by replicas: table `files`, created if absent under an advisory lock, on a
//! [`PgWorker`]'s connection.

use super::types::{FileObject, FileStatus, ListQuery, Order, Owner, Page, Purpose};
use crate::pg_worker::{PgWorker, Schema};
use crate::sql_int::{from_sql, to_sql};
use crate::StoreError;
use tokio_postgres::Row;

/// The table and its indexes, created under advisory lock "sluice" + 2.
const SCHEMA: Schema = Schema {
    name: "files",
    ddl: DDL,
    lock: 0x736c_7569_6365_0002,
};

const DDL: &str = "
CREATE TABLE IF NOT EXISTS files (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_owner_seq ON files (owner, seq);
CREATE INDEX IF NOT EXISTS files_expires_at ON files (expires_at) WHERE expires_at IS NOT NULL;
";

/// The columns read back, in [`file_from_row`]'s order.
const COLUMNS: &str = "id, owner, purpose, filename, bytes, created_at, expires_at, status";

/// The PostgreSQL index of files. Cheap to clone; the last clone dropped stops its thread.
#[derive(Debug, Clone)]
pub struct PgIndex {
    worker: PgWorker,
}

// === impl PgIndex ===

impl PgIndex {
    /// Connects to `url` and creates the table if absent; blocks until connected, or failed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            worker: PgWorker::open(url, SCHEMA)?,
        })
    }

    /// Runs `op` with the connection (the batches' tables live in this database too).
    pub(crate) fn run<T, F, Fut>(
        &self,
        op: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(std::sync::Arc<tokio_postgres::Client>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        self.worker.run(op)
    }

    /// See [`super::FileIndex::insert`].
    pub async fn insert(&self, file: FileObject) -> Result<(), StoreError> {
        self.worker.run(move |c| async move {
            c.execute(
                "INSERT INTO files (id, owner, purpose, filename, bytes, created_at, expires_at, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &file.id,
                    &file.owner.as_stored(),
                    &file.purpose.as_str(),
                    &file.filename,
                    &to_sql(file.bytes),
                    &to_sql(file.created_at),
                    &file.expires_at.map(to_sql),
                    &file.status.as_str(),
                ],
            )
            .await
            .map(drop)
        })
        .await
    }

    /// See [`super::FileIndex::get`].
    pub async fn get(
        &self,
        id: &str,
        owner: &Owner,
        now: u64,
    ) -> Result<Option<FileObject>, StoreError> {
        let (id, owner) = (id.to_string(), owner.as_stored().to_string());
        let row = self
            .worker
            .run(move |c| async move {
                let sql = format!(
                    "SELECT {COLUMNS} FROM files WHERE id = $1 AND owner = $2
                     AND (expires_at IS NULL OR expires_at > $3)"
                );
                c.query_opt(&sql, &[&id, &owner, &to_sql(now)]).await
            })
            .await?;
        row.as_ref().map(file_from_row).transpose()
    }

    /// See [`super::FileIndex::list`].
    pub async fn list(
        &self,
        owner: &Owner,
        query: &ListQuery,
        now: u64,
    ) -> Result<Page, StoreError> {
        let (owner, q) = (owner.as_stored().to_string(), query.clone());
        let limit = q.limit;
        let rows = self
            .worker
            .run(move |c| async move {
                let (cmp, dir) = match q.order {
                    Order::Asc => (">", "ASC"),
                    Order::Desc => ("<", "DESC"),
                };
                // An unknown cursor matches no row, so the page is empty.
                let cursor = match q.after {
                    Some(_) => format!(
                        "AND seq {cmp} (SELECT seq FROM files WHERE id = $4 AND owner = $1)"
                    ),
                    None => "AND $4::TEXT IS NOT NULL".to_string(),
                };
                let sql = format!(
                    "SELECT {COLUMNS} FROM files WHERE owner = $1
                     AND ($2::TEXT IS NULL OR purpose = $2)
                     AND (expires_at IS NULL OR expires_at > $3) {cursor}
                     ORDER BY seq {dir} LIMIT $5"
                );
                let purpose = q.purpose.map(Purpose::as_str);
                let after = q.after.unwrap_or_default();
                let n = to_sql(q.limit as u64 + 1);
                c.query(&sql, &[&owner, &purpose, &to_sql(now), &after, &n])
                    .await
            })
            .await?;
        let mut files = rows
            .iter()
            .map(file_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let has_more = files.len() > limit;
        files.truncate(limit);
        Ok(Page { files, has_more })
    }

    /// See [`super::FileIndex::delete`].
    pub async fn delete(&self, id: &str, owner: &Owner) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_string(), owner.as_stored().to_string());
        self.worker
            .run(move |c| async move {
                c.execute(
                    "DELETE FROM files WHERE id = $1 AND owner = $2",
                    &[&id, &owner],
                )
                .await
                .map(|n| n > 0)
            })
            .await
    }

    /// See [`super::FileIndex::take_expired`].
    pub async fn take_expired(&self, now: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let rows = self
            .worker
            .run(move |c| async move {
                c.query(
                    "DELETE FROM files WHERE seq IN (SELECT seq FROM files
                     WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2) RETURNING id",
                    &[&to_sql(now), &to_sql(limit as u64)],
                )
                .await
            })
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }
}

/// A row of [`COLUMNS`].
fn file_from_row(r: &Row) -> Result<FileObject, StoreError> {
    let purpose: String = r.try_get(2)?;
    let status: String = r.try_get(7)?;
    let owner: String = r.try_get(1)?;
    Ok(FileObject {
        id: r.try_get(0)?,
        owner: Owner::from_stored(&owner),
        purpose: Purpose::parse(&purpose)
            .ok_or_else(|| StoreError::Protocol(format!("files.purpose is `{purpose}`")))?,
        filename: r.try_get(3)?,
        bytes: from_sql(r.try_get(4)?),
        created_at: from_sql(r.try_get(5)?),
        expires_at: r.try_get::<_, Option<i64>>(6)?.map(from_sql),
        status: FileStatus::parse(&status),
    })
}
