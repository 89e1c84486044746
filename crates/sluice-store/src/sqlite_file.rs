//! What both SQLite stores (the cache and the ledger) share: opening the file for the one
//! thread that owns it, stopping that thread, and counts as SQLite stores them.

use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Sends `stop` to a writer thread and waits for it to end (once: later calls do nothing).
pub(crate) fn stop_writer<M>(
    tx: &mpsc::Sender<M>,
    thread: &Mutex<Option<JoinHandle<()>>>,
    stop: M,
    what: &str,
) {
    let thread = thread.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(thread) = thread {
        let _ = tx.send(stop);
        // A writer parked while it gathers a batch sees the stop at once.
        thread.thread().unpark();
        if thread.join().is_err() {
            tracing::warn!("{what} writer panicked");
        }
    }
}

/// Opens a SQLite file for one writer thread: WAL where available, `synchronous=NORMAL`,
/// a 5 s busy timeout (other processes, such as the CLI, may hold it briefly).
pub(crate) fn open_wal(path: &Path, what: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::debug!(mode, "{what}: WAL not available");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Runs `open` again while SQLite answers "database is locked" for up to 5 s: the first
/// opening of a new file (the switch to WAL, the schema's creation) takes locks that
/// SQLite does not wait for with its busy timeout, so two processes that create one file at
/// once (a gateway and the CLI, two replicas on one directory) would otherwise fail.
pub(crate) fn retry_busy<T>(
    mut open: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match open() {
            Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < until =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
