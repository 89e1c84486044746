//! A small RESP2 Redis client: URL parsing, `AUTH`/`SELECT` on connect, command encoding,
//! reply parsing, single commands and pipelines, per-thread connection pools, timeouts and a
//! connect backoff.
//!
//! Why per-thread pools: a tokio socket belongs to the runtime that registered it, and sluice
//! runs one single-threaded runtime per worker thread. So idle connections live in a
//! `thread_local` map keyed by client id, and a connection never leaves the thread (and so
//! the runtime) that made it. (On a multi-threaded runtime a task, and the connection it
//! holds, may move between that runtime's threads: still the same runtime.) If a thread's
//! runtime is replaced, its idle connections fail on their next write and are dropped; a
//! fresh one is dialed in their place.
//!
//! Failure rules: every operation, connect included, runs under `op_timeout`; a connection
//! that errored or timed out is dropped, never put back. After a failed connect, or an
//! operation that timed out (a hung Redis), the client fails every call at once with
//! [`StoreError::Unavailable`] for `backoff` (1 s by default) instead of dialing or waiting
//! again on every call, so a dead Redis costs nothing per request. At most
//! `max_connections` operations run at once (all threads together), which bounds the open
//! connections; a burst of fire-and-forget writes waits its turn instead of dialing more.

use crate::StoreError;
use bytes::{Buf, BytesMut};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The null bulk string or null array.
    Nil,
    /// An integer reply.
    Int(i64),
    /// A simple string reply (`+OK`).
    Simple(String),
    /// A bulk string reply.
    Bulk(bytes::Bytes),
    /// An array reply (possibly nested).
    Array(Vec<Value>),
    /// An error reply (`-ERR ...`). [`RedisClient::cmd`] turns it into
    /// [`StoreError::Reply`]; in a pipeline it stays a value, one per failed command.
    Error(String),
}

impl Value {
    /// The integer, if this is an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// Where and how to connect, parsed from `redis://[user:pass@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port, 6379 by default.
    pub port: u16,
    /// ACL user name, if any (`AUTH user pass`).
    pub user: Option<String>,
    /// Password, if any; never printed by `Debug`.
    pub password: Option<String>,
    /// Database index for `SELECT`, 0 by default.
    pub db: u32,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bad = || StoreError::Protocol("bad percent escape in redis URL".into());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

impl RedisUrl {
    /// Parses `redis://[user:pass@]host[:port][/db]` (`[::1]` for IPv6; `%XX` escapes in the
    /// user and password). `rediss://` (TLS) is not supported.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Protocol(format!("bad redis URL: {why}"));
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| bad("expected `redis://` (TLS is not supported)"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    (!user.is_empty())
                        .then(|| percent_decode(user))
                        .transpose()?,
                    Some(percent_decode(pass)?),
                ),
                // `redis://secret@host`: a lone userinfo is the password.
                None => (None, Some(percent_decode(u)?)),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => 6379,
        };
        let db = match path.split('?').next().unwrap_or("") {
            "" => 0,
            d => d.parse().map_err(|_| bad("bad database index"))?,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            user,
            password,
            db,
        })
    }
}

/// Appends one command as a RESP array of bulk strings.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Largest bulk string accepted (Redis's own limit).
const MAX_BULK: usize = 512 << 20;
/// Deepest array nesting accepted.
const MAX_DEPTH: usize = 32;

/// Parses one reply from the front of `buf`: `Ok(None)` when more bytes are needed, else
/// the reply and how many bytes it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Value, usize)>, StoreError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn int(bytes: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Protocol("bad integer in reply".into()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, StoreError> {
    if depth > MAX_DEPTH {
        return Err(StoreError::Protocol("reply nested too deep".into()));
    }
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    match tag {
        b'+' => Ok(Some((Value::Simple(text(head)), next))),
        b'-' => Ok(Some((Value::Error(text(head)), next))),
        b':' => Ok(Some((Value::Int(int(head)?), next))),
        b'$' => {
            let len = int(head)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_BULK {
                return Err(StoreError::Protocol("bulk string too large".into()));
            }
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(StoreError::Protocol("bulk string not terminated".into()));
            }
            let bulk = bytes::Bytes::copy_from_slice(&buf[next..end]);
            Ok(Some((Value::Bulk(bulk), end + 2)))
        }
        b'*' => {
            let len = int(head)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            // Each element takes at least 3 bytes: don't trust `len` for the allocation.
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let mut items = Vec::with_capacity(len.min((buf.len() - next) / 3));
            let mut pos = next;
            for _ in 0..len {
                match parse_at(buf, pos, depth + 1)? {
                    Some((v, p)) => {
                        items.push(v);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), pos)))
        }
        other => Err(StoreError::Protocol(format!(
            "unknown reply type byte 0x{other:02x}"
        ))),
    }
}

/// One connection: a socket and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

// === impl Conn ===

