//! A SQLite file owned by one thread that runs whatever closure it is sent with the
//! connection: the gateway's runtimes never block on it. [`SqliteWorker::run`] sends the
//! job at once, so the work is done even when nobody waits for its answer.
//!
//! Group commit: the jobs waiting when the thread takes one (up to [`MAX_GROUP`]) run in one
//! transaction, and each job's answer is sent once that transaction is committed, so a
//! write is on disk (as WAL with `synchronous=NORMAL` keeps it) before its caller hears of
//! it, and a burst of writes pays for one commit instead of one each. A job must not open a
//! transaction of its own.

use crate::sqlite_file::{open_wal, stop_writer};
use crate::StoreError;
use rusqlite::Connection;
use std::future::Future;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Most jobs run in one transaction.
const MAX_GROUP: usize = 256;

/// What a job leaves to do once its group's transaction ended: answer its caller (with the
/// commit's error, if the commit failed).
type Reply = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;

/// A closure run on the thread; `None` stops it.
type Job = Option<Box<dyn FnOnce(&mut Connection) -> Reply + Send>>;

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
            .spawn(move || run_jobs(&mut conn, &rx))?;
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
        let job: Box<dyn FnOnce(&mut Connection) -> Reply + Send> = Box::new(move |conn| {
            let done = f(conn);
            Box::new(move |committed: Option<&rusqlite::Error>| {
                let done = match (done, committed) {
                    (Ok(_), Some(e)) => Err(StoreError::Sqlite(clone_error(e))),
                    (done, _) => done,
                };
                let _ = reply.send(done);
            })
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

/// Runs `sql`, compiled once per connection (a group's `BEGIN` and `COMMIT` come with
/// every write).
fn cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

/// The thread's loop: each job, with those waiting behind it, in one transaction; their
/// answers once it is committed. Ends at `None` or when every sender is gone.
fn run_jobs(conn: &mut Connection, rx: &mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_GROUP);
    while let Ok(Some(first)) = rx.recv() {
        let began = cached(conn, "BEGIN").is_ok();
        replies.push(first(conn));
        let mut stop = false;
        while replies.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Some(job)) => replies.push(job(conn)),
                Ok(None) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let committed = match began {
            true => cached(conn, "COMMIT").err(),
            false => None,
        };
        if committed.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies.drain(..) {
            reply(committed.as_ref());
        }
        if stop {
            return;
        }
    }
}

/// A copy of `e` for each caller of a failed commit (rusqlite's errors are not `Clone`).
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> SqliteWorker {
        let dir = std::env::temp_dir().join(format!(
            "sluice-sqlite-worker-{name}-{}-{}",
            std::process::id(),
            crate::unix_now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        SqliteWorker::open(
            &dir.join("w.sqlite"),
            "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)",
            "test",
            "test store",
        )
        .unwrap()
    }

    #[test]
    fn writes_sent_together_all_land_and_a_failing_one_fails_alone() {
        let w = worker("group");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Sent before any is awaited: the thread finds them waiting and groups them.
        let writes: Vec<_> = (0..1000)
            .map(|k| {
                w.run(move |c| {
                    c.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
                    Ok(())
                })
            })
            .collect();
        // A duplicate key fails, in the middle of another group, alone.
        let duplicate = w.run(|c| Ok(c.execute("INSERT INTO t (k) VALUES (5)", [])?));
        let after = w.run(|c| Ok(c.execute("INSERT INTO t (k) VALUES (1000)", [])?));
        rt.block_on(async {
            for write in writes {
                write.await.unwrap();
            }
            assert!(duplicate.await.is_err());
            assert_eq!(after.await.unwrap(), 1);
            let n = w
                .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?))
                .await
                .unwrap();
            assert_eq!(n, 1001);
        });
    }
}
