//! A SQLite file owned by one thread that runs whatever closure it is sent with the
//! connection: the gateway's runtimes never block on it. [`SqliteWorker::run`] sends the
//! job at once, so the work is done even when nobody waits for its answer.

use crate::sqlite_file::{open_wal, stop_writer};
use crate::StoreError;
use rusqlite::Connection;
use std::future::Future;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A closure run on the thread; `None` stops it.
type Job = Option<Box<dyn FnOnce(&mut Connection) + Send>>;

#[derive(Debug)]
struct Inner {
    what: &'static str,
    tx: mpsc::Sender<Job>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        stop_writer(&self.tx, &self.thread, None, self.what);
    }
}

/// The thread of one SQLite file. Cheap to clone; the last clone dropped stops the thread.
#[derive(Debug, Clone)]
pub(crate) struct SqliteWorker {
    inner: Arc<Inner>,
}

// === impl SqliteWorker ===

impl SqliteWorker {
    /// Opens (or creates) the file at `path`, runs `schema` and starts the thread
    /// (`sluice-{thread}`); `what` names the store in messages.
    pub(crate) fn open(
        path: &Path,
        schema: &str,
        thread: &str,
        what: &'static str,
    ) -> Result<Self, StoreError> {
        let mut conn = crate::sqlite_file::retry_busy(|| {
            let conn = open_wal(path, what)?;
            conn.execute_batch(schema)?;
            Ok(conn)
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-{thread}"))
            .spawn(move || {
                while let Ok(Some(job)) = rx.recv() {
                    job(&mut conn);
                }
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                what,
                tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Sends `f` to the thread now; the future is its answer.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn FnOnce(&mut Connection) + Send> = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        let what = self.inner.what;
        let sent = self.inner.tx.send(Some(job)).is_ok();
        async move {
            let gone = || StoreError::Unavailable(format!("{what} thread stopped"));
            if !sent {
                return Err(gone());
            }
            answer.await.map_err(|_| gone())?
        }
    }
}
