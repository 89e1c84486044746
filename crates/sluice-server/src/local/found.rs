//! A model found on disk rather than configured.

use std::path::PathBuf;

/// A local model found on disk (in `[local] models_dir` or Ollama's store).
#[derive(Debug, Clone)]
pub struct Found {
    /// The name clients use.
    pub name: String,
    /// Its file or directory.
    pub path: PathBuf,
}
