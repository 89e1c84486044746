//! Pipes an upstream's raw answer (text-to-speech audio) to the client as it arrives,
//! never buffering it whole, under the provider's `chunk_timeout_ms` between reads and the
//! request's deadline. Audio has no error event: a stream that breaks or stalls ends in
//! [`Aborted`], which makes hyper abort the response (no final chunk and the connection
//! closed over HTTP/1.1, a reset stream over HTTP/2), so the client sees an incomplete
//! body as an error whether or not the upstream sent a `Content-Length` (the response
//! carries it when it did). Dropping the pipe (the client left) drops the upstream body,
//! which cancels the upstream request.

use super::ending::{Ending, Tracked};
use crate::response::Aborted;
use bytes::Bytes;
use http_body::{Body, Frame};
use sluice_providers::ResponseBody;
use sluice_types::Usage;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The piped response body.
pub struct Pipe {
    upstream: ResponseBody,
    chunk_timeout: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    ended: bool,
    failed: bool,
    /// The abort still to be given, once the pipe broke (see [`Pipe::abort`]).
    abort: Option<Aborted>,
    ttft: Duration,
}

impl Pipe {
    /// Pipes `upstream` (its head already read).
    pub fn new(
        upstream: ResponseBody,
        chunk_timeout: Duration,
        deadline: Instant,
        ttft: Duration,
    ) -> Self {
        let idle_until = deadline.min(Instant::now() + chunk_timeout);
        Self {
            upstream,
            chunk_timeout,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(idle_until)),
            ended: false,
            failed: false,
            abort: None,
            ttft,
        }
    }

    /// Ends the pipe midway (the upstream broke or stalled): the next poll gives the abort.
    /// Yielding once first lets hyper flush the audio it holds (it flushes while a body is
    /// pending, and drops its buffer when the body fails), so the client gets every byte
    /// the upstream sent before the cut.
    fn abort(&mut self, cx: &Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        self.ended = true;
        self.failed = true;
        self.abort = Some(Aborted::midway());
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for Pipe {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(this.abort.take().map(Err));
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let next = this.deadline.min(Instant::now() + this.chunk_timeout);
                    this.timer.as_mut().reset(next);
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Poll::Ready(Some(Err(_))) => return this.abort(cx),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        return this.abort(cx);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Tracked for Pipe {
    fn ending(&mut self, completed: bool) -> Ending {
        let status = match (self.failed, completed) {
            (true, _) => 502,
            (false, false) => 499,
            (false, true) => 200,
        };
        Ending {
            status,
            // Speech is billed by the characters of the request (the tab knows them).
            usage: Usage::default(),
            estimated: false,
            ttft: Some(self.ttft),
        }
    }
}
