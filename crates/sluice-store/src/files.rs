//! The Files API's store (`/v1/files`): files that sluice keeps itself, their metadata in
//! an index and their contents in a directory.
//!
//! - Embedded: the index is `files.sqlite` in the data directory ([`SqliteIndex`]) and the
//!   contents live in `<data_dir>/files` ([`Contents`]).
//! - Replicas: the index is the `files` table of the ledger's PostgreSQL ([`PgIndex`]) and
//!   the contents a directory every replica mounts (`[files] dir`: NFS, a shared volume):
//!   a file uploaded through one replica is listed, read and deleted through any other.
//!
//! Invariants: a file is listed only once its content is whole and durable (written under
//! a temporary name, fsynced, renamed; see [`contents`]), so no metadata row is ever without
//! its content, and a cut upload leaves nothing under a file's id. Deleting removes the row
//! first, then the content. Every lookup is scoped to an [`Owner`]: another owner's file is
//! absent, exactly like one that does not exist. An expired file is absent too, and purged
//! (row and content) by [`FileStore::purge_expired`], which uploads run at most hourly.
//!
//! For other parts of sluice (batches), the API is: [`FileStore::create`] (from bytes),
//! [`FileStore::create_from_reader`] (from any `AsyncRead`), [`FileStore::upload`] (an
//! [`Upload`] written piece by piece, then [`Upload::finish`] with its [`NewFile`]: owner,
//! purpose, name, expiry), [`FileStore::get`] (the metadata by id and owner) and
//! [`FileStore::open`] (the metadata and the content, for reading).
//!
//! The files: `types` (the metadata, owners, purposes, listing), `id` (ids), `contents`
//! (the directory), `sqlite` and `postgres` (the index).

pub mod contents;
pub mod id;
pub mod postgres;
pub mod sqlite;
pub mod types;

pub use contents::Contents;
pub use postgres::PgIndex;
pub use sqlite::SqliteIndex;
pub use types::{
    FileObject, FileStatus, ListQuery, NewFile, Order, Owner, Page, Purpose, MAX_LIST_LIMIT,
};

use crate::StoreError;
use contents::Partial;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How often uploads purge expired files, at most (seconds).
const PURGE_EVERY_S: u64 = 3600;

/// Expired files purged per round, at most.
const PURGE_BATCH: usize = 1000;

/// The files' metadata: embedded SQLite, or PostgreSQL shared by replicas.
#[derive(Debug, Clone)]
pub enum FileIndex {
    /// `files.sqlite`, on a thread of its own.
    Sqlite(SqliteIndex),
    /// The ledger's PostgreSQL, on a thread of its own.
    Postgres(PgIndex),
}

macro_rules! both {
    ($self:ident, $i:ident => $e:expr) => {
        match $self {
            Self::Sqlite($i) => $e,
            Self::Postgres($i) => $e,
        }
    };
}

// === impl FileIndex ===

impl FileIndex {
    /// Stores a new file's metadata.
    pub async fn insert(&self, file: FileObject) -> Result<(), StoreError> {
        both!(self, i => i.insert(file).await)
    }

    /// The file `id` of `owner`, unless expired at `now` (Unix seconds).
    pub async fn get(
        &self,
        id: &str,
        owner: &Owner,
        now: u64,
    ) -> Result<Option<FileObject>, StoreError> {
        both!(self, i => i.get(id, owner, now).await)
    }

    /// A page of `owner`'s files unexpired at `now`.
    pub async fn list(&self, owner: &Owner, q: &ListQuery, now: u64) -> Result<Page, StoreError> {
        both!(self, i => i.list(owner, q, now).await)
    }

    /// Deletes the file `id` of `owner`; whether there was one.
    pub async fn delete(&self, id: &str, owner: &Owner) -> Result<bool, StoreError> {
        both!(self, i => i.delete(id, owner).await)
    }

