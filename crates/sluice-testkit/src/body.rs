//! Response bodies of the fake upstream, and cancellation detection.
//!
//! Every response carries a [`CancelGuard`]. The guard is disarmed once the
//! response is complete (its last frame handed to hyper) or deliberately
//! broken (`cut_after_chunks`); if it is dropped while still armed, the
//! response was abandoned — the client or the gateway went away — and the
//! upstream's cancellation counter goes up.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::native::Shape;

/// Counters shared between the server and its handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub cancelled: AtomicUsize,
    pub requests: AtomicUsize,
    /// Requests whose head arrived (their body may still be arriving).
    pub started: AtomicUsize,
    /// Requests whose body broke off before its end (the client aborted it).
    pub broken_bodies: AtomicUsize,
    pub connections: AtomicUsize,
    /// Connections open now, and the most ever open at once.
    pub open: AtomicUsize,
    pub peak_open: AtomicUsize,
    /// Woken (all waiters) whenever a counter changes.
    pub changed: Notify,
}

impl Counters {
    pub fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// One open connection, counted in [`Counters::open`] (and the peak) while it lives.
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<Counters>);

impl OpenGuard {
    pub fn new(counters: Arc<Counters>) -> Self {
        let now = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak_open.fetch_max(now, Ordering::SeqCst);
        Self(counters)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a cancellation when dropped while armed.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    counters: Option<Arc<Counters>>,
}

impl CancelGuard {
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters: Some(counters),
        }
    }

    /// The response is complete (or deliberately broken): not a cancellation.
    pub fn disarm(&mut self) {
        self.counters = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(c) = self.counters.take() {
            c.bump(&c.cancelled);
        }
    }
}

/// Error yielded by a body to make hyper abort the connection mid-body.
#[derive(Debug)]
pub struct CutError;

impl fmt::Display for CutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake upstream cut the stream on purpose")
    }
}

impl StdError for CutError {}

/// The response body type of the fake upstream.
#[derive(Debug)]
pub(crate) struct FakeBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Sse(Box<SseStream>),
}

impl FakeBody {
    /// A body sent in one frame (with a `Content-Length`).
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(data)).normalize(),
        }
    }

    /// A streamed SSE body.
    pub fn sse(stream: SseStream) -> Self {
        Self {
            kind: Kind::Sse(Box::new(stream)),
        }
    }
}

impl Kind {
    fn normalize(self) -> Self {
        match self {
            Kind::Full(Some(b)) if b.is_empty() => Kind::Full(None),
            other => other,
        }
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = CutError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Sse(s) => s.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Sse(_) => SizeHint::default(),
        }
    }
}

/// Endless content generator for `infinite_stream`.
#[derive(Debug)]
pub(crate) struct Ticker {
    /// Writes each piece in the response's shape.
    pub shape: Shape,
    pub pieces: Vec<String>,
    pub next: usize,
}

impl Ticker {
    fn next_event(&mut self) -> Bytes {
        let piece = if self.pieces.is_empty() {
            format!("tick {} ", self.next)
        } else {
            let i = self.next % self.pieces.len();
            self.pieces.get(i).cloned().unwrap_or_default()
        };
        self.next = self.next.wrapping_add(1);
        self.shape.content(&piece)
    }
}

/// A streamed response (SSE events, or NDJSON lines): queued events, then optionally endless content,
/// with a delay between events and an optional deliberate cut.
#[derive(Debug)]
pub(crate) struct SseStream {
    queue: VecDeque<Bytes>,
    ticker: Option<Ticker>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    sent: usize,
    cut_after: Option<usize>,
    /// Whether we already yielded once at the cut point (so hyper flushed the
    /// last event before we abort).
    cut_yielded: bool,
    guard: CancelGuard,
}

impl SseStream {
    pub fn new(
        queue: VecDeque<Bytes>,
        ticker: Option<Ticker>,
        delay: Duration,
        cut_after: Option<usize>,
        guard: CancelGuard,
    ) -> Self {
        Self {
            queue,
            ticker,
            delay,
            sleep: None,
            sent: 0,
            cut_after,
            cut_yielded: false,
            guard,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, CutError>>> {
        if self.cut_after.is_some_and(|n| self.sent >= n) {
            if !self.cut_yielded {
                // Let hyper write and flush what it has buffered (the last
                // event) before the connection is torn down.
                self.cut_yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.guard.disarm();
            self.queue.clear();
            self.ticker = None;
            self.cut_after = None;
            return Poll::Ready(Some(Err(CutError)));
        }
        if self.sent > 0 && !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let next = match self.queue.pop_front() {
            Some(ev) => Some(ev),
            None => self.ticker.as_mut().map(Ticker::next_event),
        };
        match next {
            Some(ev) => {
                self.sent += 1;
                if self.queue.is_empty() && self.ticker.is_none() && self.cut_after.is_none() {
                    // Last event handed over: the response is complete.
                    self.guard.disarm();
                }
                Poll::Ready(Some(Ok(Frame::data(ev))))
            }
            None => {
                if self.cut_after.is_some() {
                    // Fewer events than the cut point: everything was sent,
                    // still end with the abort rather than a clean end.
                    self.cut_after = Some(self.sent);
                    return self.poll_next(cx);
                }
                self.guard.disarm();
                Poll::Ready(None)
            }
        }
    }
}
