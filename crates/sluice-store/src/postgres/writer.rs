//! The writer task: owns the connection, gathers records into batches and writes them (the
//! queue keeps their tries), serves queries between batches, purges hourly, and at
//! shutdown writes what is left.

use super::conn::{Conn, Retention};
use super::link::{within, Link, NoConn, OP_TIMEOUT};
use super::queue::Queue;
use crate::ledger::counters::Counters;
use crate::ledger::protocol::{Msg, Reply};
use crate::ledger::types::{LedgerOptions, Purged};
use crate::{unix_now_ms, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::Config;

/// Time limit of a purge (the first after enabling retention may delete a lot).
const PURGE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the writer purges.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Messages the writer handles at most between two looks at its timers.
const DRAIN_LIMIT: usize = 1024;

/// The writer task's state.
pub(super) struct Writer {
    link: Link,
    shared: Arc<Counters>,
    retention: Retention,
    queue: Queue,
    next_purge: Instant,
}

impl Writer {
    pub(super) fn new(config: Config, options: LedgerOptions, shared: Arc<Counters>) -> Self {
        Self {
            link: Link::new(config),
            shared,
            retention: Retention {
                raw_days: options.retention_days,
                rollup_days: options.rollup_retention_days,
            },
            queue: Queue::new(options.batch_size, options.flush_interval),
            next_purge: Instant::now() + PURGE_INTERVAL,
        }
    }

    /// Connects and creates the schema: what [`super::PgLedger::open`] waits for.
    pub(super) async fn start(&mut self) -> Result<(), StoreError> {
        self.link.start().await
    }

    pub(super) async fn purge_now(&mut self) {
        let retention = self.retention;
        let now = unix_now_ms();
        match self
            .link
            .run(PURGE_TIMEOUT, async |c| c.purge(now, &retention).await)
            .await
        {
            Ok(p) if p != Purged::default() => {
                tracing::debug!(
                    records = p.records,
                    rollups = p.rollups,
                    windows = p.windows,
                    "postgres ledger purged"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "postgres ledger purge failed"),
        }
        self.next_purge = Instant::now() + PURGE_INTERVAL;
    }

    /// Handles messages and timers until the shutdown (or every handle is gone).
    pub(super) async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        loop {
            let wake = self.next_wake();
            let first = tokio::select! {
                biased;
                msg = rx.recv() => Some(msg),
                () = tokio::time::sleep_until(wake) => None,
            };
            if let Some(first) = first {
                let mut next = first;
                let mut handled = 0;
                loop {
                    match next {
                        None | Some(Msg::Shutdown) => return,
                        Some(msg) => self.handle(msg).await,
                    }
                    handled += 1;
                    if handled >= DRAIN_LIMIT || self.queue.is_full() {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(msg) => next = Some(msg),
                        Err(_) => break,
                    }
                }
            }
            self.tick().await;
        }
    }

    /// When the loop must wake up without a message: the next batch due, or the purge.
    fn next_wake(&self) -> Instant {
        self.queue
            .next_due()
            .map_or(self.next_purge, |due| due.min(self.next_purge))
    }

    /// Writes the batches that are due, answers the flushes they complete, purges on time.
    async fn tick(&mut self) {
        while self.queue.due(Instant::now()) {
            self.write_batch().await;
            self.queue.answer_flushes();
        }
        self.queue.answer_flushes();
        if Instant::now() >= self.next_purge {
            self.purge_now().await;
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Record(record) => self.queue.push(record),
            Msg::Flush(reply) => self.queue.flush(reply),
            Msg::Shutdown => {}
            query => serve(&mut self.link, self.retention, query).await,
        }
    }

    /// Tries to write the next batch; returns whether it did.
    async fn write_batch(&mut self) -> bool {
        let batch = self.queue.batch();
        let n = batch.len();
        let (e, all) = match self.link.get().await {
            Ok(conn) => match within(OP_TIMEOUT, conn.write(batch)).await {
                Ok(()) => {
                    self.queue.written(n);
                    self.shared.resolved(n, true);
                    return true;
                }
                Err(e) => {
                    let broken = self.link.check(&e);
                    (e, broken)
                }
            },
            // Not a try: wait for the link's own backoff (queries' connects failed).
            Err(NoConn::Waiting(at)) => {
                self.queue.wait_until(at);
                return false;
            }
            Err(NoConn::Failed(e)) => (e, true),
        };
        let given_up = self.queue.failed(n, all, &e);
        if given_up > 0 {
            self.shared.resolved(given_up, false);
        }
        false
    }

    /// After a shutdown: writes what is left (one try per batch, stopping at the first
    /// failure), counts the rest as errors, and releases every flush.
    pub(super) async fn stop(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Record(_) | Msg::Flush(_) => self.handle(msg).await,
                // Queries' senders get "writer stopped" when their reply is dropped.
                _ => {}
            }
        }
        self.link.connect_now();
        while !self.queue.is_empty() {
            if !self.write_batch().await {
                break;
            }
        }
        let rest = self.queue.clear();
        if rest > 0 {
            self.shared.resolved(rest, false);
            tracing::warn!(
                records = rest,
                "postgres ledger stopped with records unwritten"
            );
        }
        self.queue.release_flushes();
    }
}

/// Answers a query, on the connection, within its time limit.
async fn serve(link: &mut Link, retention: Retention, query: Msg) {
    match query {
        Msg::Report {
            by,
            since,
            until,
            now,
            reply,
        } => {
            let days = retention.raw_days;
            let op = async |c: &mut Conn| c.report(by, since..until, now, days).await;
            answer(link, OP_TIMEOUT, reply, op).await;
        }
        Msg::Export { since, reply } => {
            answer(link, PURGE_TIMEOUT, reply, async |c| c.export(since).await).await;
        }
        Msg::Log { query, reply } => {
            answer(link, OP_TIMEOUT, reply, async |c| c.log(&query).await).await;
        }
        Msg::WindowSpend {
            key_id,
            window,
            reply,
        } => {
            let op = async |c: &mut Conn| c.window_spend(&key_id, &window).await;
            answer(link, OP_TIMEOUT, reply, op).await;
        }
        Msg::Purge { now, reply } => {
            let op = async |c: &mut Conn| c.purge(now, &retention).await;
            answer(link, PURGE_TIMEOUT, reply, op).await;
        }
        Msg::KeyByHash { hash, reply } => {
            answer(link, OP_TIMEOUT, reply, async |c| {
                c.key_by_hash(&hash).await
            })
            .await;
        }
        Msg::Key { id, reply } => {
            answer(link, OP_TIMEOUT, reply, async |c| c.key(&id).await).await;
        }
        Msg::Keys(reply) => answer(link, OP_TIMEOUT, reply, async |c| c.keys().await).await,
        Msg::SaveKey { key, reply } => {
            answer(link, OP_TIMEOUT, reply, async |c| c.save_key(&key).await).await;
        }
        Msg::Record(_) | Msg::Flush(_) | Msg::Shutdown => {}
    }
}

/// Runs `op` on the link within `limit` and sends the outcome to `reply`.
async fn answer<T>(
    link: &mut Link,
    limit: Duration,
    reply: Reply<T>,
    op: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
) {
    let _ = reply.send(link.run(limit, op).await);
}
