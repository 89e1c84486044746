//! A small HTTP/1.1 client for tests (plain `http://` only).
//!
//! * [`post_json`] and [`get`] send one request and collect the whole
//!   response into a [`TestResponse`]. They use a fresh [`TestClient`] (and so
//!   a fresh connection) per call; keep a [`TestClient`] around to reuse
//!   connections.
//! * [`post_stream`] opens a dedicated connection and returns a
//!   [`TestStream`] as soon as the response head arrived; the body is pulled
//!   chunk by chunk or SSE event by SSE event. Dropping the [`TestStream`]
//!   closes that connection, which simulates a client going away.
//! * [`raw_request`] writes raw bytes to a socket and returns whatever comes
//!   back, for malformed-HTTP tests.
//!
//! Every call is bounded by a timeout (30 s by default) so a broken server
//! fails a test instead of hanging it.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Default bound on one client call (or one streamed chunk).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on [`raw_request`].
pub const RAW_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong in a test client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The URL could not be parsed or is not `http://`.
    InvalidUrl(String),
    /// A request header name or value is invalid.
    InvalidHeader(String),
    /// The TCP connection or the HTTP handshake failed.
    Connect(String),
    /// The request failed before a response head was received (this is what
    /// a connection reset or close without response looks like).
    Request(String),
    /// The response body broke off (e.g. the server aborted a stream).
    Body(String),
    /// The call did not complete within its timeout.
    Timeout,
}

impl ClientError {
    /// Whether the response body broke off after the head was received.
    pub fn is_body(&self) -> bool {
        matches!(self, Self::Body(_))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            Self::InvalidHeader(m) => write!(f, "invalid header: {m}"),
            Self::Connect(m) => write!(f, "connect failed: {m}"),
            Self::Request(m) => write!(f, "request failed: {m}"),
            Self::Body(m) => write!(f, "response body failed: {m}"),
            Self::Timeout => f.write_str("timed out"),
        }
    }
}

impl StdError for ClientError {}

/// An error and its sources, joined with `: `.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Complete body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body parsed as JSON.
    ///
    /// # Panics
    ///
    /// If the body is not JSON (the message shows the body); use
    /// [`try_json`](Self::try_json) to handle that case.
    pub fn json(&self) -> serde_json::Value {
        match self.try_json() {
            Ok(v) => v,
            Err(e) => panic!(
                "response body is not JSON ({e}); status {}, body: {}",
                self.status,
                self.text()
            ),
        }
    }

    /// The body parsed as JSON.
    pub fn try_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A reusable client over hyper-util's pooled legacy client (HTTP/1.1).
