//! A raw HTTP/1.1 client for latency and load measurements: requests written as prepared
//! bytes on a socket the caller owns (one keep-alive connection, or a fresh one per request),
//! answers read to their end (`Content-Length` or chunked) by a small scanner that also
//! notes when the first server-sent event (`data:`) arrived. No pool, no task per
//! connection, no header map: what is timed is the server, not the client.
//!
//! [`Conn`] is blocking (`std::net`: the least client jitter for one connection);
//! [`AsyncConn`] runs on tokio, for thousands of connections on one thread. [`rss_kib`]
//! reads a process tree's resident memory from `/proc`, [`nearest_rank`] takes a percentile
//! the way latency benchmarks do (the smallest sample with at least p % of the samples at or
//! below it, no interpolation).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of an OpenAI chat completion request for `model` with one short user message.
pub fn chat_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello."}}],"max_tokens":16,"stream":{stream}}}"#
    )
}

/// A whole `POST path` request to `addr` with a JSON `body`, keep-alive, with a bearer
/// `key` when given.
pub fn post_request(addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> Vec<u8> {
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A `GET path` request to `addr`, keep-alive.
pub fn get_request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes()
}

/// What the scanner knows of an answer so far.
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of the head, `\r\n\r\n` included, once it is complete.
    head_len: Option<usize>,
    status: u16,
    framing: Framing,
    /// Where the next chunk's size line starts (chunked bodies).
    next_chunk: usize,
    /// The answer's last byte, once known.
    end: Option<usize>,
    /// The body holds `data:`.
    saw_event: bool,
    /// The server said `connection: close`.
    close: bool,
}

#[derive(Debug, Default, Clone, Copy)]
enum Framing {
    #[default]
    Unknown,
    Length(usize),
    Chunked,
    /// Until the server closes.
    Close,
}

/// One answer, read to its end.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// When the first `data:` of the body arrived (streams).
    pub first_event: Option<Instant>,
    /// When its last byte arrived.
    pub end: Instant,
}

impl Answer {
    /// A 2xx status.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Scan {
    /// Reads what `buf` (the answer's bytes so far) says; `Ok(true)` once the answer is whole.
    fn advance(&mut self, buf: &[u8]) -> io::Result<bool> {
        if self.head_len.is_none() {
            let Some(at) = find(buf, b"\r\n\r\n") else {
                return Ok(false);
            };
            self.head(&buf[..at + 4])?;
        }
        let head = self.head_len.unwrap_or(0);
        if !self.saw_event && find(&buf[head..], b"data:").is_some() {
            self.saw_event = true;
        }
        match self.framing {
            Framing::Length(n) => self.end = (buf.len() >= head + n).then_some(head + n),
            Framing::Chunked => self.chunks(buf)?,
            Framing::Close | Framing::Unknown => {}
        }
        Ok(self.end.is_some())
    }

    fn head(&mut self, head: &[u8]) -> io::Result<()> {
        let text = std::str::from_utf8(head).map_err(|_| invalid("head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or_default();
        self.status = status
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        self.framing = Framing::Close;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.parse().map_err(|_| invalid("bad content-length"))?;
                self.framing = Framing::Length(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                self.framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                self.close = true;
            }
        }
        if self.status == 204 || self.status == 304 {
            self.framing = Framing::Length(0);
        }
        self.head_len = Some(head.len());
        self.next_chunk = head.len();
        Ok(())
    }

    /// Walks the chunks that arrived whole; the end is the blank line after the last one
    /// (trailers are not expected).
    fn chunks(&mut self, buf: &[u8]) -> io::Result<()> {
        loop {
            let at = self.next_chunk;
            let Some(eol) = find(&buf[at..], b"\r\n") else {
                return Ok(());
            };
            let line = std::str::from_utf8(&buf[at..at + eol]).map_err(|_| invalid("chunk"))?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("chunk size"))?;
            let data = at + eol + 2;
            if size == 0 {
                if buf.len() >= data + 2 {
                    self.end = Some(data + 2);
                }
                return Ok(());
            }
            if buf.len() < data + size + 2 {
                return Ok(());
            }
            self.next_chunk = data + size + 2;
        }
    }

