//! The drain of client connections at shutdown.
//!
//! On the signal every connection is asked to finish (hyper's graceful shutdown: the request
//! in flight completes, then the connection closes; an idle keep-alive connection closes at
//! once), and the drain waits for all of them. Two kinds of connection would be lost on the
//! way although a load balancer in front rightly sent a request to them (the replica was
//! still listening), and for a POST the balancer cannot tell that nothing was done, so it
//! does not retry: a connection taken just before the signal whose request has not arrived
//! yet (hyper's protocol detection, cancelled, would drop it unread), and one still in the
//! kernel's accept queue (closing the listener resets it). So a connection that has read
//! nothing is given up to [`FIRST_READ_WAIT`] for its request before it is asked to finish,
//! and the accept queue is emptied ([`take_queued`]) before the listener closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Longest a connection that has read nothing when the signal comes waits for its request.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(1);

/// Most connections taken from the accept queue at shutdown.
const MAX_QUEUED: usize = 4096;

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

    /// Runs `conn` to its end; on the signal (even one sent before), once `first` saw the
    /// connection's first bytes or [`FIRST_READ_WAIT`] passed, calls `finish` on it (hyper's
    /// graceful shutdown) and runs it to its end.
    pub fn watch<C, F>(
        &self,
        conn: C,
        first: Arc<FirstRead>,
        finish: F,
    ) -> impl Future<Output = ()> + 'static
    where
        C: Future + 'static,
        F: FnOnce(Pin<&mut C>) + 'static,
    {
        let mut signal = self.signal.subscribe();
        async move {
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

/// Whether a connection has read its first bytes.
#[derive(Debug, Default)]
pub struct FirstRead {
    read: AtomicBool,
    notify: Notify,
}

/// A client connection that tells its [`FirstRead`] when its first bytes arrive.
#[derive(Debug)]
pub struct Watched {
    stream: TcpStream,
    /// Until the first bytes.
    first: Option<Arc<FirstRead>>,
}

impl Watched {
    /// `stream`, and what it will tell.
    pub fn new(stream: TcpStream) -> (Self, Arc<FirstRead>) {
        let first = Arc::new(FirstRead::default());
        let watched = Self {
            stream,
            first: Some(Arc::clone(&first)),
        };
        (watched, first)
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            if let Some(first) = self.first.take() {
                first.read.store(true, Ordering::Release);
                first.notify.notify_one();
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
