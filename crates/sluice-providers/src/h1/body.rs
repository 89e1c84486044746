//! The body of an answer on a connection of [`super::H1Client`]: reading it reads the
//! connection (so the answer streams as it arrives), and as soon as its framing says it
//! ended, the connection goes back to its pool (unless the answer said `Connection: close`,
//! ran until the close, or was followed by bytes nobody asked for). Dropped before its end
//! (the client went away, a timeout), it drops the connection, which closes it and so
//! cancels the upstream request.

use super::conn::{Answer, Conn};
use super::error::{Cause, Failure};
use super::framing::{append, Decoder};
use super::pool::Pool;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// An answer's body, holding its connection until the end.
pub struct H1Body {
    conn: Option<Conn>,
    decoder: Decoder,
    /// Bytes read and not yet handed out (what a read brought past the last piece taken).
    read: Bytes,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("decoder", &self.decoder)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl H1Body {
    /// The body following `answer`'s head on `conn`. One already ended (none at all)
    /// gives its connection back at once.
    pub(super) fn from_answer(
        answer: Answer,
        conn: Conn,
        pool: Arc<Pool>,
    ) -> (http::response::Parts, Self) {
        let mut body = Self {
            conn: Some(conn),
            decoder: answer.framing,
            read: answer.rest,
            keep_alive: answer.keep_alive,
            pool,
        };
        if body.decoder.is_done() {
            body.release();
        }
        (answer.parts, body)
    }

    /// The body ended: its connection goes back to the pool if it can serve another
    /// request (nothing unasked read after the body), else it is closed.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && self.read.is_empty() {
                self.pool.put(conn);
            }
        }
        self.read = Bytes::new();
    }

    fn fail(&mut self, cause: Cause) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        self.conn = None;
        self.read = Bytes::new();
        self.decoder = Decoder::Failed;
        Poll::Ready(Some(Err(Failure::Body(cause))))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        let this = self.get_mut();
        loop {
            match this.decoder {
                Decoder::Done => return Poll::Ready(None),
                Decoder::Failed => return this.fail(Cause::Framing("the body broke earlier")),
                _ => {}
            }
            match this.decoder.next(&mut this.read) {
                Ok(Some(data)) => {
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if this.decoder.is_done() => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(cause) => return this.fail(cause),
            }
            let Some(conn) = &this.conn else {
                return this.fail(Cause::Closed);
            };
            match std::task::ready!(conn.poll_read(cx)) {
                Ok(Some(more)) => append(&mut this.read, more),
                Ok(None) => {
                    // The connection is over whatever the body's framing.
                    this.conn = None;
                    if let Err(cause) = this.decoder.at_end_of_stream() {
                        return this.fail(cause);
                    }
                }
                Err(e) => return this.fail(Cause::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
