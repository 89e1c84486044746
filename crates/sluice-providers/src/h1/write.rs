//! A request on the wire: its head (method, path and query, the header fields as given, and
//! its own framing: `Content-Length` when the body knows its size, else chunked), and its
//! body, in as few writes as the socket allows: the head goes out with the body's first
//! piece (a body in memory: the whole request in one write), or alone as soon as the body
//! has nothing ready (a streamed upload reads its spool meanwhile).

use super::error::Cause;
use crate::upstream_body::UpstreamBody;
use bytes::Bytes;
use http::header::{
    HeaderName, CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{Method, Request};
use http_body::Body;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

/// The last chunk, without trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A request as it goes out. What was taken from its body and not written yet is kept, so
/// that a request that could not be sent at all can go on another connection.
pub(super) struct Outgoing<B = UpstreamBody> {
    head: Vec<u8>,
    body: B,
    /// A piece of the body taken from it, not yet written.
    next: Option<Bytes>,
    /// The body has no more pieces.
    ended: bool,
    /// `Some(n)`: `Content-Length: n`; `None`: chunked.
    length: Option<u64>,
    /// A `HEAD` request (no body in its answer).
    pub(super) to_head: bool,
    /// The request says `Connection: close`: its connection is not reused (RFC 9112
    /// section 9.6).
    pub(super) closes: bool,
    /// What the upstream sent while the request was going out, interim answers dropped:
    /// the start of its answer, read by the exchange before anything more.
    pub(super) early: Vec<u8>,
}

/// Request header fields not written: the framing (the body's, written after them),
/// hop-by-hop fields whose protocol this client does not speak (`Keep-Alive`, `TE`,
/// `Upgrade`, `Proxy-Connection`), and `Expect` (a `100 Continue` would stop the body's
/// writing and both sides would wait).
fn dropped(name: &HeaderName) -> bool {
    [CONTENT_LENGTH, TRANSFER_ENCODING, TE, UPGRADE, EXPECT].contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// How a request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// All of it.
    Whole,
    /// Not all of its body: the upstream answered first (the connection cannot be reused).
    Cut,
}

/// Why a request did not all go out: the cause, and whether any byte of it was written.
#[derive(Debug)]
pub(super) struct Unsent {
    pub(super) cause: Cause,
    pub(super) wrote: bool,
}

/// Methods whose requests carry no `Content-Length: 0` when their body is empty (as hyper).
fn bodiless(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ]
    .contains(method)
}

