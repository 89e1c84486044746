//! The connection's read side, shared by the connection (heads) and the request's body
//! (its bytes), and the body's decoding: `Content-Length` or chunked (RFC 9112 section 7.1).

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use sluice_types::chunked;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Longest chunk-size line (with its extensions), and most trailer bytes, taken.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Least free room a read is given; a read past it grows the buffer by [`READ_CHUNK`].
const MIN_READ_ROOM: usize = 1024;
/// What a read reserves when the buffer is short of room.
pub const READ_CHUNK: usize = 8 * 1024;

/// Where the body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes left.
    Length(u64),
    /// Chunked, in this part of a chunk.
    Chunked(Chunk),
    /// The body has ended.
    Done,
    /// Broken (malformed framing, or the client left midway): the connection cannot serve
    /// another request.
    Failed,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines (dropped), this many bytes read so far.
    Trailers(usize),
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The client closed the connection before the body's end.
    Incomplete,
    /// The chunked framing is malformed.
    Malformed(&'static str),
    /// Reading the socket failed.
    Io(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incomplete => {
                f.write_str("the client closed the connection before the body's end")
            }
            Self::Malformed(why) => write!(f, "malformed chunked body: {why}"),
            Self::Io(e) => write!(f, "reading the body failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl Decoder {
    /// Whether the body has been read to its end.
    pub fn is_done(self) -> bool {
        self == Self::Done
    }

    /// The next piece of body data in `buf` (taken from it, no copy), `Ok(None)` when more
    /// bytes are needed or the body ended ([`Decoder::is_done`]).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BodyError> {
        loop {
            match *self {
                Self::Done => return Ok(None),
                Self::Failed => return Err(BodyError::Malformed("the body broke earlier")),
                Self::Length(0) => {
                    *self = Self::Done;
                    return Ok(None);
                }
                Self::Length(left) => {
                    let Some(data) = take(buf, left) else {
                        return Ok(None);
                    };
                    *self = Self::Length(left - data.len() as u64);
                    if left == data.len() as u64 {
                        *self = Self::Done;
                    }
                    return Ok(Some(data));
                }
                Self::Chunked(chunk) => match self.chunked(chunk, buf) {
                    Ok(Step::Data(d)) => return Ok(Some(d)),
                    Ok(Step::More) => return Ok(None),
                    Ok(Step::On) => {}
                    Err(e) => {
                        *self = Self::Failed;
                        return Err(e);
                    }
                },
            }
        }
    }

    fn chunked(&mut self, chunk: Chunk, buf: &mut BytesMut) -> Result<Step, BodyError> {
        match chunk {
            Chunk::Size => {
                let Some(end) = line_end(buf, MAX_CHUNK_LINE)? else {
                    return Ok(Step::More);
                };
                let size = chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                *self = Self::Chunked(match size {
                    0 => Chunk::Trailers(0),
                    n => Chunk::Data(n),
                });
                Ok(Step::On)
            }
            Chunk::Data(left) => {
                let Some(data) = take(buf, left) else {
                    return Ok(Step::More);
                };
                let left = left - data.len() as u64;
                *self = Self::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Step::Data(data))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(BodyError::Malformed(
                        "a chunk's data is not followed by CRLF",
                    ));
                }
                buf.advance(2);
                *self = Self::Chunked(Chunk::Size);
                Ok(Step::On)
            }
            Chunk::Trailers(read) => {
                let room = MAX_TRAILERS.saturating_sub(read);
                let Some(end) = line_end(buf, room)? else {
                    return Ok(Step::More);
                };
                buf.advance(end + 2);
                *self = if end == 0 {
                    Self::Done
                } else {
                    Self::Chunked(Chunk::Trailers(read + end + 2))
                };
                Ok(Step::On)
            }
        }
    }
}

enum Step {
    Data(Bytes),
    More,
    On,
}

