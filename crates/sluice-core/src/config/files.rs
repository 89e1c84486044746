//! `[files]`: the Files API (`/v1/files`) that sluice stores itself: where the contents
//! live. The metadata goes where the ledger's does (`files.sqlite` in `storage.data_dir`,
//! or the PostgreSQL of `storage.database_url`).

use super::error::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[files]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedFilesConfig {
    /// Serve `/v1/files` (default `true`).
    pub enabled: Option<bool>,
    /// Directory of the files' contents (default `<storage.data_dir>/files`); with replicas,
    /// a directory every replica mounts.
    pub dir: Option<PathBuf>,
}

/// Validated `[files]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Serve `/v1/files`.
    pub enabled: bool,
    /// The contents' directory, when set; else `<storage.data_dir>/files` ([`Self::dir_in`]).
    pub dir: Option<PathBuf>,
}

impl FilesConfig {
    /// The contents' directory, given the data directory.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("files"))
    }
}

impl UninitializedFilesConfig {
    pub(crate) fn load(self) -> Result<FilesConfig, ConfigError> {
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(ConfigError::new(
                "files.dir",
                "must be a directory (leave it out for `<storage.data_dir>/files`)",
            ));
        }
        Ok(FilesConfig {
            enabled: self.enabled.unwrap_or(true),
            dir: self.dir,
        })
    }
}