impl Conn {
    /// Reads `replies` replies.
    async fn recv(&mut self, replies: usize) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::with_capacity(replies);
        while out.len() < replies {
            match parse_reply(&self.buf)? {
                Some((v, used)) => {
                    self.buf.advance(used);
                    out.push(v);
                }
                None => {
                    self.buf.reserve(4096);
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(StoreError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes `request` (one or more encoded commands) and reads `replies` replies.
    async fn round_trip(
        &mut self,
        request: &[u8],
        replies: usize,
    ) -> Result<Vec<Value>, StoreError> {
        self.stream.write_all(request).await?;
        self.recv(replies).await
    }
}

/// Operations (so connections) at once per client, by default.
const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Idle connections kept per thread and client.
const MAX_IDLE_PER_THREAD: usize = 16;

/// This thread's idle connections, by client id; the `Weak` tells when a client is gone.
type Pools = HashMap<u64, (Weak<Inner>, Vec<Conn>)>;

thread_local! {
    static POOLS: RefCell<Pools> = RefCell::new(HashMap::new());
}

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    id: u64,
    url: RedisUrl,
    op_timeout: Duration,
    backoff: Duration,
    epoch: Instant,
    /// Until when (ms since `epoch`) connects fail fast; 0 when not backing off.
    down_until_ms: AtomicU64,
    /// Operations running at once, all threads together: bounds the open connections.
    slots: tokio::sync::Semaphore,
    /// Requests written (single commands and pipelines alike).
    round_trips: AtomicU64,
}

/// A Redis client: cheap to clone, usable from any thread and runtime; connections are
/// pooled per thread.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("url", &self.inner.url)
            .field("op_timeout", &self.inner.op_timeout)
            .finish()
    }
}

// === impl RedisClient ===

impl RedisClient {
    /// A client for `url`; no connection is made until the first command.
    pub fn new(url: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self::from_url(RedisUrl::parse(url)?, op_timeout))
    }

