//! Request bodies in: read whole under a size limit and a deadline, and upstream bodies
//! read whole under theirs.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use sluice_core::{Error, ErrorKind};
use sluice_providers::ResponseBody;
use std::time::Duration;
use tokio::time::Instant;

/// A client's request body: hyper's `Incoming` on the wire; any body in tests that serve
/// requests in process, without a socket.
pub trait ClientBody:
    Body<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static
{
}

impl<B> ClientBody for B where
    B: Body<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static
{
}

/// Reads a request body of at most `limit` bytes within `timeout`.
///
/// A body announced (`Content-Length`) or found to be over the limit is read on and thrown
/// away, never held, so that a client that sends its whole body before reading gets the 413
/// rather than a reset connection. The one exception is `Expect: 100-continue`, where the
/// client waits and nothing needs to be drained.
pub async fn read_limited<B: ClientBody>(
    mut body: B,
    content_length: Option<u64>,
    expects_continue: bool,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let deadline = Instant::now() + timeout;
    let too_large = || {
        Error::from(ErrorKind::PayloadTooLarge {
            limit,
            setting: "server.max_body_bytes",
        })
    };
    if content_length.is_some_and(|n| n > limit) {
        if !expects_continue {
            drain(body, deadline).await;
        }
        return Err(too_large());
    }
    let timed_out = || {
        Error::from(ErrorKind::ClientTimeout {
            limit_ms: timeout.as_millis() as u64,
        })
    };
    let mut gathered = Gather::default();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ErrorKind::InvalidRequest {
                    message: format!("could not read the request body: {e}"),
                    param: None,
                }
                .into())
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if gathered.push(data, content_length) > limit {
            drain(body, deadline).await;
            return Err(too_large());
        }
    }
    Ok(gathered.finish())
}

/// Gathers the frames of a body. Most bodies arrive in one frame, which is kept as it is,
/// without a copy.
#[derive(Default)]
struct Gather {
    first: Option<Bytes>,
    buf: Option<BytesMut>,
    len: u64,
}

impl Gather {
    /// Adds a frame; returns the length so far. `expected` sizes the buffer.
    fn push(&mut self, data: Bytes, expected: Option<u64>) -> u64 {
        self.len += data.len() as u64;
        match (&mut self.first, &mut self.buf) {
            (None, None) => self.first = Some(data),
            (Some(f), None) => {
                let size = expected.map_or(f.len() + data.len(), |n| n as usize);
                let mut b = BytesMut::with_capacity(size);
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                self.buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
        self.len
    }

    fn finish(self) -> Bytes {
        match self.buf {
            Some(b) => b.freeze(),
            None => self.first.unwrap_or_default(),
        }
    }
}

/// Reads and discards the rest of a body until it ends or `deadline`.
async fn drain<B: ClientBody>(mut body: B, deadline: Instant) {
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, body.frame()).await {}
}

/// Reads an upstream body of at most `limit` bytes, with the total `deadline` and at most
/// `idle` between two reads.
pub async fn read_upstream(
    mut body: ResponseBody,
    limit: u64,
    deadline: Instant,
    idle: Duration,
) -> Result<Bytes, UpstreamReadError> {
    let mut gathered = Gather::default();
    loop {
        let until = deadline.min(Instant::now() + idle);
        let frame = match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) => return Err(UpstreamReadError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(UpstreamReadError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if gathered.push(data, None) > limit {
            return Err(UpstreamReadError::TooLarge);
        }
    }
    Ok(gathered.finish())
}

/// Why an upstream body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamReadError {
    /// Total or idle timeout.
    Timeout,
    /// The connection broke.
    Broken(String),
    /// Over `server.max_response_bytes`.
    TooLarge,
}

/// Reads a client body under the configured limits.
pub async fn read_body<B: ClientBody>(
    server: &sluice_core::config::ServerConfig,
    parts: &http::request::Parts,
    incoming: B,
) -> Result<Bytes, Error> {
    let content_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    read_limited(
        incoming,
        content_length,
        expects_continue,
        server.max_body_bytes,
        server.request_read_timeout,
    )
    .await
}
