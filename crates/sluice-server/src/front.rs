//! The client side's HTTP/1.1 server: one connection, read and written by its own task.
//!
//! Why not hyper's server (which sluice used before): a connection here holds no buffer
//! while it waits for its next request, so thousands of idle or waiting keep-alive
//! connections cost little more than their sockets; the read buffer is taken when bytes
//! arrive and given back when the request's bytes are all taken. A connection's task holds
//! its request's future in a box only while the request runs.
//!
//! - **Heads** are parsed with `httparse` ([`head`]): at most [`head::MAX_HEADERS`] fields
//!   and [`MAX_HEAD_BYTES`] (431 past them); framing as RFC 9112 says, request smuggling
//!   shapes refused (400); a head must arrive within `server.request_read_timeout_ms` of the
//!   connection's turn to read one (an idle keep-alive connection included: it is closed
//!   then, as hyper did).
//! - **Bodies** ([`body`]) are read as the request's handler asks for them, from the same
//!   buffer, without a copy; `Content-Length` or chunked; `Expect: 100-continue` answered
//!   when the handler first reads the body (never if it answers first).
//! - **Responses** ([`write`]) go out with a `Content-Length` when the body's length is known,
//!   else chunked (HTTP/1.0: until the close); a whole response in one write; a stream's
//!   frames each as it comes. A body that breaks off midway ([`crate::response::Aborted`])
//!   closes the connection without the last chunk, so the client sees it cut.
//! - **A client that leaves** while its request runs (end of stream on the socket once the
//!   body was read) drops the request's future, which cancels its upstream call.
//! - **HTTP/2 with prior knowledge**: a connection whose first bytes are HTTP/2's preface is
//!   handed back ([`Served::Http2`]) with those bytes, for hyper's HTTP/2 server.
//! - **Shutdown**: on the drain's signal an idle connection closes; one that has read nothing
//!   yet waits up to [`drain::FIRST_READ_WAIT`] for its request; a request in flight is
//!   answered (`Connection: close`) and the connection closes.

mod body;
mod head;
mod write;

pub use body::RequestBody;

use crate::drain;
use crate::response::ResponseBody;
use body::{expect, Decoder, Shared};
use bytes::{Bytes, BytesMut};
use http::header::CONNECTION;
use http::{Request, Response, Version};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use write::Out;

/// Largest request head (request line and header fields) taken; past it: 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most body bytes read and thrown away after a response so that the connection can serve
/// another request (a handler that answered without reading its body); past it, or past
/// [`DRAIN_WAIT`], the connection closes.
const MAX_DRAIN_BYTES: u64 = 256 * 1024;
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// How long a closing connection reads and discards what the client still sends after the
/// response (so that its unread bytes do not make the kernel reset the response away).
const LINGER: Duration = Duration::from_secs(2);
const MAX_LINGER_BYTES: usize = 1024 * 1024;

/// HTTP/2's connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A request's handler: its future is boxed, so the connection holds a pointer between
/// requests.
pub type Handler = Box<
    dyn Fn(Request<RequestBody>) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
        + Send
        + Sync,
>;

/// How a connection ended.
pub enum Served {
    /// Closed (by either side, a timeout, or the drain).
    Closed,
    /// Its first bytes are HTTP/2's preface: serve it with HTTP/2 (the bytes read come
    /// first).
    Http2(Rewind),
}

/// Serves HTTP/1.x requests on `stream` until it closes; `signal` is the drain's (see
/// `drain`): held until the connection ends, so the drain waits for it.
pub async fn serve(
    stream: TcpStream,
    mut signal: watch::Receiver<bool>,
    head_timeout: Duration,
    handler: &Handler,
) -> Served {
    let shared = Arc::new(Shared::new(stream));
    let mut first = true;
    loop {
        let head = match read_head(&shared, &mut signal, first, head_timeout).await {
            Ok(Next::Head(h)) => h,
            Ok(Next::Closed) => return Served::Closed,
            Ok(Next::Http2) => return http2(shared),
            Err(refused) => {
                let _ = refuse(&shared, &refused).await;
                linger(&shared).await;
                return Served::Closed;
            }
        };
        first = false;
        match exchange(&shared, *head, &mut signal, handler).await {
            Ok(true) => {}
            Ok(false) => {
                linger(&shared).await;
                return Served::Closed;
            }
            Err(_) => return Served::Closed,
        }
    }
}