/// Up to `left` bytes off the front of `buf`; `None` when it is empty.
fn take(buf: &mut BytesMut, left: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    Some(buf.split_to(n).freeze())
}

/// Where the line at the start of `buf` ends ([`chunked::line_end`]).
fn line_end(buf: &[u8], limit: usize) -> Result<Option<usize>, BodyError> {
    chunked::line_end(buf, limit).map_err(BodyError::Malformed)
}

/// A chunk-size line's size ([`chunked::chunk_size`]).
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    chunked::chunk_size(line).map_err(BodyError::Malformed)
}

/// `Expect: 100-continue`'s progress.
pub mod expect {
    /// The client did not ask for it, or it was answered.
    pub const NONE: u8 = 0;
    /// The client waits for it; the body has not been read yet.
    pub const WAITING: u8 = 1;
    /// The body wants its bytes: the connection is to write `100 Continue`.
    pub const WANTED: u8 = 2;
    /// The response began before the body was read: no `100 Continue` any more.
    pub const REFUSED: u8 = 3;
}

/// The read side of a connection.
#[derive(Debug)]
pub struct ReadSide {
    /// Bytes read and not yet taken (a head, body bytes, a pipelined next request).
    pub buf: BytesMut,
    /// The current request's body.
    pub decoder: Decoder,
    /// The client closed its side (a read returned 0).
    pub eof: bool,
}

/// Body pieces up to this size are copied out of the connection's buffer, so that a
/// request in flight does not keep the whole buffer alive for a small body.
const COPY_BELOW: usize = 2048;

impl ReadSide {
    /// A piece of body data as the handler keeps it; the buffer is let go once the body has
    /// ended with nothing after it (a pipelined request's bytes keep it).
    fn keep(&mut self, data: Bytes) -> Bytes {
        let data = if data.len() < COPY_BELOW {
            Bytes::copy_from_slice(&data)
        } else {
            data
        };
        self.release_if_spent();
        data
    }

