//! Response bodies out: whole bytes or a stream, and the JSON, error and event-stream
//! responses every handler builds.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use sluice_core::{Error, ErrorKind};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A streamed body of any kind (a relayed upstream stream, a local model's, a coalesced
/// flight's, an Anthropic re-framing of one of them, an upstream's piped audio).
pub type StreamBody = Pin<Box<dyn Body<Data = Bytes, Error = Aborted> + Send>>;

/// A body that broke off midway and cannot say so in its own bytes: an upstream's piped
/// answer (text-to-speech audio) cut or stalled before its end, a file's content that
/// could not be read to its end. Event streams never give it (they end with an error
/// event); only such pipes do.
///
/// Returned from `poll_frame`, it makes hyper abort the response rather than end it: a
/// body error on the server side is a user body error that ends the connection's
/// dispatch, so over HTTP/1.1 the terminating zero-length chunk is never written and the
/// connection is closed (a body with a `Content-Length` is left short of it), and over
/// HTTP/2 the stream is reset (`RST_STREAM`, `INTERNAL_ERROR`). Either way the client's
/// HTTP library reports an incomplete body instead of a short one that looks whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted(());

impl Aborted {
    /// The abort of a body that broke off midway.
    pub(crate) fn midway() -> Self {
        Self(())
    }
}

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response body broke off midway")
    }
}

impl std::error::Error for Aborted {}

impl From<Infallible> for Aborted {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// The body of every response sluice sends: whole bytes, a replayed event stream, or a
/// stream sent as it is made. An enum, so that the common whole body is no boxed trait object.
pub enum ResponseBody {
    /// A body known in full.
    Full(Option<Bytes>),
    /// A whole event stream (a cached or degraded answer replayed as SSE): sent like a
    /// relayed stream, chunked and without a length, as SSE clients expect.
    Events(Option<Bytes>),
    /// A stream, sent frame by frame as it is made.
    Stream(StreamBody),
}

impl ResponseBody {
    /// A whole body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// A stream: one that cannot fail, or one that can abort (see [`Aborted`]).
    pub fn stream<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Aborted>,
    {
        Self::Stream(Box::pin(body.map_err(Into::into)))
    }

    /// This body, a stream polled and dropped inside `span` (what it logs as it ends carries
    /// the request's id); whole bodies as they are.
    pub fn in_span(self, span: tracing::Span) -> Self {
        match self {
            Self::Stream(inner) => Self::stream(InSpan {
                inner: Some(inner),
                span,
            }),
            whole => whole,
        }
    }
}

impl ResponseBody {
    /// This body, holding `guard` until a stream's end (a whole body lets it go now: its
    /// answer is made).
    pub fn holding<G: Send + Unpin + 'static>(self, guard: G) -> Self {
        match self {
            Self::Stream(inner) => Self::Stream(Box::pin(Holding {
                inner,
                _guard: guard,
            })),
            whole => whole,
        }
    }
}

/// A stream and what it holds until it is dropped.
struct Holding<G> {
    inner: StreamBody,
    _guard: G,
}

impl<G: Unpin> Body for Holding<G> {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        self.get_mut().inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream entered into its request's span whenever it runs: polled, and dropped.
struct InSpan {
    inner: Option<StreamBody>,
    span: tracing::Span,
}

impl Body for InSpan {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        match &mut this.inner {
            Some(inner) => inner.as_mut().poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for InSpan {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        drop(self.inner.take());
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            Self::Full(b) | Self::Events(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None) | Self::Events(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) | Self::Events(_) => SizeHint::default(),
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
    if let Some(wait) = err.retry_after() {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, retry_after_seconds(wait).into());
    }
    if matches!(err.kind(), ErrorKind::PayloadTooLarge { .. }) {
        // The rest of the body was discarded; do not offer the connection for reuse.
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// `Retry-After`'s value: whole seconds, rounded up (an upstream's `1.5` or
/// `retry-after-ms: 1500` is sent as `2`).
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The headers of every event stream sluice sends, around `body`.
pub fn sse(body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_seconds(Duration::from_secs(17)), 17);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::ZERO), 0);
        let e: Error = ErrorKind::RateLimited {
            message: "m".into(),
            retry_after: Some(Duration::from_millis(200)),
        }
        .into();
        let r = error_response(&e);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "1");
    }
}
