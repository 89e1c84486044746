//! The connection, made anew when it breaks: the first connect (with the schema check)
//! while [`super::PgLedger::open`] waits, then, after the connection was lost, a reconnect
//! at the next use, with backoff between failed connects. Every operation runs within a
//! time limit; past it the connection is dropped.

use super::backoff::Backoff;
use super::conn::Conn;
use super::schema::migrate;
use crate::StoreError;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::{Client, Config, NoTls};

/// Connect timeout unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time limit of one batch or query; past it the connection is dropped and made anew.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection settings of `url`, with sluice's defaults: the connect timeout above
/// unless the URL sets one, and `sluice` as the application name.
pub(super) fn config(url: &str) -> Result<Config, StoreError> {
    let mut config: Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("sluice");
    }
    Ok(config)
}

/// Runs `fut` within `limit`.
pub(super) async fn within<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| StoreError::Timeout(limit))?
}

/// Connects, and drives the connection on this thread's runtime.
async fn connect(config: &Config) -> Result<Client, StoreError> {
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT)
        + Duration::from_secs(5);
    let (client, connection) = within(limit, async {
        config.connect(NoTls).await.map_err(StoreError::from)
    })
    .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres ledger connection ended");
        }
    });
    Ok(client)
}

/// Why [`Link::get`] has no connection to give.
pub(super) enum NoConn {
    /// Backing off after a failed connect: no attempt before this.
    Waiting(Instant),
    /// The connect attempt just made failed.
    Failed(StoreError),
}

impl From<NoConn> for StoreError {
    fn from(e: NoConn) -> Self {
        match e {
            NoConn::Waiting(at) => StoreError::Unavailable(format!(
                "postgres unreachable, next connect attempt in {:?}",
                at.saturating_duration_since(Instant::now())
            )),
            NoConn::Failed(e) => e,
        }
    }
}

/// The connection: made anew when it breaks, with backoff between failed connects.
pub(super) struct Link {
    config: Config,
    conn: Option<Conn>,
    /// No connect attempt before this (set after a failed one).
    connect_at: Option<Instant>,
    backoff: Backoff,
}

impl Link {
    /// A link to the database `config` names, not connected yet.
    pub(super) fn new(config: Config) -> Self {
        Self {
            config,
            conn: None,
            connect_at: None,
            backoff: Backoff::default(),
        }
    }

    /// Connects and creates the schema: what [`super::PgLedger::open`] waits for.
    pub(super) async fn start(&mut self) -> Result<(), StoreError> {
        let mut client = connect(&self.config).await?;
        within(OP_TIMEOUT, migrate(&mut client)).await?;
        let conn = within(OP_TIMEOUT, Conn::prepare(client)).await?;
        self.conn = Some(conn);
        Ok(())
    }

    /// The connection, connecting if there is none and the backoff allows.
    pub(super) async fn get(&mut self) -> Result<&mut Conn, NoConn> {
        if self.conn.as_ref().is_some_and(|c| c.is_closed()) {
            tracing::info!("postgres ledger: connection lost, reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            if let Some(at) = self.connect_at.filter(|&at| Instant::now() < at) {
                return Err(NoConn::Waiting(at));
            }
            let connected = match connect(&self.config).await {
                Ok(client) => within(OP_TIMEOUT, Conn::prepare(client)).await,
                Err(e) => Err(e),
            };
            match connected {
                Ok(conn) => {
                    tracing::info!("postgres ledger: connected");
                    self.connect_at = None;
                    self.backoff.reset();
                    self.conn = Some(conn);
                }
                Err(e) => {
                    self.connect_at = Some(Instant::now() + self.backoff.fail());
                    return Err(NoConn::Failed(e));
                }
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| NoConn::Failed(StoreError::Unavailable("postgres not connected".into())))
    }

    /// Runs `op` on the connection within `limit`. On a timeout or a broken connection the
    /// connection is dropped, to be made anew at the next use.
    pub(super) async fn run<T>(
        &mut self,
        limit: Duration,
        op: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.get().await?;
        let result = within(limit, op(conn)).await;
        if let Err(e) = &result {
            self.check(e);
        }
        result
    }

    /// After `e` from an operation on the connection: drops the connection if `e` means it
    /// is unusable (a timeout, or closed); returns whether it did.
    pub(super) fn check(&mut self, e: &StoreError) -> bool {
        let broken =
            matches!(e, StoreError::Timeout(_)) || self.conn.as_ref().is_none_or(|c| c.is_closed());
        if broken {
            self.conn = None;
        }
        broken
    }

    /// Lets the next use connect at once, even while backing off (at shutdown: one last
    /// try).
    pub(super) fn connect_now(&mut self) {
        self.connect_at = None;
    }
}