#[derive(Debug, Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    /// A client with the [default timeout](DEFAULT_TIMEOUT). Must be created
    /// inside a tokio runtime it will be used on.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Bounds each call by `timeout` instead.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `GET url`.
    pub async fn get(&self, url: &str) -> Result<TestResponse, ClientError> {
        self.request(Method::GET, url, Bytes::new(), &[]).await
    }

    /// Sends `POST url` with a JSON body (`Content-Type: application/json`
    /// unless `headers` sets one).
    pub async fn post_json(
        &self,
        url: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<TestResponse, ClientError> {
        self.request(Method::POST, url, body.into(), headers).await
    }

    /// Sends any request and collects the response. A non-empty body gets
    /// `Content-Type: application/json` unless `headers` sets one.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<TestResponse, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::InvalidUrl(format!("{url}: {e}")))?;
        check_http(&uri, url)?;
        let req = build_request(method, uri, body, headers, None)?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ClientError::Request(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Body(error_chain(&e)))?
                .to_bytes();
            Ok(TestResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

/// `POST url` with a JSON body, on a fresh connection; see
/// [`TestClient::post_json`].
pub async fn post_json(
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Result<TestResponse, ClientError> {
    TestClient::new().post_json(url, body, headers).await
}

/// `GET url` on a fresh connection.
pub async fn get(url: &str) -> Result<TestResponse, ClientError> {
    TestClient::new().get(url).await
}

fn check_http(uri: &Uri, url: &str) -> Result<(), ClientError> {
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(ClientError::InvalidUrl(format!(
            "{url}: only absolute http:// URLs are supported"
        )));
    }
    Ok(())
}

fn build_request(
    method: Method,
    uri: Uri,
    body: Bytes,
    headers: &[(&str, &str)],
    host: Option<&str>,
) -> Result<Request<Full<Bytes>>, ClientError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ClientError::InvalidHeader(format!("name {name:?}")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| ClientError::InvalidHeader(format!("value {value:?}")))?;
        map.append(n, v);
    }
    if !body.is_empty() && !map.contains_key(CONTENT_TYPE) {
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(host) = host {
        if !map.contains_key(HOST) {
            let v = HeaderValue::from_str(host)
                .map_err(|_| ClientError::InvalidUrl(format!("bad host {host:?}")))?;
            map.insert(HOST, v);
        }
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = map;
    Ok(req)
}

/// Aborts the connection task (closing its socket) when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `POST url` on a dedicated connection, returning as soon as the response
/// head arrived. See [`TestStream`].
pub async fn post_stream(
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Result<TestStream, ClientError> {
    open_stream(Method::POST, url, body.into(), headers, DEFAULT_TIMEOUT).await
}

/// Like [`post_stream`] with any method and timeout (which bounds the
/// response head and then each chunk).
pub async fn open_stream(
    method: Method,
    url: &str,
    body: Bytes,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<TestStream, ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::InvalidUrl(format!("{url}: {e}")))?;
    check_http(&uri, url)?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| ClientError::InvalidUrl(url.to_owned()))?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let origin_form: Uri = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::InvalidUrl(format!("{url}: {e}")))?;
    let req = build_request(method, origin_form, body, headers, Some(&authority))?;

    let open = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ClientError::Connect(error_chain(&e)))?;
        // Best effort; only latency is at stake.
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| ClientError::Connect(error_chain(&e)))?;
        let conn = AbortOnDrop(tokio::spawn(async move {
            // Connection errors surface through the response or body.
            let _ = conn.await;
        }));
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Request(error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        Ok(TestStream {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            buf: Vec::new(),
            timeout,
            done: false,
            _conn: conn,
        })
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// A response whose body is read incrementally, on its own connection.
///
/// Dropping it aborts the connection task and closes the socket.
#[derive(Debug)]
pub struct TestStream {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    body: Incoming,
    /// Bytes received but not yet returned (partial SSE event).
    buf: Vec<u8>,
    timeout: Duration,
    done: bool,
    _conn: AbortOnDrop,
}

impl TestStream {
    /// The value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next body chunk as received; `None` at a clean end of the body,
    /// `Some(Err(_))` if the body broke off (or a chunk took longer than the
    /// timeout).
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        if !self.buf.is_empty() {
            return Some(Ok(Bytes::from(std::mem::take(&mut self.buf))));
        }
        self.read_chunk().await
    }

    async fn read_chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        if self.done {
            return None;
        }
        loop {
            let frame = match tokio::time::timeout(self.timeout, self.body.frame()).await {
                Err(_) => return Some(Err(ClientError::Timeout)),
                Ok(f) => f,
            };
            match frame {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ClientError::Body(error_chain(&e))));
                }
                Some(Ok(frame)) => {
                    // Trailers are skipped.
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }

    /// The data payload of the next SSE event (multi-line data joined with
    /// `\n`; events without data, such as comments, are skipped). `None` at
    /// a clean end of the body; an incomplete event at the end is dropped.
    pub async fn next_event(&mut self) -> Option<Result<String, ClientError>> {
        loop {
            while let Some(block) = take_event(&mut self.buf) {
                if let Some(data) = event_data(&block) {
                    return Some(Ok(data));
                }
            }
            match self.read_chunk().await? {
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads to the end: every SSE data payload, plus the error that ended
    /// the body if it did not end cleanly.
    pub async fn collect_events(&mut self) -> (Vec<String>, Option<ClientError>) {
        let mut events = Vec::new();
        while let Some(ev) = self.next_event().await {
            match ev {
                Ok(data) => events.push(data),
                Err(e) => return (events, Some(e)),
            }
        }
        (events, None)
    }

    /// Reads the rest of the body.
    pub async fn collect_body(&mut self) -> Result<Bytes, ClientError> {
        let mut out = std::mem::take(&mut self.buf);
        while let Some(chunk) = self.read_chunk().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }
}

/// Removes the first complete SSE event (up to and including its blank
/// line) from `buf`.
fn take_event(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut i = 0;
    while i < buf.len() {
        // An event ends at "\n\n", "\r\n\r\n", "\r\r" or mixed forms: a line
        // terminator followed by an empty line.
        let first = match line_end(buf, i) {
            Some(n) => n,
            None => {
                i += 1;
                continue;
            }
        };
        if let Some(second) = line_end(buf, i + first) {
            let end = i + first + second;
            let block = buf[..i].to_vec();
            buf.drain(..end);
            return Some(block);
        }
        if i + first >= buf.len() {
            // Terminator at the very end; need more data to decide (e.g. a
            // lone "\r" may be followed by "\n").
            return None;
        }
        i += first;
    }
    None
}

/// Length of the line terminator at `buf[i]`, if there is one.
fn line_end(buf: &[u8], i: usize) -> Option<usize> {
    match buf.get(i) {
        Some(b'\n') => Some(1),
        Some(b'\r') => match buf.get(i + 1) {
            Some(b'\n') => Some(2),
            Some(_) => Some(1),
            // Could be the start of "\r\n": wait for more data.
            None => None,
        },
        _ => None,
    }
}

/// The joined `data:` lines of one event block, if it has any.
fn event_data(block: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(block);
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let value = if line == "data" {
            ""
        } else if let Some(rest) = line.strip_prefix("data:") {
            rest.strip_prefix(' ').unwrap_or(rest)
        } else {
            continue;
        };
        match &mut data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => data = Some(value.to_owned()),
        }
    }
    data
}

