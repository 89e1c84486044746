//! One upstream connection: its socket and nothing else. A request writes itself on it
//! ([`super::write`]) and reads the answer's head ([`super::head`]); the body then reads
//! the rest ([`super::body`]). Reads go into the worker thread's scratch buffer and come
//! out as `Bytes` of exactly what was read, so neither an idle connection nor one waiting
//! for its upstream holds a buffer.

use super::error::{Cause, Failure};
use super::framing::{append, Decoder};
use super::head::{self, MAX_HEAD_BYTES};
use super::write::{Outgoing, Sent, Unsent};
use bytes::{Buf, Bytes};
use http::response;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use std::cell::RefCell;
use std::io;
use std::task::{ready, Context, Poll};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tower_service::Service;

/// The worker thread's read buffer: what a read brings is copied out of it at its size.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// A connection: its socket.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    /// Taken from the idle pool (a request that fails on it unsent may be retried).
    pub(super) reused: bool,
}

/// The response head read off a connection, and what followed it.
pub(super) struct Answer {
    pub(super) parts: response::Parts,
    pub(super) framing: Decoder,
    pub(super) keep_alive: bool,
    /// Bytes read after the head (the body's first).
    pub(super) rest: Bytes,
}

/// Why an exchange failed, and whether the request can go on another connection (none of
/// it was written).
pub(super) struct Failed {
    pub(super) cause: Cause,
    pub(super) unsent: bool,
}

impl Conn {
    /// Connects to `origin` (`scheme://authority`).
    pub(super) async fn open(connector: &HttpConnector, origin: &Uri) -> Result<Self, Failure> {
        let mut connector = connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        let io = connector
            .call(origin.clone())
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        Ok(Self {
            stream: io.into_inner(),
            reused: false,
        })
    }

    /// Shuts the connection's sending side, as if the upstream had gone between the pool's
    /// check and the write: the next write fails before its first byte.
    #[cfg(test)]
    pub(super) fn shut_sending(&self) {
        use std::os::fd::AsFd;
        let fd = self.stream.as_fd().try_clone_to_owned().unwrap();
        std::net::TcpStream::from(fd)
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
    }

    /// Whether an idle connection is still usable: nothing to read on it (the upstream has
    /// not closed it, nor sent anything unasked). No system call unless the socket was
    /// seen readable.
    pub(super) fn is_alive(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// What the socket holds now, or `Pending` until it is readable; `None` at the end of
    /// the stream.
    pub(super) fn poll_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.try_read() {
                Ok(read) => return Poll::Ready(Ok(read)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn try_read(&self) -> io::Result<Option<Bytes>> {
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut short = None;
            // A read that fills less than the scratch emptied the socket: its readiness is
            // cleared here (as tokio's own `poll_read` does), so that the next wait does not
            // begin with a read that can only say "nothing yet". The read runs inside
            // `try_io`, which took the readiness before it: an event during the read
            // survives the clear.
            let read = self.stream.try_io(Interest::READABLE, || {
                let n = self.stream.try_read(scratch)?;
                if n > 0 && n < scratch.len() {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            let copy = |n: usize| Bytes::copy_from_slice(&scratch[..n]);
            match (read, short) {
                (_, Some(n)) => Ok(Some(copy(n))),
                (Ok(0), None) => Ok(None),
                (Ok(n), None) => Ok(Some(copy(n))),
                (Err(e), None) => Err(e),
            }
        })
    }

    /// Sends `out` and reads the answer's head (interim `1xx` answers skipped).
    pub(super) async fn exchange(&mut self, out: &mut Outgoing) -> Result<Answer, Failed> {
        let sent = out
            .send(&self.stream)
            .await
            .map_err(|Unsent { cause, wrote }| Failed {
                cause,
                unsent: !wrote,
            })?;
        let failed = |cause| Failed {
            cause,
            unsent: false,
        };
        let mut read = Bytes::from(std::mem::take(&mut out.early));
        loop {
            while !read.is_empty() {
                let Some((head, taken)) = head::parse(&read, out.to_head).map_err(failed)? else {
                    if read.len() > MAX_HEAD_BYTES {
                        return Err(failed(Cause::HeadTooLarge(MAX_HEAD_BYTES)));
                    }
                    break;
                };
                read.advance(taken);
                if head.is_interim() {
                    continue;
                }
                return Ok(Answer {
                    parts: head.parts,
                    framing: head.framing,
                    keep_alive: head.keep_alive && sent == Sent::Whole && !out.closes,
                    rest: read,
                });
            }
            match std::future::poll_fn(|cx| self.poll_read(cx)).await {
                Ok(Some(more)) => append(&mut read, more),
                Ok(None) => return Err(failed(Cause::Closed)),
                Err(e) => return Err(failed(Cause::Read(e))),
            }
        }
    }
}
