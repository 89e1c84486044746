//! The body of an answer on a connection of [`super::H1Client`]: reading it drives the
//! connection (so the answer streams as it arrives), and once it has ended and the
//! connection is idle, the connection goes back to its pool. Dropped before its end (the
//! client went away, a timeout), it drops the connection, which closes it and so cancels
//! the upstream request.

use super::conn::Conn;
use super::pool::Pool;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// An answer's body, holding its connection until the end.
pub struct H1Body {
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body").field("body", &self.body).finish()
    }
}

impl H1Body {
    pub(super) fn new(body: Incoming, conn: Conn, pool: Arc<Pool>) -> Self {
        Self {
            body,
            conn: Some(conn),
            pool,
        }
    }

    /// The body ended: its connection goes back to the pool if idle (polled once more if
    /// it has not noticed yet), else it is closed.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut conn) = self.conn.take() {
            if !conn.is_ready() && conn.drive(cx).is_ready() {
                return;
            }
            if conn.is_ready() {
                self.pool.put(conn);
            }
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            if conn.drive(cx).is_ready() {
                // Ended: what it read is in the body, or the body fails.
                this.conn = None;
            }
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(cx),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body dropped once its connection is idle (all of it read, not yet seen to
        // end) leaves a reusable connection.
        if let Some(conn) = self.conn.take() {
            if conn.is_ready() {
                self.pool.put(conn);
            }
        }
    }
}
