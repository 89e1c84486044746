//! Request bodies in (bounded, timed) and response bodies out.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_core::{Error, ErrorKind};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

use crate::relay::Relay;

/// The body of every response sluice sends: whole bytes, or a relayed upstream stream.
pub enum ResponseBody {
    /// A body known in full.
    Full(Option<Bytes>),
    /// A whole event stream (a cached or degraded answer replayed as SSE): sent like a
    /// relayed stream, chunked and without a length, as SSE clients expect.
    Events(Option<Bytes>),
    /// An upstream stream forwarded event by event.
    Relay(Box<Relay>),
    /// A stream re-framed in Anthropic's event format (`/v1/messages`).
    Converted(Box<crate::messages::ToAnthropic>),
    /// A stream read from a coalesced flight (see `cache::flight`).
    Flight(Box<crate::cache::flight::FlightBody>),
    /// A local model's answer, generated as it is sent.
    Local(Box<crate::local::LocalStream>),
}

impl ResponseBody {
    /// A whole body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(b) | Self::Events(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Relay(r) => Pin::new(&mut **r).poll_frame(cx),
            Self::Converted(c) => Pin::new(&mut **c).poll_frame(cx),
            Self::Flight(f) => Pin::new(&mut **f).poll_frame(cx),
            Self::Local(l) => Pin::new(&mut **l).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None) | Self::Events(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Relay(_)
            | Self::Converted(_)
            | Self::Flight(_)
            | Self::Events(_)
            | Self::Local(_) => SizeHint::default(),
        }
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An error in OpenAI's shape, with `Retry-After` when the error carries one.
pub fn error_response(err: &Error) -> Response<ResponseBody> {
    let body = sluice_types::ErrorBody {
        message: &err.message(),
        kind: err.error_type(),
        param: err.param(),
        code: err.code(),
    }
    .to_json();
    let status = StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut r = json(status, body);
    if let Some(v) = err
        .retry_after()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        r.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    if matches!(err.kind(), ErrorKind::PayloadTooLarge { .. }) {
        // The rest of the body was discarded; do not offer the connection for reuse.
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Reads a request body of at most `limit` bytes within `timeout`.
///
/// A body announced (`Content-Length`) or found to be over the limit is read on and thrown
/// away, never held, so that a client that sends its whole body before reading gets the 413
/// rather than a reset connection. The one exception is `Expect: 100-continue`, where the
/// client waits and nothing needs to be drained.
pub async fn read_limited(
    mut body: Incoming,
    content_length: Option<u64>,
    expects_continue: bool,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let deadline = Instant::now() + timeout;
    let too_large = || Error::from(ErrorKind::PayloadTooLarge { limit });
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
async fn drain(mut body: Incoming, deadline: Instant) {
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, body.frame()).await {}
}

/// Reads an upstream body of at most `limit` bytes, with the total `deadline` and at most
/// `idle` between two reads.
pub async fn read_upstream(
    mut body: Incoming,
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
