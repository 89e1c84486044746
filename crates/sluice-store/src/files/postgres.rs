//! The files' metadata in PostgreSQL (the ledger's database, `storage.database_url`), shared
//! by replicas: table `files`, created if absent under an advisory lock.
//!
//! Why a thread: a PostgreSQL connection is a task that must keep being polled on one
//! runtime, and the gateway runs several single-threaded ones. So the connection lives on a
//! dedicated thread running a current-thread runtime; each operation is spawned there and
//! its answer awaited from whichever runtime asked (`PgIndex::run`). The connection is made
//! at open (which blocks until it is, or fails) and anew at the next operation after it
//! broke; each operation has a time limit of [`OP_TIMEOUT`].

use super::types::{FileObject, FileStatus, ListQuery, Order, Owner, Page, Purpose};
use crate::StoreError;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_postgres::{Client, Config, NoTls, Row};

/// Time limit of one operation (the connect included).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock that serializes the table's creation across replicas ("sluice" + 2).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_0002;

const SCHEMA: &str = "
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

/// The connection, made anew when it broke.
#[derive(Debug)]
struct Link {
    config: Config,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Link {
    /// The live connection, connecting first if there is none (on the index's runtime).
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let (mut client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres files connection ended");
            }
        });
        migrate(&mut client).await?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}

#[derive(Debug)]
struct Inner {
    handle: Handle,
    link: Arc<Link>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::warn!("postgres files thread panicked");
            }
        }
    }
}

/// The PostgreSQL index of files. Cheap to clone; the last clone dropped stops the thread.
#[derive(Debug, Clone)]
pub struct PgIndex {
    inner: Arc<Inner>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("postgres files thread stopped".into())
}

// === impl PgIndex ===

impl PgIndex {
    /// Starts the thread, connects to `url` and creates the table if absent. Blocks the
    /// caller until connected, or failed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        let (handle, stop, thread) = start_thread()?;
        let this = Self {
            inner: Arc::new(Inner {
                handle,
                link: Arc::new(Link {
                    config,
                    client: tokio::sync::Mutex::new(None),
                }),
                stop: Mutex::new(Some(stop)),
                thread: Mutex::new(Some(thread)),
            }),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let link = Arc::clone(&this.inner.link);
        this.inner.handle.spawn(async move {
            let connected = tokio::time::timeout(OP_TIMEOUT, link.client()).await;
            let _ = tx.send(connected.map_err(|_| StoreError::Timeout(OP_TIMEOUT)));
        });
        rx.recv().map_err(|_| gone())??.map(|_| this)
    }

    /// Runs `op` with the connection on the index's thread, within [`OP_TIMEOUT`]; a
    /// connection that failed is dropped so the next operation connects anew.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let link = Arc::clone(&self.inner.link);
        let task = self.inner.handle.spawn(async move {
            let work = async {
                let client = link.client().await?;
                op(client).await.map_err(StoreError::from)
            };
            match tokio::time::timeout(OP_TIMEOUT, work).await {
                Ok(done) => done,
                Err(_) => {
                    *link.client.lock().await = None;
                    Err(StoreError::Timeout(OP_TIMEOUT))
                }
            }
        });
        task.await.map_err(|_| gone())?
    }

    /// See [`super::FileIndex::insert`].
    pub async fn insert(&self, file: FileObject) -> Result<(), StoreError> {
        self.run(move |c| async move {
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
        self.run(move |c| async move {
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

/// The index's thread: a current-thread runtime that runs until `stop`.
fn start_thread() -> Result<(Handle, oneshot::Sender<()>, JoinHandle<()>), StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sluice-pg-files".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop, thread))
}

/// Creates the table if absent, under an advisory lock (replicas may start together).
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         {SCHEMA}"
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
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
