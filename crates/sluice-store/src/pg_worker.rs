//! A PostgreSQL connection on a thread of its own, for the stores that share the ledger's
//! database (`storage.database_url`): the files' index, the stored responses.
//!
//! Why a thread: a PostgreSQL connection is a task that must keep being polled on one
//! runtime, and the gateway runs several single-threaded ones. So the connection lives on a
//! dedicated thread running a current-thread runtime; each operation is spawned there at
//! once ([`PgWorker::run`]) and its answer awaited from whichever runtime asked. The
//! connection is made at open (which blocks until it is, or fails) and anew at the next
//! operation after it broke, each time creating the store's tables if absent under an
//! advisory lock (replicas may start together); each operation has a time limit of
//! [`OP_TIMEOUT`].

use crate::StoreError;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_postgres::{Client, Config, NoTls};

/// Time limit of one operation (the connect included).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a store's tables are: `schema` (idempotent DDL) created under advisory lock `lock`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schema {
    /// The store's name in messages and its thread's (`sluice-pg-{name}`).
    pub name: &'static str,
    /// `CREATE TABLE IF NOT EXISTS ...`.
    pub ddl: &'static str,
    /// The advisory lock that serializes the creation across replicas.
    pub lock: i64,
}

/// The connection, made anew when it broke.
#[derive(Debug)]
struct Link {
    config: Config,
    schema: Schema,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Link {
    /// The live connection, connecting first if there is none (on the worker's runtime).
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let (mut client, connection) = self.config.connect(NoTls).await?;
        let name = self.schema.name;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres {name} connection ended");
            }
        });
        migrate(&mut client, self.schema).await?;
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
                tracing::warn!("postgres {} thread panicked", self.link.schema.name);
            }
        }
    }
}

/// A store's PostgreSQL connection and its thread. Cheap to clone; the last clone dropped
/// stops the thread.
#[derive(Debug, Clone)]
pub(crate) struct PgWorker {
    inner: Arc<Inner>,
}

fn gone(name: &str) -> StoreError {
    StoreError::Unavailable(format!("postgres {name} thread stopped"))
}

// === impl PgWorker ===

impl PgWorker {
    /// Starts the thread, connects to `url` and creates `schema` if absent. Blocks the
    /// caller until connected, or failed.
    pub(crate) fn open(url: &str, schema: Schema) -> Result<Self, StoreError> {
        let mut config: Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        let (handle, stop, thread) = start_thread(schema.name)?;
        let this = Self {
            inner: Arc::new(Inner {
                handle,
                link: Arc::new(Link {
                    config,
                    schema,
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
        rx.recv().map_err(|_| gone(schema.name))??.map(|_| this)
    }

    /// Starts `op` with the connection on the worker's thread now, within [`OP_TIMEOUT`];
    /// the future is its answer. A connection that timed out is dropped so the next
    /// operation connects anew.
    pub(crate) fn run<T, F, Fut>(
        &self,
        op: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let link = Arc::clone(&self.inner.link);
        let name = link.schema.name;
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
        async move { task.await.map_err(|_| gone(name))? }
    }
}

/// The worker's thread: a current-thread runtime that runs until `stop`.
fn start_thread(name: &str) -> Result<(Handle, oneshot::Sender<()>, JoinHandle<()>), StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("sluice-pg-{name}"))
        .spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop, thread))
}

/// Creates the tables if absent, under the schema's advisory lock.
async fn migrate(client: &mut Client, schema: Schema) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         SELECT pg_advisory_xact_lock({});
         {}",
        schema.lock, schema.ddl
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}
