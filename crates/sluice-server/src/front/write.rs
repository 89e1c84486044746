//! A response on the wire: its head, and its body framed by length, in chunks, or by the
//! connection's close (RFC 9112 sections 4-7).

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{response::Parts, Method, StatusCode, Version};
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// No body at all (HEAD, 1xx, 204, 304): whatever the body holds is not sent.
    Nothing,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a body of unknown length).
    UntilClose,
}

/// What the response's framing is, from the request and the response's own headers and
/// body length (`exact`, when the body knows it).
pub fn framing(method: &Method, version: Version, parts: &Parts, exact: Option<u64>) -> Out {
    if bodiless(parts.status) {
        return Out::Nothing;
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if method == Method::HEAD {
        return Out::Nothing;
    }
    match (declared, exact) {
        (Some(n), _) | (None, Some(n)) => Out::Length(n),
        (None, None) if version == Version::HTTP_10 => Out::UntilClose,
        (None, None) => Out::Chunked,
    }
}

/// The response head's bytes. `close` adds `Connection: close`; `keep_alive_10` the
/// `Connection: keep-alive` an HTTP/1.0 client needs to keep the connection.
pub fn head(
    parts: &Parts,
    out: Out,
    exact: Option<u64>,
    close: bool,
    keep_alive_10: bool,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"HTTP/1.1 ");
    h.extend_from_slice(parts.status.as_str().as_bytes());
    h.push(b' ');
    h.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    h.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == CONNECTION || name == TRANSFER_ENCODING {
            continue;
        }
        h.extend_from_slice(name.as_str().as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(value.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        h.extend_from_slice(b"date: ");
        with_date(|d| h.extend_from_slice(d));
        h.extend_from_slice(b"\r\n");
    }
    let declared = parts.headers.contains_key(CONTENT_LENGTH);
    match out {
        Out::Length(n) if !declared => length_header(&mut h, n),
        Out::Nothing if !declared => {
            // A HEAD's length is the GET's, when the body knows it.
            if let (Some(n), false) = (exact, bodiless(parts.status)) {
                length_header(&mut h, n);
            }
        }
        Out::Chunked => h.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        h.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive_10 {
        h.extend_from_slice(b"connection: keep-alive\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

fn length_header(h: &mut Vec<u8>, n: u64) {
    h.extend_from_slice(b"content-length: ");
    h.extend_from_slice(n.to_string().as_bytes());
    h.extend_from_slice(b"\r\n");
}

/// Statuses whose responses never carry a body (RFC 9110 section 6.4.1).
fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// A chunk's size line (`{hex}\r\n`).
pub fn chunk_line(len: usize) -> Vec<u8> {
    format!("{len:x}\r\n").into_bytes()
}

/// The last chunk, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

thread_local! {
    /// The `Date` value of the current second, formatted once a second per thread.
    static DATE_NOW: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the current `Date` header value (IMF-fixdate, 29 bytes).
fn with_date(f: impl FnOnce(&[u8])) {
    DATE_NOW.with(|cell| {
        let mut cached = cell.borrow_mut();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            let bytes = text.as_bytes();
            if bytes.len() == 29 {
                cached.1.copy_from_slice(bytes);
                cached.0 = secs;
            }
        }
        f(&cached.1);
    });
}

/// Writes every byte of `bufs` to `stream`, with as few writes as the socket allows.
pub async fn write_all(stream: &TcpStream, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut bufs = bufs;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        stream.writable().await?;
        match stream.try_write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    fn parts(status: u16, headers: &[(&str, &str)]) -> Parts {
        let mut r = Response::builder().status(status);
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        r.body(()).unwrap().into_parts().0
    }

    #[test]
    fn framing_by_status_method_length_and_version() {
        let ok = parts(200, &[]);
        assert_eq!(
            framing(&Method::POST, Version::HTTP_11, &ok, Some(5)),
            Out::Length(5)
        );
        assert_eq!(
            framing(&Method::POST, Version::HTTP_11, &ok, None),
            Out::Chunked
        );
        assert_eq!(
            framing(&Method::POST, Version::HTTP_10, &ok, None),
            Out::UntilClose
        );
        assert_eq!(
            framing(&Method::HEAD, Version::HTTP_11, &ok, Some(5)),
            Out::Nothing
        );
        assert_eq!(
            framing(&Method::GET, Version::HTTP_11, &parts(204, &[]), Some(0)),
            Out::Nothing
        );
        let declared = parts(200, &[("content-length", "9")]);
        assert_eq!(
            framing(&Method::GET, Version::HTTP_11, &declared, None),
            Out::Length(9)
        );
    }

    #[test]
    fn the_head_carries_the_framing_and_the_connection_choice() {
        let p = parts(
            200,
            &[
                ("content-type", "application/json"),
                ("connection", "close"),
            ],
        );
        let text = String::from_utf8(head(&p, Out::Length(2), Some(2), false, false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with("GMT\r\ncontent-length: 2\r\n\r\n"), "{text}");
        assert!(
            !text.contains("connection"),
            "the handler's own is not copied"
        );
        let text =
            String::from_utf8(head(&parts(200, &[]), Out::Chunked, None, true, false)).unwrap();
        assert!(
            text.contains("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        let text =
            String::from_utf8(head(&parts(200, &[]), Out::Nothing, Some(7), false, true)).unwrap();
        assert!(
            text.contains("content-length: 7\r\nconnection: keep-alive\r\n"),
            "{text}"
        );
        assert_eq!(chunk_line(26), b"1a\r\n");
    }
}
