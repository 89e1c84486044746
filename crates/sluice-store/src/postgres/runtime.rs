//! The writer's thread: a dedicated OS thread running a current-thread tokio runtime, on
//! which the connection is polled and the writer task runs (the parent module says why).

use super::writer::Writer;
use crate::ledger::counters::Counters;
use crate::ledger::protocol::Msg;
use crate::ledger::types::LedgerOptions;
use crate::StoreError;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc;
use tokio_postgres::Config;

/// Starts the writer thread and waits until it has connected and checked the schema.
/// Blocks the caller; on a failure the thread has ended when this returns the error.
pub(super) fn start(
    config: Config,
    options: LedgerOptions,
    shared: Arc<Counters>,
    rx: mpsc::UnboundedReceiver<Msg>,
) -> Result<JoinHandle<()>, StoreError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("sluice-pg-ledger".into())
        .spawn(move || writer_thread(config, options, shared, rx, ready_tx))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StoreError::Unavailable(
                "postgres ledger writer failed to start".into(),
            ))
        }
    }
}

/// The thread: builds the runtime, starts the writer (reporting to `ready`), purges, runs
/// until the shutdown, then writes what is left.
fn writer_thread(
    config: Config,
    options: LedgerOptions,
    shared: Arc<Counters>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    ready: std::sync::mpsc::SyncSender<Result<(), StoreError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    runtime.block_on(async move {
        let mut writer = Writer::new(config, options, shared);
        if let Err(e) = writer.start().await {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        writer.purge_now().await;
        writer.run(&mut rx).await;
        writer.stop(&mut rx).await;
    });
}