enum Next {
    Head(Box<head::Head>),
    Closed,
    Http2,
}

/// Waits for the next request's head (no buffer held until bytes arrive).
async fn read_head(
    shared: &Shared,
    signal: &mut watch::Receiver<bool>,
    first: bool,
    timeout: Duration,
) -> Result<Next, head::Refused> {
    let mut deadline = Instant::now() + timeout;
    let mut watch_signal = true;
    loop {
        {
            let mut side = shared.read();
            if first && side.buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&side.buf) {
                // Maybe HTTP/2's preface: wait for the rest of it.
            } else if first && side.buf.starts_with(H2_PREFACE) {
                return Ok(Next::Http2);
            } else if let Some((h, taken)) = head::parse(&side.buf)? {
                if taken > MAX_HEAD_BYTES {
                    return Err(head_too_large());
                }
                let _ = side.buf.split_to(taken);
                side.decoder = match h.framing {
                    head::Framing::Length(0) => Decoder::Done,
                    head::Framing::Length(n) => Decoder::Length(n),
                    head::Framing::Chunked => Decoder::Chunked(body::Chunk::Size),
                };
                // A request without a body holds no buffer while it runs.
                side.release_if_spent();
                return Ok(Next::Head(Box::new(h)));
            } else if side.buf.len() > MAX_HEAD_BYTES {
                return Err(head_too_large());
            }
            if side.eof {
                return Ok(Next::Closed);
            }
        }
        let idle = {
            let mut side = shared.read();
            if side.buf.is_empty() {
                // Nothing kept while waiting: the last request's buffer (whatever room it
                // had left) goes back now, and a read takes a new one.
                side.buf = BytesMut::new();
            }
            side.buf.is_empty()
        };
        tokio::select! {
            r = shared.stream.readable() => {
                if r.is_err() {
                    return Ok(Next::Closed);
                }
                let filled = shared.try_fill(&mut shared.read());
                if filled.is_err() {
                    return Ok(Next::Closed);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(Next::Closed),
            _ = signal.wait_for(|stop| *stop), if watch_signal && idle => {
                if !first {
                    return Ok(Next::Closed);
                }
                // Taken just before the signal: its request may be on its way.
                watch_signal = false;
                deadline = deadline.min(Instant::now() + drain::FIRST_READ_WAIT);
            }
        }
    }
}

fn head_too_large() -> head::Refused {
    head::Refused {
        status: http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        message: "the request head is too large",
    }
}

/// One request and its response; `Ok(true)` when the connection can serve another.
async fn exchange(
    shared: &Arc<Shared>,
    head: head::Head,
    signal: &mut watch::Receiver<bool>,
    handler: &Handler,
) -> io::Result<bool> {
    let head::Head {
        request,
        keep_alive,
        expects_continue,
        ..
    } = head;
    let method = request.method().clone();
    let version = request.version();
    shared.expect.store(
        if expects_continue {
            expect::WAITING
        } else {
            expect::NONE
        },
        Ordering::Release,
    );
    let request = request.map(|()| RequestBody::new(Arc::clone(shared)));
    let mut answering = handler(request);
    let response = loop {
        tokio::select! {
            biased;
            r = &mut answering => break r,
            () = shared.continue_wanted.notified() => {
                if shared.expect.compare_exchange(expect::WANTED, expect::NONE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    write::write_all(&shared.stream, &mut [IoSlice::new(write::CONTINUE)]).await?;
                }
            }
            () = client_gone(shared) => return Ok(false),
        }
    };
    drop(answering);
    // No `100 Continue` once the response began: the client sends its body or not, and the
    // connection then closes (below) unless the body was read.
    let unasked = shared.expect.swap(expect::REFUSED, Ordering::AcqRel) != expect::NONE;
    let (parts, body) = response.into_parts();
    let handler_closes = parts
        .headers
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let exact = body.size_hint().exact();
    let out = write::framing(&method, version, &parts, exact);
    let mut close = !keep_alive || handler_closes || *signal.borrow() || out == Out::UntilClose;
    let head = write::head(
        &parts,
        out,
        exact,
        close,
        version == Version::HTTP_10 && !close,
    );
    let ended = send_body(shared, head, body, out).await?;
    if !ended {
        return Ok(false);
    }
    if !close && !shared.read().decoder.is_done() {
        // A body still held elsewhere (its reader outlives the response) is not drained
        // under it: the connection closes.
        close = unasked || Arc::strong_count(shared) > 1 || !drain_body(shared).await;
    }
    // A drain that began while the response went out.
    Ok(!close && !*signal.borrow())
}

/// Writes the head and the body; `Ok(false)` when the body broke off midway (the connection
/// must close without ending the body) or the client left. The head goes out with the
/// first piece of the body, or alone as soon as the body has nothing ready (a stream's
/// client sees the head at once).
async fn send_body(
    shared: &Shared,
    head: Vec<u8>,
    mut body: ResponseBody,
    out: Out,
) -> io::Result<bool> {
    let stream = &shared.stream;
    if out == Out::Nothing {
        return write::write_all(stream, &mut [IoSlice::new(&head)])
            .await
            .map(|()| true);
    }
    let mut head = Some(head);
    let mut sent: u64 = 0;
    loop {
        let ready = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
        let frame = match ready.await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some(h) = head.take() {
                    write::write_all(stream, &mut [IoSlice::new(&h)]).await?;
                }
                tokio::select! {
                    f = body.frame() => f,
                    () = client_gone(shared) => return Ok(false),
                }
            }
        };
        let h = head.take().unwrap_or_default();
        let data = match frame {
            None => break,
            // Broken off: the head (so the client sees a response cut short, not none) and
            // no end.
            Some(Err(_)) => {
                write::write_all(stream, &mut [IoSlice::new(&h)]).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
        };
        if data.is_empty() {
            head = Some(h).filter(|h| !h.is_empty());
            continue;
        }
        let data = match out {
            // Never past a declared length: what is over it is not sent, and the
            // connection closes (a client would read it as the next response).
            Out::Length(n) if sent + data.len() as u64 > n => {
                let fits = usize::try_from(n - sent).unwrap_or(usize::MAX);
                write::write_all(stream, &mut [IoSlice::new(&h), IoSlice::new(&data[..fits])])
                    .await?;
                return Ok(false);
            }
            _ => data,
        };
        sent += data.len() as u64;
        if out == Out::Chunked {
            let line = write::chunk_line(data.len());
            let mut bufs = [
                IoSlice::new(&h),
                IoSlice::new(&line),
                IoSlice::new(&data),
                IoSlice::new(b"\r\n"),
            ];
            write::write_all(stream, &mut bufs).await?;
        } else {
            write::write_all(stream, &mut [IoSlice::new(&h), IoSlice::new(&data)]).await?;
        }
    }
    let h = head.take().unwrap_or_default();
    let last: &[u8] = if out == Out::Chunked {
        write::LAST_CHUNK
    } else {
        b""
    };
    write::write_all(stream, &mut [IoSlice::new(&h), IoSlice::new(last)]).await?;
    // A body shorter than its length must be seen cut; one delimited by the close ends so.
    Ok(!matches!(out, Out::Length(n) if sent != n) && out != Out::UntilClose)
}