/// Writes `bytes` to a new connection to `addr` and returns everything read
/// back until the server closes the connection or 5 s passed.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> io::Result<Vec<u8>> {
    raw_request_timeout(addr, bytes, RAW_REQUEST_TIMEOUT).await
}

/// Like [`raw_request`] with a custom time limit.
pub async fn raw_request_timeout(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "raw request timed out");
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    // A server may answer and close before reading everything (e.g. headers
    // too large); still read what it sent.
    let write_err = match tokio::time::timeout_at(deadline, stream.write_all(bytes)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(timed_out()),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let read_err = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => break None,
            Ok(Ok(n)) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Ok(Err(e)) => break Some(e),
        }
    };
    if out.is_empty() {
        if let Some(e) = write_err.or(read_err) {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8]) -> (Vec<String>, Vec<u8>) {
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        while let Some(block) = take_event(&mut buf) {
            if let Some(d) = event_data(&block) {
                out.push(d);
            }
        }
        (out, buf)
    }

    #[test]
    fn splits_events() {
        let (evs, rest) =
            events(b"data: a\n\ndata:b\r\n\r\n: comment\n\ndata: c\ndata: d\n\ndata: e");
        assert_eq!(evs, ["a", "b", "c\nd"]);
        assert_eq!(rest, b"data: e");
    }

    #[test]
    fn waits_for_complete_terminator() {
        let (evs, rest) = events(b"data: a\r\n\r");
        assert!(evs.is_empty());
        assert_eq!(rest, b"data: a\r\n\r");
        let (evs, _) = events(b"data: a\r\n\r\n");
        assert_eq!(evs, ["a"]);
    }

    #[test]
    fn error_display() {
        assert_eq!(ClientError::Timeout.to_string(), "timed out");
        assert!(ClientError::Body("x".into()).is_body());
    }
}