    /// Deletes up to `limit` files expired at `now`; their ids.
    pub async fn take_expired(&self, now: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        both!(self, i => i.take_expired(now, limit).await)
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

#[derive(Debug)]
struct Inner {
    index: FileIndex,
    contents: Contents,
    /// When uploads last purged expired files (Unix seconds).
    purged_at: AtomicU64,
}

/// The files: metadata in a [`FileIndex`], contents in [`Contents`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

/// The wall clock in Unix seconds.
pub fn unix_now_s() -> u64 {
    crate::unix_now_ms() / 1000
}

// === impl FileStore ===

impl FileStore {
    /// A store over `index` and `contents`.
    pub fn new(index: FileIndex, contents: Contents) -> Self {
        Self {
            inner: Arc::new(Inner {
                index,
                contents,
                purged_at: AtomicU64::new(0),
            }),
        }
    }

    /// The index.
    pub fn index(&self) -> &FileIndex {
        &self.inner.index
    }

    /// The contents' directory.
    pub fn contents(&self) -> &Contents {
        &self.inner.contents
    }

    /// Starts a new file: write its content into the [`Upload`], then
    /// [`Upload::finish`] it with what the file is. Until then it is listed nowhere;
    /// dropped unfinished, it leaves nothing behind.
    pub async fn upload(&self) -> Result<Upload, StoreError> {
        self.purge_now_and_then().await;
        let id = id::new_id()?;
        let partial = self.inner.contents.begin(&id).await?;
        Ok(Upload {
            store: self.clone(),
            id,
            partial,
        })
    }

    /// A new file of `bytes`.
    pub async fn create(&self, new: NewFile, bytes: &[u8]) -> Result<FileObject, StoreError> {
        let mut upload = self.upload().await?;
        upload.write(bytes).await?;
        upload.finish(new).await
    }

    /// A new file of what `reader` reads until its end.
    pub async fn create_from_reader<R: AsyncRead + Unpin>(
        &self,
        new: NewFile,
        mut reader: R,
    ) -> Result<FileObject, StoreError> {
        let mut upload = self.upload().await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            upload.write(&buf[..n]).await?;
        }
        upload.finish(new).await
    }

    /// The file `id` of `owner`: `None` when there is none, it is another owner's, or it
    /// has expired.
    pub async fn get(&self, id: &str, owner: &Owner) -> Result<Option<FileObject>, StoreError> {
        if !id::is_valid(id) {
            return Ok(None);
        }
        self.inner.index.get(id, owner, unix_now_s()).await
    }

    /// The file `id` of `owner` with its content opened for reading (`None` as for
    /// [`Self::get`], or when its content was deleted meanwhile).
    pub async fn open(
        &self,
        id: &str,
        owner: &Owner,
    ) -> Result<Option<(FileObject, tokio::fs::File)>, StoreError> {
        let Some(file) = self.get(id, owner).await? else {
            return Ok(None);
        };
        Ok(self
            .inner
            .contents
            .read(&file.id)
            .await?
            .map(|content| (file, content)))
    }

    /// A page of `owner`'s files (`limit` is clamped to 1..=[`MAX_LIST_LIMIT`]).
    pub async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, StoreError> {
        let mut q = query.clone();
        q.limit = q.limit.clamp(1, MAX_LIST_LIMIT);
        if q.after.as_deref().is_some_and(|a| !id::is_valid(a)) {
            return Ok(Page::default());
        }
        self.inner.index.list(owner, &q, unix_now_s()).await
    }

    /// Deletes the file `id` of `owner` (its row, then its content); whether there was one.
    pub async fn delete(&self, id: &str, owner: &Owner) -> Result<bool, StoreError> {
        if !id::is_valid(id) || !self.inner.index.delete(id, owner).await? {
            return Ok(false);
        }
        self.inner.contents.remove(id).await?;
        Ok(true)
    }

    /// A cheap check that both halves answer: the index (a lookup) and the contents'
    /// directory (it is there, and a directory: a shared mount that went away fails).
    pub async fn check(&self) -> Result<(), StoreError> {
        self.inner
            .index
            .get("file-ready", &Owner::Master, unix_now_s())
            .await?;
        let dir = tokio::fs::metadata(self.inner.contents.dir()).await?;
        if !dir.is_dir() {
            return Err(StoreError::Unavailable(format!(
                "`{}` is not a directory",
                self.inner.contents.dir().display()
            )));
        }
        Ok(())
    }

    /// Deletes the files expired by now (rows, then contents); how many.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let mut purged = 0;
        loop {
            let ids = self
                .inner
                .index
                .take_expired(unix_now_s(), PURGE_BATCH)
                .await?;
            for id in &ids {
                self.inner.contents.remove(id).await?;
            }
            purged += ids.len();
            if ids.len() < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    /// Purges expired files when the last purge is an hour old; failures are logged.
    async fn purge_now_and_then(&self) {
        let now = unix_now_s();
        let last = self.inner.purged_at.load(Relaxed);
        if now < last + PURGE_EVERY_S
            || self
                .inner
                .purged_at
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.purge_expired().await {
            tracing::warn!(error = %e, "purging expired files failed");
        }
    }
}

/// A file being written ([`FileStore::upload`]): nothing is listed until
/// [`Upload::finish`]; dropped before, its partial content is removed.
#[derive(Debug)]
pub struct Upload {
    store: FileStore,
    id: String,
    partial: Partial,
}

// === impl Upload ===

impl Upload {
    /// The id the file will have.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.partial.bytes()
    }

    /// Appends `data` to the content.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.partial.write(data).await
    }

    /// Makes the content durable under the file's id, then stores its metadata (`new`):
    /// the file exists from now on. On a failure nothing is left: no content, no row.
    pub async fn finish(self, new: NewFile) -> Result<FileObject, StoreError> {
        let Self { store, id, partial } = self;
        let committed = partial.commit().await;
        let bytes = match committed {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = store.inner.contents.remove(&id).await;
                return Err(e);
            }
        };
        let created_at = unix_now_s();
        let file = FileObject {
            id,
            owner: new.owner,
            purpose: new.purpose,
            filename: new.filename,
            bytes,
            created_at,
            expires_at: new.expires_after.map(|s| created_at.saturating_add(s)),
            status: FileStatus::Processed,
        };
        if let Err(e) = store.inner.index.insert(file.clone()).await {
            let _ = store.inner.contents.remove(&file.id).await;
            return Err(e);
        }
        Ok(file)
    }
}