    /// Lets the buffer go when the body has ended and nothing follows it (a pipelined
    /// request's bytes keep it).
    pub fn release_if_spent(&mut self) {
        let ended = !matches!(self.decoder, Decoder::Length(_) | Decoder::Chunked(_));
        if ended && self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

/// What the connection and its current request's body share.
#[derive(Debug)]
pub struct Shared {
    /// The socket (reads and writes take `&`).
    pub stream: TcpStream,
    read: Mutex<ReadSide>,
    /// See [`expect`].
    pub expect: AtomicU8,
    /// Wakes the connection when the body wants a `100 Continue` written.
    pub continue_wanted: Notify,
    /// The connection's task, waiting for the body's end to watch the client's.
    end_watch: Mutex<Option<Waker>>,
}

impl Shared {
    /// A connection's shared state, nothing read yet.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: Mutex::new(ReadSide {
                buf: BytesMut::new(),
                decoder: Decoder::Done,
                eof: false,
            }),
            expect: AtomicU8::new(expect::NONE),
            continue_wanted: Notify::new(),
            end_watch: Mutex::new(None),
        }
    }

    /// The socket and what was read from it and not taken.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        let side = self
            .read
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        (self.stream, side.buf)
    }

    /// The read side, locked.
    pub fn read(&self) -> MutexGuard<'_, ReadSide> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads what the socket holds now into `side.buf`: `Ok(None)` when it holds nothing
    /// (wait for it to be readable), `Ok(Some(0))` at the client's end of stream.
    pub fn try_fill(&self, side: &mut ReadSide) -> io::Result<Option<usize>> {
        if side.buf.capacity() - side.buf.len() < MIN_READ_ROOM {
            side.buf.reserve(READ_CHUNK);
        }
        let room = side.buf.capacity() - side.buf.len();
        let mut short = None;
        // A read that fills less than the room left emptied the socket: its readiness is
        // cleared here, as tokio's own `poll_read` does, so the next wait does not begin
        // with a read that can only say "nothing yet". The read runs inside `try_io`, which
        // took the readiness event before it: an event that arrives during the read is a
        // new one and survives the clear (taking it after the read would lose it).
        let read = self.stream.try_io(Interest::READABLE, || {
            let n = self.stream.try_read_buf(&mut side.buf)?;
            if n > 0 && n < room {
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (read, short) {
            (_, Some(n)) => Ok(Some(n)),
            (Ok(n), None) => {
                side.eof |= n == 0;
                Ok(Some(n))
            }
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            (Err(e), None) => Err(e),
        }
    }

    /// Reads what the socket holds into `side.buf`: `Ready(Ok(n))` once it read (0 at the
    /// client's end of stream), `Pending` until the socket is readable.
    pub fn poll_fill(&self, side: &mut ReadSide, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            if let Some(n) = self.try_fill(side)? {
                return Poll::Ready(Ok(n));
            }
        }
    }

    /// The next piece of the current body (see [`RequestBody`]), and whether the body has
    /// ended with it. When the body ends (or breaks) the connection's watch for the
    /// client's end of stream is woken ([`Shared::watch_end`]).
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<Option<Result<(Bytes, bool), BodyError>>> {
        let polled = ready!(self.poll_piece(cx));
        let mut side = self.read();
        let ended = !matches!(side.decoder, Decoder::Length(_) | Decoder::Chunked(_));
        if ended {
            side.release_if_spent();
            drop(side);
            let watching = self
                .end_watch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(w) = watching {
                w.wake();
            }
        }
        Poll::Ready(polled.map(|r| r.map(|data| (data, ended))))
    }

    fn poll_piece(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let mut side = self.read();
        loop {
            let side = &mut *side;
            match side.decoder.decode(&mut side.buf) {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(side.keep(data)))),
                Ok(None) if side.decoder.is_done() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            if side.eof {
                side.decoder = Decoder::Failed;
                return Poll::Ready(Some(Err(BodyError::Incomplete)));
            }
            if self
                .expect
                .compare_exchange(
                    expect::WAITING,
                    expect::WANTED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                self.continue_wanted.notify_one();
            }
            if let Err(e) = ready!(self.poll_fill(side, cx)) {
                side.decoder = Decoder::Failed;
                return Poll::Ready(Some(Err(BodyError::Io(e.to_string()))));
            }
        }
    }

    /// Registers the connection's task to be woken when the current body ends (its watch
    /// for the client's end of stream starts then).
    pub fn watch_end(&self, waker: &Waker) {
        let mut slot = self
            .end_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &mut *slot {
            Some(w) if w.will_wake(waker) => {}
            other => *other = Some(waker.clone()),
        }
    }
}

/// A request's body as it arrives on the connection: data frames taken from the
/// connection's buffer without a copy.
#[derive(Debug)]
pub struct RequestBody {
    shared: Arc<Shared>,
    /// The body ended (or broke): no more frames.
    over: bool,
}

impl RequestBody {
    /// The body of the request the connection just read the head of.
    pub fn new(shared: Arc<Shared>) -> Self {
        let over = shared.read().decoder.is_done();
        Self { shared, over }
    }

    /// Lets the connection's read buffer go for one of the size of what it holds (the
    /// bytes read with the head): for a request about to wait before anything reads it.
    pub fn shrink(&self) {
        let mut side = self.shared.read();
        if side.buf.capacity() - side.buf.len() > MIN_READ_ROOM {
            side.buf = if side.buf.is_empty() {
                BytesMut::new()
            } else {
                BytesMut::from(&side.buf[..])
            };
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.over {
            return Poll::Ready(None);
        }
        let polled = ready!(self.shared.poll_body(cx));
        // Over once ended: a holder polling again later never reads the next request's body.
        self.over = !matches!(polled, Some(Ok((_, false))));
        Poll::Ready(polled.map(|r| r.map(|(data, _)| Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.over
    }

    fn size_hint(&self) -> SizeHint {
        match self.shared.read().decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes: the data, and the decoder's end.
    fn decode(
        mut d: Decoder,
        wire: &[u8],
        step: usize,
    ) -> (Result<Vec<u8>, BodyError>, Decoder, usize) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(data)) => out.extend_from_slice(&data),
                    Ok(None) => break,
                    Err(e) => return (Err(e), d, buf.len()),
                }
            }
        }
        (Ok(out), d, buf.len())
    }