    /// A client for a parsed URL.
    pub fn from_url(url: RedisUrl, op_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                id: NEXT_CLIENT_ID.fetch_add(1, Relaxed),
                url,
                op_timeout,
                backoff: Duration::from_secs(1),
                epoch: Instant::now(),
                down_until_ms: AtomicU64::new(0),
                slots: tokio::sync::Semaphore::new(DEFAULT_MAX_CONNECTIONS),
                round_trips: AtomicU64::new(0),
            }),
        }
    }

    /// Sets how long to fail fast after a failed connect or a timeout (1 s by default).
    /// Builder: call it before the client is cloned (on a shared client it does nothing).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.backoff = backoff;
        }
        self
    }

    /// Sets how many operations may run at once, all threads together (64 by default);
    /// each running operation holds one connection, so this bounds the open connections.
    /// Operations beyond it wait, within their time limit. Builder: call it before the
    /// client is cloned.
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.slots = tokio::sync::Semaphore::new(max.max(1));
        }
        self
    }

    /// Round trips this client (and its clones) attempted: every command or pipeline,
    /// failed ones included, connection handshakes not (for tests and metrics).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Relaxed)
    }

    /// The per-operation time limit.
    pub fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// Runs one command; an error reply becomes [`StoreError::Reply`].
    pub async fn cmd(&self, args: &[&[u8]]) -> Result<Value, StoreError> {
        let mut request = Vec::with_capacity(64);
        encode_command(args, &mut request);
        let mut replies = self.run(&request, 1).await?;
        match replies.pop() {
            Some(Value::Error(e)) => Err(StoreError::Reply(e)),
            Some(v) => Ok(v),
            None => Err(StoreError::Protocol("no reply".into())),
        }
    }

    /// Sends several commands in one write and returns their replies in order; an error
    /// reply stays a [`Value::Error`] in its place (the others still ran).
    pub async fn pipeline(&self, commands: &[&[&[u8]]]) -> Result<Vec<Value>, StoreError> {
        let mut request = Vec::with_capacity(64 * commands.len());
        for args in commands {
            encode_command(args, &mut request);
        }
        self.run(&request, commands.len()).await
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(&self, request: &[u8], replies: usize) -> Result<Vec<Value>, StoreError> {
        self.inner.round_trips.fetch_add(1, Relaxed);
        let limit = self.inner.op_timeout;
        match tokio::time::timeout(limit, self.run_untimed(request, replies)).await {
            Ok(result) => result,
            // The connection was inside the dropped future: it is gone with it. A Redis that
            // does not answer in time is treated like one that refused: back off.
            Err(_) => {
                self.back_off();
                Err(StoreError::Timeout(limit))
            }
        }
    }

    async fn run_untimed(&self, request: &[u8], replies: usize) -> Result<Vec<Value>, StoreError> {
        if self.backing_off() {
            return Err(StoreError::Unavailable(
                "redis: backing off after a failure".into(),
            ));
        }
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("redis client closed".into()))?;
        // A pooled connection may be dead (its runtime is gone, or its peer reset it). When
        // the write itself fails, the request did not reach Redis whole, and a command Redis
        // did not read whole never runs: drop the connection and try the next one. (A
        // pipeline whose first commands got through before the failure could run those
        // twice; the socket would have to die between two of them.) Once written, a request
        // is never sent again: a failed read may follow a command that ran.
        while let Some(mut conn) = self.take_idle() {
            if let Err(e) = conn.stream.write_all(request).await {
                tracing::debug!(error = %e, "pooled redis connection failed on write; dropped");
                continue;
            }
            let out = conn.recv(replies).await?;
            self.put_idle(conn);
            return Ok(out);
        }
        let mut conn = self.connect().await?;
        let out = conn.round_trip(request, replies).await?;
        self.put_idle(conn);
        Ok(out)
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        match self.dial().await {
            Ok(conn) => {
                self.inner.down_until_ms.store(0, Relaxed);
                Ok(conn)
            }
            Err(e) => {
                self.back_off();
                tracing::debug!(error = %e, "redis connect failed; backing off");
                Err(match e {
                    StoreError::Io(io) => StoreError::Unavailable(format!("redis connect: {io}")),
                    other => other,
                })
            }
        }
    }

    fn backing_off(&self) -> bool {
        let down_until = self.inner.down_until_ms.load(Relaxed);
        down_until != 0 && self.now_ms() < down_until
    }

    /// Fails calls fast for the backoff period.
    fn back_off(&self) {
        let backoff = u64::try_from(self.inner.backoff.as_millis()).unwrap_or(u64::MAX);
        let until = self.now_ms().saturating_add(backoff);
        self.inner.down_until_ms.store(until.max(1), Relaxed);
    }

    async fn dial(&self) -> Result<Conn, StoreError> {
        let url = &self.inner.url;
        let stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        let mut request = Vec::new();
        let mut replies = 0;
        if let Some(password) = &url.password {
            match &url.user {
                Some(user) => encode_command(
                    &[b"AUTH", user.as_bytes(), password.as_bytes()],
                    &mut request,
                ),
                None => encode_command(&[b"AUTH", password.as_bytes()], &mut request),
            }
            replies += 1;
        }
        if url.db != 0 {
            encode_command(&[b"SELECT", url.db.to_string().as_bytes()], &mut request);
            replies += 1;
        }
        if replies > 0 {
            for reply in conn.round_trip(&request, replies).await? {
                if let Value::Error(e) = reply {
                    return Err(StoreError::Unavailable(format!("redis handshake: {e}")));
                }
            }
        }
        Ok(conn)
    }

    fn take_idle(&self) -> Option<Conn> {
        POOLS
            .try_with(|pools| {
                pools
                    .borrow_mut()
                    .get_mut(&self.inner.id)
                    .and_then(|(_, idle)| idle.pop())
            })
            .ok()
            .flatten()
    }

    fn put_idle(&self, conn: Conn) {
        let _ = POOLS.try_with(|pools| {
            let mut pools = pools.borrow_mut();
            if !pools.contains_key(&self.inner.id) {
                // A new client on this thread: forget the pools of clients that are gone.
                pools.retain(|_, (client, _)| client.strong_count() > 0);
            }
            let (_, idle) = pools
                .entry(self.inner.id)
                .or_insert_with(|| (Arc::downgrade(&self.inner), Vec::new()));
            if idle.len() < MAX_IDLE_PER_THREAD {
                idle.push(conn);
            }
        });
    }

    /// Idle connections this thread holds for this client (for tests and metrics).
    pub fn idle_on_this_thread(&self) -> usize {
        POOLS
            .try_with(|pools| {
                pools
                    .borrow()
                    .get(&self.inner.id)
                    .map_or(0, |(_, idle)| idle.len())
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").expect("url");
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 2));
        assert_eq!((u.user, u.password), (None, None));
        let u = RedisUrl::parse("redis://alice:p%40ss@cache.local").expect("url");
        assert_eq!((u.host.as_str(), u.port, u.db), ("cache.local", 6379, 0));
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert!(!format!("{u:?}").contains("p@ss"));
        let u = RedisUrl::parse("redis://:secret@[::1]:7000/").expect("url");
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
        for bad in [
            "http://x",
            "rediss://x",
            "redis://",
            "redis://h:port",
            "redis://h/x",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b""], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_replies() {
        let cases: [(&[u8], Value); 7] = [
            (b"+OK\r\n", Value::Simple("OK".into())),
            (b"-ERR no\r\n", Value::Error("ERR no".into())),
            (b":-42\r\n", Value::Int(-42)),
            (b"$-1\r\n", Value::Nil),
            (b"*-1\r\n", Value::Nil),
            (b"$5\r\na\r\nbc\r\n", Value::Bulk("a\r\nbc".into())),
            (
                b"*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n*0\r\n",
                Value::Array(vec![
                    Value::Int(1),
                    Value::Array(vec![Value::Bulk("x".into()), Value::Nil]),
                    Value::Array(vec![]),
                ]),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(
                parse_reply(wire).expect("parse"),
                Some((want.clone(), wire.len()))
            );
            // Every proper prefix asks for more bytes.
            for cut in 0..wire.len() {
                assert_eq!(
                    parse_reply(&wire[..cut]).expect("prefix"),
                    None,
                    "{want:?} cut {cut}"
                );
            }
        }
        assert!(parse_reply(b"?x\r\n").is_err());
        assert!(parse_reply(b":x\r\n").is_err());
        assert!(parse_reply(b"$1\r\nab\r\n").is_err());
    }
}
