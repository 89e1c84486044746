//! The files' metadata in SQLite (`files.sqlite` in the data directory), on a thread of its
//! own as the other SQLite stores are: the gateway's runtimes never block on it. Its own file
//! rather than a table in the ledger's: file requests never wait behind the ledger's spend
//! batches, and the ledger's schema and versions stay its own.
//!
//! The thread runs whatever closure it is sent with the connection (`SqliteIndex::run`).

use super::types::{FileObject, ListQuery, Owner, Page};
use crate::sql_int::{from_sql, to_sql};
use crate::sqlite_file::{open_wal, stop_writer};
use crate::StoreError;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_owner_seq ON files (owner, seq);
CREATE INDEX IF NOT EXISTS files_expires_at ON files (expires_at) WHERE expires_at IS NOT NULL;
";

/// The columns read back, in [`row`]'s order.
const COLUMNS: &str = "id, owner, purpose, filename, bytes, created_at, expires_at, status";

/// A closure run on the thread; `None` stops it.
type Job = Option<Box<dyn FnOnce(&mut Connection) + Send>>;

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Job>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        stop_writer(&self.tx, &self.thread, None, "files index");
    }
}

/// The SQLite index of files. Cheap to clone; the last clone dropped stops the thread.
#[derive(Debug, Clone)]
pub struct SqliteIndex {
    inner: Arc<Inner>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("files index thread stopped".into())
}

// === impl SqliteIndex ===

impl SqliteIndex {
    /// Opens (or creates) the index at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = crate::sqlite_file::retry_busy(|| {
            let conn = open_wal(path, "files index")?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("sluice-files".into())
            .spawn(move || {
                while let Ok(Some(job)) = rx.recv() {
                    job(&mut conn);
                }
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Runs `f` on the index's thread.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn FnOnce(&mut Connection) + Send> = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.inner.tx.send(Some(job)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// See [`super::FileIndex::insert`].
    pub async fn insert(&self, file: FileObject) -> Result<(), StoreError> {
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO files (id, owner, purpose, filename, bytes, created_at, expires_at, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    file.id,
                    file.owner.as_stored(),
                    file.purpose.as_str(),
                    file.filename,
                    to_sql(file.bytes),
                    to_sql(file.created_at),
                    file.expires_at.map(to_sql),
                    file.status.as_str(),
                ],
            )?;
            Ok(())
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
        self.run(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM files WHERE id = ?1 AND owner = ?2
                 AND (expires_at IS NULL OR expires_at > ?3)"
            );
            let found = conn
                .query_row(&sql, params![id, owner, to_sql(now)], row)
                .optional()?;
            found.transpose()
        })
        .await
    }

    /// See [`super::FileIndex::list`].
    pub async fn list(
        &self,
        owner: &Owner,
        query: &ListQuery,
        now: u64,
    ) -> Result<Page, StoreError> {
        let (owner, query) = (owner.as_stored().to_string(), query.clone());
        self.run(move |conn| list(conn, &owner, &query, now)).await
    }

    /// See [`super::FileIndex::delete`].
    pub async fn delete(&self, id: &str, owner: &Owner) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_string(), owner.as_stored().to_string());
        self.run(move |conn| {
            let n = conn.execute(
                "DELETE FROM files WHERE id = ?1 AND owner = ?2",
                params![id, owner],
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// See [`super::FileIndex::take_expired`].
    pub async fn take_expired(&self, now: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let ids = {
                let mut stmt = tx.prepare(
                    "DELETE FROM files WHERE seq IN (SELECT seq FROM files
                     WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2) RETURNING id",
                )?;
                let rows = stmt.query_map(params![to_sql(now), to_sql(limit as u64)], |r| {
                    r.get::<_, String>(0)
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            Ok(ids)
        })
        .await
    }
}

/// A page of `owner`'s files: one more than asked is read to learn whether more follow.
fn list(conn: &Connection, owner: &str, q: &ListQuery, now: u64) -> Result<Page, StoreError> {
    let (cmp, dir) = match q.order {
        super::types::Order::Asc => (">", "ASC"),
        super::types::Order::Desc => ("<", "DESC"),
    };
    // An unknown cursor matches no row, so the page is empty.
    let cursor = if q.after.is_some() {
        format!("AND seq {cmp} (SELECT seq FROM files WHERE id = ?4 AND owner = ?1)")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM files WHERE owner = ?1 AND (?2 IS NULL OR purpose = ?2)
         AND (expires_at IS NULL OR expires_at > ?3) {cursor}
         ORDER BY seq {dir} LIMIT ?5"
    );
    let mut stmt = conn.prepare(&sql)?;
    let purpose = q.purpose.map(|p| p.as_str());
    let limit = to_sql(q.limit as u64 + 1);
    let rows = stmt.query_map(
        params![
            owner,
            purpose,
            to_sql(now),
            q.after.as_deref().unwrap_or(""),
            limit
        ],
        row,
    )?;
    let mut files = rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = files.len() > q.limit;
    files.truncate(q.limit);
    Ok(Page { files, has_more })
}

/// A row of [`COLUMNS`].
fn row(r: &Row<'_>) -> rusqlite::Result<Result<FileObject, StoreError>> {
    let purpose: String = r.get(2)?;
    let status: String = r.get(7)?;
    let Some(purpose) = super::types::Purpose::parse(&purpose) else {
        return Ok(Err(StoreError::Protocol(format!(
            "files.purpose is `{purpose}`"
        ))));
    };
    Ok(Ok(FileObject {
        id: r.get(0)?,
        owner: Owner::from_stored(&r.get::<_, String>(1)?),
        purpose,
        filename: r.get(3)?,
        bytes: from_sql(r.get(4)?),
        created_at: from_sql(r.get(5)?),
        expires_at: r.get::<_, Option<i64>>(6)?.map(from_sql),
        status: super::types::FileStatus::parse(&status),
    }))
}
