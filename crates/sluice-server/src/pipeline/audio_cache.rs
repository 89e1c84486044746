//! Text-to-speech audio in the cache: a leader's piped audio copied into its entry as it
//! passes to the client (never held back: the client gets each piece as the upstream sends
//! it), and an entry's audio replayed in pieces with its content type.
//!
//! The copy is bounded by the cache's `max_entry_bytes`: past it the copy is dropped and the
//! audio only piped. The entry is stored, and the flight's followers served it, only when
//! the upstream's audio ended cleanly and the client read it to its end; a cut or stalled
//! upstream, or a client that left, fails the flight and stores nothing.

use super::ending::{Ending, Tracked};
use crate::cache::entry::{Answer as Entry, Meta};
use crate::cache::flight::Leader;
use crate::cache::{self, Cache};
use crate::response::Aborted;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Pieces a replayed entry is sent in.
const REPLAY_PIECE: usize = 64 * 1024;

/// Where and how a leader's audio is kept.
pub struct Keep {
    /// The cache.
    pub cache: Arc<Cache>,
    /// The flight the audio settles.
    pub leader: Leader,
    /// Whether to store the entry (followers are served it either way).
    pub store: bool,
    /// The entry's time to live.
    pub ttl: Duration,
    /// The largest entry kept.
    pub max_bytes: u64,
    /// The entry's metadata, its content type set; latency and time are filled at the end.
    pub meta: Meta,
    /// When the request arrived.
    pub started: Instant,
}

/// A leader's piped audio, copied into its cache entry on the way.
pub struct Tee {
    inner: Box<dyn Tracked>,
    /// The audio so far; `None` once it outgrew the entry bound.
    copy: Option<BytesMut>,
    keep: Option<Keep>,
}

impl Tee {
    /// Copies `inner`'s audio for `keep`.
    pub fn new(inner: Box<dyn Tracked>, keep: Keep) -> Self {
        Self {
            inner,
            copy: Some(BytesMut::new()),
            keep: Some(keep),
        }
    }

    fn copy(&mut self, data: &Bytes) {
        let (Some(copy), Some(keep)) = (&mut self.copy, &self.keep) else {
            return;
        };
        if (copy.len() + data.len()) as u64 > keep.max_bytes {
            self.copy = None;
            keep.cache.metrics.too_large.fetch_add(1, Relaxed);
        } else {
            copy.extend_from_slice(data);
        }
    }

    /// Stores the audio if it ended cleanly; settles the flight either way.
    fn settle(&mut self, end: &Ending, completed: bool) {
        let Some(keep) = self.keep.take() else {
            return;
        };
        let copy = self.copy.take().filter(|_| completed && end.status == 200);
        let Some(copy) = copy else {
            keep.leader.fail();
            return;
        };
        let mut meta = keep.meta;
        meta.latency_ms = keep.started.elapsed().as_millis() as u64;
        meta.created_ms = cache::unix_ms();
        let entry = Entry {
            meta,
            body: copy.freeze(),
        };
        if keep.store {
            let key = *keep.leader.key();
            keep.cache
                .insert(key, &entry, (keep.ttl, keep.max_bytes), None);
        }
        keep.leader.done(Arc::new(entry));
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.copy(data);
            }
        }
        polled
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Tracked for Tee {
    fn ending(&mut self, completed: bool) -> Ending {
        let end = self.inner.ending(completed);
        self.settle(&end, completed);
        end
    }
}

/// An entry's audio, sent in pieces: ends the request when it ends.
pub struct Replay {
    rest: Bytes,
}

impl Replay {
    /// Replays `audio`.
    pub fn new(audio: Bytes) -> Self {
        Self { rest: audio }
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = this.rest.len().min(REPLAY_PIECE);
        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

impl Tracked for Replay {
    fn ending(&mut self, completed: bool) -> Ending {
        Ending::bare(if completed { 200 } else { 499 })
    }
}