    fn answer(&self, first_event: Option<Instant>, end: Instant) -> Answer {
        Answer {
            status: self.status,
            first_event,
            end,
        }
    }
}

/// A blocking keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server will close it (it said so, or an answer ran to the close).
    pub closed: bool,
}

impl Conn {
    /// Connects to `addr` (no Nagle), with `timeout` on every read.
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            closed: false,
        })
    }

    /// Writes `request` and reads its answer to the end.
    pub fn exchange(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.write_all(request)?;
        self.buf.clear();
        let mut scan = Scan::default();
        let mut first_event = None;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.stream.read(&mut chunk)?;
            let now = Instant::now();
            if n == 0 {
                self.closed = true;
                return match scan.framing {
                    Framing::Close => Ok(scan.answer(first_event, now)),
                    _ => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let whole = scan.advance(&self.buf)?;
            if scan.saw_event && first_event.is_none() {
                first_event = Some(now);
            }
            if whole {
                self.closed = scan.close;
                return Ok(scan.answer(first_event, now));
            }
        }
    }
}

/// A keep-alive connection on tokio.
#[derive(Debug)]
pub struct AsyncConn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl AsyncConn {
    /// Connects to `addr` (no Nagle).
    pub async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes `request` and reads its answer to the end (the connection's buffer is freed
    /// after, so that thousands of idle connections cost the client little).
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut scan = Scan::default();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if scan.advance(&self.buf)? {
                self.buf = Vec::new();
                return Ok(scan.answer(None, Instant::now()));
            }
        }
    }
}

/// The nearest-rank `p`th percentile (0 < p <= 100) of `sorted` (ascending): the smallest
/// sample with at least p % of the samples at or below it; `None` for no samples.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Resident memory in KiB of `pid` and every process descending from it (`VmRSS`, summed;
/// 0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    tree(pid).iter().map(|p| status_kib(*p, "VmRSS:")).sum()
}

/// A `/proc/<pid>/status` field in KiB (0 if unreadable).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `pid` and its descendants, from `/proc/*/stat`'s parent ids.
fn tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The parent id is the second field after the command's closing parenthesis.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scan(parts: &[&[u8]]) -> (bool, Scan) {
        let mut buf = Vec::new();
        let mut scan = Scan::default();
        let mut whole = false;
        for p in parts {
            buf.extend_from_slice(p);
            whole = scan.advance(&buf).unwrap();
        }
        (whole, scan)
    }

    #[test]
    fn a_sized_answer_ends_at_its_length() {
        let (whole, s) = scan(&[b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel"]);
        assert!(!whole);
        assert_eq!(s.status, 200);
        let (whole, _) = scan(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"]);
        assert!(whole);
    }

    #[test]
    fn a_chunked_stream_ends_at_its_last_chunk_and_notes_its_first_event() {
        let (whole, s) = scan(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"a\r\ndata: {}\n\n\r\n",
        ]);
        assert!(!whole);
        assert!(s.saw_event);
        let (whole, _) = scan(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\ndata: {}\n\n\r\n",
            b"0\r",
            b"\n\r\n",
        ]);
        assert!(whole);
    }

    #[test]
    fn a_head_without_status_is_an_error() {
        let mut s = Scan::default();
        assert!(s.advance(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn nearest_rank_takes_a_sample_without_interpolating() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 50.0), Some(50));
        assert_eq!(nearest_rank(&v, 99.0), Some(99));
        assert_eq!(nearest_rank(&v, 100.0), Some(100));
        assert_eq!(nearest_rank(&[7u32], 99.0), Some(7));
        assert_eq!(nearest_rank::<u32>(&[], 99.0), None);
        let v: Vec<u32> = (1..=10).collect();
        assert_eq!(nearest_rank(&v, 99.0), Some(10));
        assert_eq!(nearest_rank(&v, 50.0), Some(5));
    }

    #[test]
    fn the_process_tree_holds_this_process() {
        assert!(rss_kib(std::process::id()) > 0);
        assert_eq!(status_kib(u32::MAX, "VmRSS:"), 0);
    }
}
