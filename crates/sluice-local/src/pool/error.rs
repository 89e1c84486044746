//! [`PoolError`]: what can go wrong, and the HTTP status and `Retry-After` each maps to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::eviction::PlanError;

/// How long [`PoolError::retry_after`] suggests waiting when the budget is busy.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error from the pool; cheap to clone (every waiter of a failed load gets it).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct PoolError(Arc<PoolErrorKind>);

/// What went wrong; see [`PoolError::kind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolErrorKind {
    /// No model of that name is configured.
    #[error("no local model named `{0}`")]
    NotFound(String),
    /// The model cannot fit even with every other unpinned model unloaded.
    #[error(
        "local model `{name}` needs {need} bytes but the memory budget is {budget} bytes \
         ({pinned} of them held by pinned models)"
    )]
    TooLarge {
        /// The model.
        name: String,
        /// Bytes it needs.
        need: u64,
        /// The pool's budget.
        budget: u64,
        /// Bytes of the budget held by pinned models.
        pinned: u64,
    },
    /// The model would fit, but the models that would have to make room are in use.
    #[error(
        "local model `{name}` needs {need} bytes but only {available} bytes of the memory \
         budget can be freed while the other models are in use; retry later"
    )]
    BudgetBusy {
        /// The model.
        name: String,
        /// Bytes it needs.
        need: u64,
        /// Bytes free plus bytes held by idle, unpinned models.
        available: u64,
    },
    /// The file's SHA-256 differs from the spec's.
    #[error(
        "`{path}` does not match its checksum: expected sha256 `{expected}`, found `{actual}`"
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The spec's digest (lowercase hex).
        expected: String,
        /// The file's digest (lowercase hex).
        actual: String,
    },
    /// The file could not be read to verify its checksum.
    #[error("cannot read `{path}` to verify its checksum: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spec is unusable (e.g. a malformed `sha256`).
    #[error("invalid local model `{name}`: {reason}")]
    InvalidSpec {
        /// The model.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The loader failed (estimate or load).
    #[error("loading local model `{name}` failed: {source}")]
    LoadFailed {
        /// The model.
        name: String,
        /// The loader's error.
        source: crate::Error,
    },
    /// A `keep_alive` value that is neither seconds nor a duration.
    #[error("invalid keep_alive `{0}` (expected seconds or a duration like `5m`)")]
    InvalidKeepAlive(String),
}

// === impl PoolError ===

impl PoolError {
    /// The kind of error.
    pub fn kind(&self) -> &PoolErrorKind {
        &self.0
    }

    /// The HTTP status the server answers with.
    pub fn status_code(&self) -> u16 {
        match self.kind() {
            PoolErrorKind::NotFound(_) => 404,
            PoolErrorKind::InvalidKeepAlive(_) => 400,
            PoolErrorKind::TooLarge { .. } | PoolErrorKind::BudgetBusy { .. } => 503,
            PoolErrorKind::ChecksumMismatch { .. }
            | PoolErrorKind::Io { .. }
            | PoolErrorKind::InvalidSpec { .. }
            | PoolErrorKind::LoadFailed { .. } => 500,
        }
    }

    /// `Retry-After` for errors that go away by themselves ([`PoolErrorKind::BudgetBusy`]).
    pub fn retry_after(&self) -> Option<Duration> {
        matches!(self.kind(), PoolErrorKind::BudgetBusy { .. }).then_some(BUSY_RETRY_AFTER)
    }

    pub(super) fn load_failed(name: &str, source: crate::Error) -> Self {
        PoolErrorKind::LoadFailed {
            name: name.to_owned(),
            source,
        }
        .into()
    }

    pub(super) fn from_plan(name: &str, error: PlanError) -> Self {
        match error {
            PlanError::TooLarge {
                need,
                budget,
                pinned,
            } => PoolErrorKind::TooLarge {
                name: name.to_owned(),
                need,
                budget,
                pinned,
            },
            PlanError::Busy { need, available } => PoolErrorKind::BudgetBusy {
                name: name.to_owned(),
                need,
                available,
            },
        }
        .into()
    }
}

impl From<PoolErrorKind> for PoolError {
    fn from(kind: PoolErrorKind) -> Self {
        Self(Arc::new(kind))
    }
}