/// Completes when the client has closed its side while its request runs (the body read to
/// its end, nothing pipelined after it): the request is then dropped, as hyper did.
async fn client_gone(shared: &Shared) {
    std::future::poll_fn(|cx| {
        let mut side = shared.read();
        if !side.buf.is_empty() {
            // Pipelined bytes wait their turn: the end of stream is behind them.
            return Poll::Pending;
        }
        if matches!(side.decoder, Decoder::Length(_) | Decoder::Chunked(_)) {
            // The body's reader sees the end itself; once the body has ended, this is
            // woken to watch.
            shared.watch_end(cx.waker());
            return Poll::Pending;
        }
        if side.eof {
            return Poll::Ready(());
        }
        // A small read, not the connection's buffer: a request in flight holds none.
        let mut probe = [0u8; 512];
        loop {
            if std::task::ready!(shared.stream.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            match shared.stream.try_read(&mut probe) {
                Ok(0) => {
                    side.eof = true;
                    return Poll::Ready(());
                }
                Ok(n) => {
                    side.buf.extend_from_slice(&probe[..n]);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    })
    .await;
}

/// Reads and discards what is left of the request's body (a handler answered without it);
/// whether it ended within [`MAX_DRAIN_BYTES`] and [`DRAIN_WAIT`].
async fn drain_body(shared: &Shared) -> bool {
    let mut thrown: u64 = 0;
    let read = std::future::poll_fn(|cx| {
        let mut side = shared.read();
        loop {
            let side = &mut *side;
            match side.decoder.decode(&mut side.buf) {
                Ok(Some(d)) => {
                    thrown += d.len() as u64;
                    if thrown > MAX_DRAIN_BYTES {
                        return Poll::Ready(false);
                    }
                }
                Ok(None) if side.decoder.is_done() => return Poll::Ready(true),
                Ok(None) => match std::task::ready!(shared.poll_fill(side, cx)) {
                    Ok(0) | Err(_) => return Poll::Ready(false),
                    Ok(_) => {}
                },
                Err(_) => return Poll::Ready(false),
            }
        }
    });
    tokio::time::timeout(DRAIN_WAIT, read)
        .await
        .unwrap_or(false)
}

/// Answers a head that was refused, in OpenAI's error shape, and closes.
async fn refuse(shared: &Shared, refused: &head::Refused) -> io::Result<()> {
    let error = sluice_types::ErrorBody {
        message: refused.message,
        kind: "invalid_request_error",
        param: None,
        code: None,
    }
    .to_json();
    let mut r = Response::new(());
    *r.status_mut() = refused.status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let (parts, ()) = r.into_parts();
    let len = error.len() as u64;
    let head = write::head(&parts, Out::Length(len), Some(len), true, false);
    write::write_all(
        &shared.stream,
        &mut [IoSlice::new(&head), IoSlice::new(&error)],
    )
    .await
}

/// Closes our side, then reads and discards what the client still sends for a while, so
/// that the response is not lost to a reset (the kernel resets a connection closed with
/// unread bytes).
async fn linger(shared: &Shared) {
    let _ = socket2::SockRef::from(&shared.stream).shutdown(std::net::Shutdown::Write);
    let read = async {
        let mut scratch = vec![0u8; 4096];
        let mut thrown = 0usize;
        while thrown <= MAX_LINGER_BYTES {
            if shared.stream.readable().await.is_err() {
                return;
            }
            match shared.stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => thrown += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, read).await;
}

/// Hands the connection to HTTP/2, with the bytes read so far.
fn http2(shared: Arc<Shared>) -> Served {
    match Arc::try_unwrap(shared) {
        Ok(shared) => {
            let (stream, buf) = shared.into_parts();
            Served::Http2(Rewind {
                read: Some(buf.freeze()),
                stream,
            })
        }
        Err(_) => Served::Closed,
    }
}

/// A connection whose first bytes were read already: they are read again first.
pub struct Rewind {
    read: Option<Bytes>,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut read) = self.read.take() {
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read.split_to(n));
            if !read.is_empty() {
                self.read = Some(read);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, Shared) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, Shared::new(server))
    }

    #[tokio::test]
    async fn a_body_longer_than_its_declared_length_is_cut_at_it_and_the_connection_closes() {
        use tokio::io::AsyncReadExt;
        let (mut client, shared) = pair().await;
        let ended = send_body(
            &shared,
            b"HEAD\r\n\r\n".to_vec(),
            ResponseBody::full("hello world"),
            Out::Length(5),
        )
        .await
        .unwrap();
        assert!(!ended, "the connection must close");
        drop(shared);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HEAD\r\n\r\nhello");
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_declared_length_ends_the_connection() {
        let (_client, shared) = pair().await;
        let ended = send_body(
            &shared,
            b"H\r\n\r\n".to_vec(),
            ResponseBody::full("hi"),
            Out::Length(5),
        )
        .await
        .unwrap();
        assert!(!ended);
        let ended = send_body(
            &shared,
            b"H\r\n\r\n".to_vec(),
            ResponseBody::full("hello"),
            Out::Length(5),
        )
        .await
        .unwrap();
        assert!(ended);
    }

    /// Once a body has ended (chunked: on the poll after its last piece) the connection's
    /// buffer is let go; a second poll of the ended body reads nothing.
    #[tokio::test]
    async fn no_buffer_is_held_once_a_chunked_body_ended() {
        use tokio::io::AsyncWriteExt;
        let (mut client, shared) = pair().await;
        let shared = Arc::new(shared);
        shared.read().decoder = Decoder::Chunked(body::Chunk::Size);
        client.write_all(b"5\r\nhello\r\n0\r\n\r\n").await.unwrap();
        let mut body = RequestBody::new(Arc::clone(&shared));
        let data = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(data, &b"hello"[..]);
        assert_eq!(shared.read().buf.capacity(), 0);
        // The next request's body is not this one's to read.
        shared.read().decoder = Decoder::Length(3);
        client.write_all(b"abc").await.unwrap();
        assert!(body.frame().await.is_none());
    }

    /// A handler that reads the body (if any), then waits forever; `dropped` fires when its
    /// future is dropped.
    fn waiting_handler(dropped: Arc<tokio::sync::Notify>) -> Handler {
        Box::new(move |req| {
            let dropped = Arc::clone(&dropped);
            Box::pin(async move {
                struct OnDrop(Arc<tokio::sync::Notify>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.notify_one();
                    }
                }
                let _guard = OnDrop(dropped);
                let _ = req.into_body().collect().await;
                std::future::pending::<Response<ResponseBody>>().await
            })
        })
    }

    /// A client that leaves while its request waits (nothing else wakes the connection)
    /// cancels it: with a body read by the handler, and without a body.
    #[tokio::test]
    async fn a_client_that_leaves_cancels_its_request_whatever_wakes_the_connection() {
        use tokio::io::AsyncWriteExt;
        for wire in [
            &b"POST /x HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"[..],
            b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET /x HTTP/1.1\r\n\r\n",
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let dropped = Arc::new(tokio::sync::Notify::new());
            let handler = waiting_handler(Arc::clone(&dropped));
            let (_tx, signal) = watch::channel(false);
            let serving = tokio::spawn(async move {
                serve(server, signal, Duration::from_secs(30), &handler).await;
            });
            client.write_all(wire).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(client);
            tokio::time::timeout(Duration::from_secs(5), dropped.notified())
                .await
                .unwrap_or_else(|_| panic!("not cancelled: {}", String::from_utf8_lossy(wire)));
            serving.await.unwrap();
        }
    }

    /// A connection's task holds this future for its whole life, idle or not: it must stay
    /// small (the request's own future is boxed apart, and only while it runs).
    #[tokio::test]
    async fn a_connections_future_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let handler: Handler =
            Box::new(|_req| Box::pin(async { Response::new(ResponseBody::full("")) }));
        let (_tx, signal) = watch::channel(false);
        let connection = serve(server, signal, Duration::from_secs(1), &handler);
        let size = std::mem::size_of_val(&connection);
        assert!(size <= 2048, "{size} bytes");
        drop(client);
    }
}