    #[test]
    fn a_length_body_ends_at_its_length_and_leaves_the_next_request() {
        for step in [1, 3, 100] {
            let (data, d, left) = decode(Decoder::Length(5), b"helloGET /", step);
            assert_eq!(data.unwrap(), b"hello");
            assert!(d.is_done());
            assert_eq!(left, 5, "the pipelined bytes stay in the buffer");
        }
    }

    #[test]
    fn a_chunked_body_is_decoded_whatever_the_pieces() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            let (data, d, left) = decode(Decoder::Chunked(Chunk::Size), wire, step);
            assert_eq!(
                data.unwrap(),
                b"helloabcdefghijklmnopqrstuvwxyz",
                "step {step}"
            );
            assert!(d.is_done());
            assert_eq!(left, 4);
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"5;x\nAAAA\r\nhello\r\n0\r\n\r\n",
            b"5;x\rA\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nx: y\nz\r\n\r\n",
            &[b'1'; MAX_CHUNK_LINE + 10],
        ] {
            let (data, d, _) = decode(Decoder::Chunked(Chunk::Size), wire, 3);
            assert!(data.is_err(), "{:?}", String::from_utf8_lossy(wire));
            assert_eq!(d, Decoder::Failed);
        }
        // Trailers past their bound.
        let mut wire = b"0\r\n".to_vec();
        for _ in 0..2000 {
            wire.extend_from_slice(b"x-t: yyyyyyyy\r\n");
        }
        let (data, _, _) = decode(Decoder::Chunked(Chunk::Size), &wire, 64);
        assert!(data.is_err());
    }

    #[test]
    fn a_small_body_is_copied_and_the_buffer_let_go_once_it_ended() {
        let mut buf = BytesMut::with_capacity(8192);
        buf.extend_from_slice(b"hello");
        let mut side = ReadSide {
            buf,
            decoder: Decoder::Length(5),
            eof: false,
        };
        let data = side.decoder.decode(&mut side.buf).unwrap().unwrap();
        let kept = side.keep(data);
        assert_eq!(kept, &b"hello"[..]);
        assert_eq!(
            side.buf.capacity(),
            0,
            "no buffer held while the request runs"
        );
        // Bytes of a pipelined request keep it.
        let mut buf = BytesMut::with_capacity(8192);
        buf.extend_from_slice(b"helloGET");
        let mut side = ReadSide {
            buf,
            decoder: Decoder::Length(5),
            eof: false,
        };
        let data = side.decoder.decode(&mut side.buf).unwrap().unwrap();
        side.keep(data);
        assert_eq!(&side.buf[..], b"GET");
    }

    #[tokio::test]
    async fn a_waiting_request_keeps_a_buffer_of_the_size_of_its_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let _client = client.unwrap();
        let shared = Arc::new(Shared::new(accepted.unwrap().0));
        {
            let mut side = shared.read();
            side.buf.reserve(READ_CHUNK);
            side.buf.extend_from_slice(b"{\"model\":\"m\"}");
            side.decoder = Decoder::Length(15);
        }
        let body = RequestBody::new(Arc::clone(&shared));
        body.shrink();
        let side = shared.read();
        assert_eq!(&side.buf[..], b"{\"model\":\"m\"}");
        assert!(side.buf.capacity() < 64, "{}", side.buf.capacity());
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"FF ; name=value").unwrap(), 255);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
    }
}
