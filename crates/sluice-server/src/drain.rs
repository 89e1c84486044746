//! The drain of client connections at shutdown.
//!
//! On the signal every connection is asked to finish (the request in flight completes, then
//! the connection closes; an idle keep-alive connection closes at once: `front` for
//! HTTP/1.1, hyper's graceful shutdown for HTTP/2), and the drain waits for all of them. Two kinds of connection would be lost on the
//! way although a load balancer in front rightly sent a request to them (the replica was
//! still listening), and for a POST the balancer cannot tell that nothing was done, so it
//! does not retry: a connection taken just before the signal whose request has not arrived
//! yet (closed as idle, it would be dropped unread), and one still in the
//! kernel's accept queue (closing the listener resets it). So a connection that has read
//! nothing is given up to [`FIRST_READ_WAIT`] for its request before it is asked to finish,
//! and the accept queue is emptied ([`take_queued`]) before the listener closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// Longest a connection that has read nothing when the signal comes waits for its request.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(1);

/// Most connections taken from the accept queue at shutdown.
const MAX_QUEUED: usize = 4096;

/// Work a request leaves behind after its response has ended (a streamed answer's
/// webhooks, and the spend record that waits for their verdict): counted, so that a
/// shutdown waits for it (within its grace) before the spend log's last flush.
#[derive(Debug, Default)]
pub struct Lingering {
    count: std::sync::atomic::AtomicUsize,
    idle: Notify,
}

/// One piece of lingering work: done when dropped.
#[derive(Debug)]
pub struct Linger(Arc<Lingering>);

impl Lingering {
    /// Counts one piece of work until the returned guard drops.
    pub fn hold(self: &Arc<Self>) -> Linger {
        self.count.fetch_add(1, Ordering::AcqRel);
        Linger(Arc::clone(self))
    }

    /// Waits up to `grace` for every piece to be done; returns whether they all were.
    pub async fn settle(&self, grace: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, idle).await.is_ok()
    }
}

impl Drop for Linger {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The shutdown signal, and the connections watching it.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// No signal yet, no connection.
    pub fn new() -> Self {
        Self {
            signal: watch::channel(false).0,
        }
    }

    /// The signal, for a connection that watches it itself (sluice's HTTP/1.1 connections,
    /// see `front`): the drain waits until every receiver is dropped.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// Sends the signal and waits up to `grace` for every watched connection to end; returns
    /// whether they all did.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.signal.send_replace(true);
        tokio::time::timeout(grace, self.signal.closed())
            .await
            .is_ok()
    }
}

/// Runs `conn` (hyper's HTTP/2 connection) to its end; on `signal` (even one sent before),
/// once `first` saw the connection's first bytes or [`FIRST_READ_WAIT`] passed, calls
/// `finish` on it (hyper's graceful shutdown) and runs it to its end. The receiver is held
/// until then, so the drain waits for it.
pub async fn watch<C, F>(
    mut signal: watch::Receiver<bool>,
    conn: C,
    first: Arc<FirstRead>,
    finish: F,
) where
    C: Future,
    F: FnOnce(Pin<&mut C>),
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = signal.wait_for(|stop| *stop) => {}
    }
    if !first.read.load(Ordering::Acquire) {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = first.notify.notified() => {}
            () = tokio::time::sleep(FIRST_READ_WAIT) => {}
        }
    }
    finish(conn.as_mut());
    let _ = conn.await;
    // The receiver goes last: the drain waits for every one.
    drop(signal);
}

/// Whether a connection has read its first bytes.
#[derive(Debug, Default)]
pub struct FirstRead {
    read: AtomicBool,
    notify: Notify,
}

impl FirstRead {
    /// Of a connection whose first bytes were read already.
    pub fn done() -> Arc<Self> {
        Arc::new(Self {
            read: AtomicBool::new(true),
            notify: Notify::new(),
        })
    }
}

/// Closes `listener` after taking the connections waiting in its accept queue (each
/// non-blocking, ready for [`TcpStream::from_std`]).
pub fn take_queued(listener: TcpListener) -> Vec<std::net::TcpStream> {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the accept queue at shutdown");
            return Vec::new();
        }
    };
    let mut queued = Vec::new();
    while queued.len() < MAX_QUEUED {
        match listener.accept() {
            Ok((stream, _)) => match stream.set_nonblocking(true) {
                Ok(()) => queued.push(stream),
                Err(e) => tracing::warn!(error = %e, "cannot serve a queued connection"),
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed at shutdown");
                break;
            }
        }
    }
    queued
}
