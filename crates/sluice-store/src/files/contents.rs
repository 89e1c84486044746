//! The files' contents: one file per id in a directory (`<dir>/<id>`), local or mounted by
//! every replica.
//!
//! A content is written under a temporary name (`<dir>/tmp/<id>.part`), fsynced, renamed
//! to its id and the directory fsynced; only then is its metadata stored. So a failed or
//! cut upload leaves at most a `.part` file, never a content under a file's id, and never
//! a metadata row without its content. A [`Partial`] dropped before it is committed removes
//! its temporary file; `.part` files a crash left behind are removed when the store opens
//! and they are a day old (a day, not at once: on a shared directory another replica may
//! be writing them).

use crate::StoreError;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// The subdirectory of contents being written.
const TMP: &str = "tmp";

/// Age past which a leftover `.part` file is removed at open.
const STALE_PART: Duration = Duration::from_secs(24 * 3600);

/// The contents' directory.
#[derive(Debug, Clone)]
pub struct Contents {
    dir: PathBuf,
}

// === impl Contents ===

impl Contents {
    /// Opens (creating it if absent) the directory `dir`, and removes `.part` files left
    /// there a day or more ago. Blocks briefly (a directory listing).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir.join(TMP))?;
        let this = Self {
            dir: dir.to_path_buf(),
        };
        this.sweep(SystemTime::now());
        Ok(this)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sweep(&self, now: SystemTime) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(TMP)) else {
            return;
        };
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= STALE_PART);
            if stale && entry.file_name().to_string_lossy().ends_with(".part") {
                tracing::info!(path = %entry.path().display(), "removing a cut upload");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Where the content of `id` lives (the id was checked: letters, digits, `-`, `_`).
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Starts writing the content of `id`.
    pub(crate) async fn begin(&self, id: &str) -> Result<Partial, StoreError> {
        let temp = self.dir.join(TMP).join(format!("{id}.part"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await?;
        Ok(Partial {
            temp: Some(temp),
            target: self.path(id),
            dir: self.dir.clone(),
            file: Some(file),
            bytes: 0,
        })
    }

    /// The content of `id` opened for reading; `None` when there is none.
    pub async fn read(&self, id: &str) -> Result<Option<tokio::fs::File>, StoreError> {
        match tokio::fs::File::open(self.path(id)).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the content of `id` (none is fine).
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// A content being written: removed when dropped uncommitted.
#[derive(Debug)]
pub(crate) struct Partial {
    temp: Option<PathBuf>,
    target: PathBuf,
    dir: PathBuf,
    file: Option<tokio::fs::File>,
    bytes: u64,
}

// === impl Partial ===

impl Partial {
    /// Bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `data`.
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().ok_or_else(finished)?;
        file.write_all(data).await?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Makes the content durable under its id: flushed, fsynced, renamed, the directory
    /// fsynced. On failure the temporary file is removed (by the drop).
    pub(crate) async fn commit(mut self) -> Result<u64, StoreError> {
        let mut file = self.file.take().ok_or_else(finished)?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let temp = self.temp.clone().ok_or_else(finished)?;
        tokio::fs::rename(&temp, &self.target).await?;
        self.temp = None;
        let dir = self.dir.clone();
        // The rename is durable once the directory is: a crash now keeps the content.
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(|e| StoreError::Unavailable(format!("directory fsync: {e}")))??;
        Ok(self.bytes)
    }
}

fn finished() -> StoreError {
    StoreError::Protocol("this upload was already committed".into())
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            // The file handle closes first; removing an open file is fine on Unix anyway.
            self.file = None;
            if let Err(e) = std::fs::remove_file(&temp) {
                tracing::warn!(path = %temp.display(), error = %e, "cannot remove a cut upload");
            }
        }
    }
}
