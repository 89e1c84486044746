//! Streams in another API's format: a stream of OpenAI chunks (relayed, local, coalesced or
//! replayed from the cache) re-framed event by event by a [`Reframe`] translation of
//! `sluice-providers` (Anthropic's Messages events for `/v1/messages`, the Responses API's
//! events for `/v1/responses`); a native upstream's Responses events passed on as they
//! came, [`Watched`] on the way; and OpenAI chunks passed on to OpenAI's clients without the
//! prompt-usage comment meant for the re-framing ([`Unannotated`]).

use crate::response::Aborted;
use crate::response::ResponseBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sluice_providers::chunks::{prompt_usage_of, strip_prompt_usage};
use sluice_providers::responses::native::NativeWatcher;
use sluice_providers::Reframe;
use sluice_types::sse::{event_data, Keep, SseScanner};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Longest OpenAI event re-framed (sluice's own chunks, so far below any real limit).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A stream of OpenAI chunks re-framed by `C`, event by event.
pub struct Reframed<C> {
    inner: ResponseBody,
    scanner: SseScanner,
    converter: C,
    ended: bool,
}

impl<C: Reframe> Reframed<C> {
    /// Re-frames `inner` with `converter`.
    pub fn new(inner: ResponseBody, converter: C) -> Self {
        Self {
            inner,
            scanner: SseScanner::new(MAX_EVENT_BYTES),
            converter,
            ended: false,
        }
    }
}

impl<C: Reframe + Unpin> Body for Reframed<C> {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let mut out = Vec::new();
                    let Reframed {
                        scanner, converter, ..
                    } = this;
                    let _ = scanner.push(data, |ev| {
                        if let Some(d) = event_data(ev) {
                            converter.on_event(&d, &mut out);
                        } else if let Some(u) = prompt_usage_of(ev) {
                            converter.on_prompt_usage(u);
                        }
                        Keep::Drop
                    });
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(aborted))) => return Poll::Ready(Some(Err(aborted))),
                Poll::Ready(None) => {
                    this.ended = true;
                    if !this.converter.is_done() {
                        let mut out = Vec::new();
                        this.converter.finish_stream(&mut out);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A stream of OpenAI chunks for an OpenAI client: the frames before its first data event
/// lose a leading prompt-usage comment (which translated streams write before their first
/// chunk for [`Reframed`]'s `message_start`); every frame after it is passed on untouched.
pub struct Unannotated {
    inner: ResponseBody,
    checking: bool,
}

impl Unannotated {
    /// Passes on `inner` without its prompt-usage comment.
    pub fn new(inner: ResponseBody) -> Self {
        Self {
            inner,
            checking: true,
        }
    }
}

impl Body for Unannotated {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        loop {
            let polled = Pin::new(&mut this.inner).poll_frame(cx);
            if !this.checking {
                return polled;
            }
            let Poll::Ready(Some(Ok(frame))) = polled else {
                return polled;
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(other) => return Poll::Ready(Some(Ok(other))),
            };
            if let Some(rest) = strip_prompt_usage(&data) {
                data = data.slice(data.len() - rest.len()..);
            }
            this.checking = !data.windows(5).any(|w| w == b"data:");
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// A native Responses stream passed on event by event as it came, watched by a
/// [`NativeWatcher`] (which stores the completed response and words sluice's own error
/// event in the Responses API's shape).
pub struct Watched {
    inner: ResponseBody,
    scanner: SseScanner,
    watcher: NativeWatcher,
    ended: bool,
}

impl Watched {
    /// Watches `inner` with `watcher`.
    pub fn new(inner: ResponseBody, watcher: NativeWatcher) -> Self {
        Self {
            inner,
            scanner: SseScanner::new(MAX_EVENT_BYTES),
            watcher,
            ended: false,
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let mut out = Vec::new();
                    let Watched {
                        scanner, watcher, ..
                    } = this;
                    let _ = scanner.push(data, |ev| {
                        watcher.on_event(ev, &mut out);
                        Keep::Drop
                    });
                    if out.is_empty() {
                        continue;
                    }
                    let out = Bytes::from(out);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let tail = this.scanner.finish();
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                other => return other,
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