impl<B: Body<Data = Bytes, Error = io::Error> + Unpin> Outgoing<B> {
    /// `request` (its `Host` set) ready to go out; its request line names the URI's path
    /// and query.
    pub(super) fn new(request: Request<B>) -> Self {
        let (parts, body) = request.into_parts();
        let length = body.size_hint().exact();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let fields: usize = parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let mut head = Vec::with_capacity(parts.method.as_str().len() + path.len() + fields + 64);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            if dropped(name) {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        match length {
            Some(0) if bodiless(&parts.method) => {}
            Some(n) => {
                head.extend_from_slice(b"content-length: ");
                head.extend_from_slice(n.to_string().as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        head.extend_from_slice(b"\r\n");
        let closes = parts.headers.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
        Self {
            head,
            body,
            next: None,
            ended: false,
            length,
            to_head: parts.method == Method::HEAD,
            closes,
            early: Vec::new(),
        }
    }

    /// The next piece of the body into `self.next` (or `self.ended`); the head goes out
    /// alone meanwhile if the body has nothing ready. `Ok(true)`: the upstream answered
    /// before all of the head went out, or while the body had nothing ready.
    async fn pull(&mut self, stream: &TcpStream, wrote: &mut u64) -> Result<bool, Unsent> {
        while self.next.is_none() && !self.ended {
            let body = &mut self.body;
            let ready =
                std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
            let frame = match ready {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if *wrote == 0 {
                        let head = std::mem::take(&mut self.head);
                        let mut early = Early {
                            bytes: &mut self.early,
                            to_head: self.to_head,
                        };
                        let written =
                            write_all(stream, &mut [IoSlice::new(&head)], wrote, &mut early).await;
                        self.head = head;
                        let cut = written.map_err(|cause| Unsent {
                            cause,
                            wrote: *wrote > 0,
                        })?;
                        if cut {
                            return Ok(true);
                        }
                    }
                    // Waiting for the client's next piece, the upstream may answer (a 401 or
                    // 413 after the head alone): its final answer ends the writing at once.
                    let began = *wrote > 0;
                    loop {
                        let body = &mut self.body;
                        let next = std::future::poll_fn(|cx| {
                            if began && has_answered(stream, cx) {
                                return Poll::Ready(None);
                            }
                            Pin::new(&mut *body).poll_frame(cx).map(Some)
                        })
                        .await;
                        let mut early = Early {
                            bytes: &mut self.early,
                            to_head: self.to_head,
                        };
                        match next {
                            Some(frame) => break frame,
                            None if early.read(stream) => return Ok(true),
                            None => {}
                        }
                    }
                }
            };
            match frame {
                None => self.ended = true,
                Some(Err(e)) => {
                    return Err(Unsent {
                        cause: Cause::RequestBody(e),
                        wrote: *wrote > 0,
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.next = Some(data).filter(|d| !d.is_empty());
                    }
                }
            }
        }
        Ok(false)
    }

    /// Writes the request on `stream`.
    pub(super) async fn send(&mut self, stream: &TcpStream) -> Result<Sent, Unsent> {
        let mut wrote: u64 = 0;
        let mut sent: u64 = 0;
        let head_len = self.head.len() as u64;
        let unsent = |cause, wrote: u64| Unsent {
            cause,
            wrote: wrote > 0,
        };
        loop {
            if self.pull(stream, &mut wrote).await? {
                return Ok(Sent::Cut);
            }
            let head = &self.head[usize::try_from(wrote.min(head_len)).unwrap_or(0)..];
            let data = self.next.clone().unwrap_or_default();
            sent += data.len() as u64;
            let end = self.ended || self.body.is_end_stream();
            if self.length.is_some_and(|n| sent > n || (end && sent != n)) {
                return Err(unsent(
                    Cause::RequestBody(io::Error::other(
                        "the request's body does not match its length",
                    )),
                    wrote,
                ));
            }
            let line = match (self.length, data.is_empty()) {
                (None, false) => format!("{:x}\r\n", data.len()).into_bytes(),
                _ => Vec::new(),
            };
            let (crlf, last): (&[u8], &[u8]) = match (self.length, data.is_empty(), end) {
                (None, false, true) => (b"\r\n", LAST_CHUNK),
                (None, false, false) => (b"\r\n", b""),
                (None, true, true) => (b"", LAST_CHUNK),
                _ => (b"", b""),
            };
            let mut bufs = [
                IoSlice::new(head),
                IoSlice::new(&line),
                IoSlice::new(&data),
                IoSlice::new(crlf),
                IoSlice::new(last),
            ];
            let mut early = Early {
                bytes: &mut self.early,
                to_head: self.to_head,
            };
            match write_all(stream, &mut bufs, &mut wrote, &mut early).await {
                Ok(false) => {}
                Ok(true) => return Ok(Sent::Cut),
                Err(cause) => return Err(unsent(cause, wrote)),
            }
            self.next = None;
            if end {
                self.ended = true;
                return Ok(Sent::Whole);
            }
        }
    }
}

/// What the upstream sends while the request goes out, kept in the request's `early`.
struct Early<'a> {
    bytes: &'a mut Vec<u8>,
    /// The request is a `HEAD` (how a head read now is delimited).
    to_head: bool,
}

impl Early<'_> {
    /// The upstream sent something while the request was going out: what it sent is read,
    /// and interim answers (`100 Continue`, `103 Early Hints`: RFC 9110 lets a server send
    /// them unasked) dropped. `true` when a final answer began (or the connection closed, or
    /// what came cannot be read as an answer): the writing stops and the exchange reads the
    /// answer; `false` when only interim answers came: the writing goes on (the upstream
    /// still waits for the body).
    fn read(&mut self, stream: &TcpStream) -> bool {
        let mut buf = [0u8; 2048];
        loop {
            match stream.try_read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
        loop {
            match super::head::parse(self.bytes, self.to_head) {
                Ok(Some((head, taken))) if head.is_interim() => {
                    self.bytes.drain(..taken);
                }
                Ok(Some(_)) | Err(_) => return true,
                // Part of a head: a final one, or an interim one cut by the network (taken as
                // an answer: the exchange reads it whole and waits on).
                Ok(None) => return !self.bytes.is_empty(),
            }
        }
    }
}

/// Writes all of `bufs`, with as few writes as the socket allows, counting into `wrote`;
/// `Ok(true)` when, the socket being full once part of the request went out, the upstream
/// answered (or closed) before the rest (interim answers meanwhile are dropped, see
/// [`Early::read`]).
async fn write_all(
    stream: &TcpStream,
    bufs: &mut [IoSlice<'_>],
    wrote: &mut u64,
    early: &mut Early<'_>,
) -> Result<bool, Cause> {
    let mut bufs = bufs;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match stream.try_write_vectored(bufs) {
            Ok(0) => return Err(Cause::Write(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                *wrote += n as u64;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let began = *wrote > 0;
                let answered = std::future::poll_fn(|cx| {
                    // The answer first: an upstream that answers early and resets the
                    // connection makes both ready at once, and its answer is what counts.
                    if began && has_answered(stream, cx) {
                        return Poll::Ready(true);
                    }
                    if stream.poll_write_ready(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    Poll::Pending
                })
                .await;
                if answered && early.read(stream) {
                    return Ok(true);
                }
            }
            // Reset or closed once part of the request went out: the upstream may have
            // answered first (a 401 or 413 before the body's end); the answer is read, or
            // the read fails as the write did.
            Err(e) if *wrote > 0 && reset(&e) => return Ok(true),
            Err(e) => return Err(Cause::Write(e)),
        }
    }
    Ok(false)
}

/// Whether a write failed because the upstream reset or closed the connection.
fn reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Whether the upstream has sent something (or closed): peeked, so that a stale readiness
/// is not taken for an answer.
fn has_answered(stream: &TcpStream, cx: &mut Context<'_>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    stream.poll_peek(cx, &mut buf).is_ready()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::{Frame, SizeHint};
    use std::collections::VecDeque;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A streamed body of unknown length: its pieces, each after one `Pending`.
    struct Pieces {
        left: VecDeque<&'static [u8]>,
        waited: bool,
    }

    impl Body for Pieces {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            if !self.waited {
                self.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.waited = false;
            Poll::Ready(
                self.left
                    .pop_front()
                    .map(|p| Ok(Frame::data(Bytes::from_static(p)))),
            )
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::default()
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    async fn read_until(stream: &mut TcpStream, end: &[u8]) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while memchr::memmem::find(&got, end).is_none() {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_out_chunked_as_it_comes() {
        let (client, mut server) = pair().await;
        let body = Pieces {
            left: VecDeque::from([&b"hello"[..], b", world"]),
            waited: false,
        };
        let request = Request::post("/v1/audio/transcriptions")
            .header("host", "up")
            .body(body)
            .unwrap();
        let mut out = Outgoing::new(request);
        assert_eq!(out.send(&client).await.unwrap(), Sent::Whole);
        assert_eq!(
            read_until(&mut server, b"0\r\n\r\n").await,
            "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_empty_body_says_its_length_only_where_a_body_is_expected() {
        let (client, mut server) = pair().await;
        for (method, wire) in [
            (Method::GET, "GET /v1/models HTTP/1.1\r\n\r\n"),
            (
                Method::POST,
                "POST /v1/models HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            ),
        ] {
            let request = Request::builder()
                .method(method)
                .uri("http://up/v1/models")
                .body(UpstreamBody::new(Bytes::new()))
                .unwrap();
            let mut out = Outgoing::new(request);
            assert_eq!(out.send(&client).await.unwrap(), Sent::Whole);
            assert_eq!(read_until(&mut server, b"\r\n\r\n").await, wire);
        }
    }

    #[tokio::test]
    async fn a_body_not_matching_its_length_fails() {
        struct Liar(Option<Bytes>);
        impl Body for Liar {
            type Data = Bytes;
            type Error = io::Error;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
                Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
            }
            fn size_hint(&self) -> SizeHint {
                SizeHint::with_exact(3)
            }
        }
        let (client, _server) = pair().await;
        // Too long: refused before anything goes out; too short: once it ends.
        for (piece, wrote) in [(&b"toolong"[..], false), (b"ab", true)] {
            let request = Request::post("/x")
                .body(Liar(Some(Bytes::from_static(piece))))
                .unwrap();
            let failed = Outgoing::new(request).send(&client).await.unwrap_err();
            assert!(matches!(failed.cause, Cause::RequestBody(_)), "{failed:?}");
            assert_eq!(failed.wrote, wrote);
        }
    }

    #[tokio::test]
    async fn an_answer_before_the_end_of_a_large_body_stops_the_writing() {
        let (client, mut server) = pair().await;
        let big = Bytes::from(vec![b'x'; 64 * 1024 * 1024]);
        let request = Request::post("/v1/files")
            .body(UpstreamBody::new(big))
            .unwrap();
        let answering = tokio::spawn(async move {
            read_until(&mut server, b"\r\n\r\n").await;
            server
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            // Held open, unread.
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            drop(server);
        });
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            Outgoing::new(request).send(&client),
        )
        .await
        .expect("the writing stopped");
        assert_eq!(sent.unwrap(), Sent::Cut);
        answering.abort();
    }

    /// A streamed upload whose next piece never comes.
    struct Stalled(Option<Bytes>);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            match self.0.take() {
                Some(piece) => Poll::Ready(Some(Ok(Frame::data(piece)))),
                None => Poll::Pending,
            }
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::default()
        }
    }

    #[tokio::test]
    async fn an_answer_while_a_streamed_upload_waits_for_its_next_piece_stops_the_writing() {
        let (client, mut server) = pair().await;
        let request = Request::post("/v1/audio/transcriptions")
            .body(Stalled(Some(Bytes::from_static(b"RIFF"))))
            .unwrap();
        let answering = tokio::spawn(async move {
            read_until(&mut server, b"RIFF").await;
            server
                .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            drop(server);
        });
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            Outgoing::new(request).send(&client),
        )
        .await
        .expect("the answer ended the wait for the body");
        assert_eq!(sent.unwrap(), Sent::Cut);
        answering.abort();
    }

    #[tokio::test]
    async fn interim_answers_while_a_large_body_goes_out_do_not_stop_it() {
        let (client, mut server) = pair().await;
        let size = 16 * 1024 * 1024;
        let request = Request::post("/v1/files")
            .body(UpstreamBody::new(Bytes::from(vec![b'x'; size])))
            .unwrap();
        let answering = tokio::spawn(async move {
            let head = read_until(&mut server, b"\r\n\r\n").await;
            let at = head.find("\r\n\r\n").unwrap() + 4;
            server
                .write_all(
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
                )
                .await
                .unwrap();
            // The whole body is read: the upstream waits for it.
            let mut left = size - (head.len() - at);
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = server.read(&mut buf).await.unwrap();
                assert!(n > 0, "the body stopped with {left} bytes to go");
                left -= n;
            }
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            server
        });
        let mut out = Outgoing::new(request);
        let sent = tokio::time::timeout(std::time::Duration::from_secs(20), out.send(&client))
            .await
            .expect("the body went out");
        assert_eq!(sent.unwrap(), Sent::Whole);
        assert!(
            out.early.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&out.early)
        );
        answering.await.unwrap();
    }
}
