//! The one error type of the stores, with a low-cardinality label for metrics.

use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached right now (connect refused, backing off after a failure,
    /// its worker thread gone, too many operations queued).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation did not finish within its time limit.
    #[error("store operation timed out after {0:?}")]
    Timeout(Duration),
    /// The peer said something that breaks the protocol, or a reply of an unexpected shape.
    #[error("store protocol error: {0}")]
    Protocol(String),
    /// The store answered the command with an error (a Redis `-ERR ...` reply).
    #[error("store error reply: {0}")]
    Reply(String),
    /// A socket or file failed.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed: the client's error with its causes (the server's message for an
    /// error the server sent).
    #[error("postgres: {0}")]
    Postgres(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The client's own `Display` omits the cause ("db error"): append the chain.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Postgres(text)
    }
}

impl StoreError {
    /// A fixed label for metrics and logs: `unavailable`, `timeout`, `protocol`, `reply`,
    /// `io`, `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Protocol(_) => "protocol",
            Self::Reply(_) => "reply",
            Self::Io(_) => "io",
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}
