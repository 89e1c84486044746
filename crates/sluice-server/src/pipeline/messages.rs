//! `POST /v1/messages` streams: a stream of OpenAI chunks (relayed, local, coalesced or
//! replayed from the cache) re-framed as Anthropic's event sequence, event by event. The
//! rest of the endpoint's translation (the request in, whole answers and errors out) is
//! `pipeline::respond`'s, from `sluice_providers::anthropic::inbound`.

use crate::response::ResponseBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sluice_providers::anthropic::inbound::StreamConverter;
use sluice_types::sse::{event_data, Keep, SseScanner};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Longest OpenAI event re-framed (sluice's own chunks, so far below any real limit).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A stream of OpenAI chunks re-framed as Anthropic's event sequence, event by event.
pub struct ToAnthropic {
    inner: ResponseBody,
    scanner: SseScanner,
    converter: StreamConverter,
    ended: bool,
}

impl ToAnthropic {
    /// Re-frames `inner` as the answer of `model`.
    pub fn new(inner: ResponseBody, model: &str) -> Self {
        Self {
            inner,
            scanner: SseScanner::new(MAX_EVENT_BYTES),
            converter: StreamConverter::new(model),
            ended: false,
        }
    }
}

impl Body for ToAnthropic {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
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
                    let ToAnthropic {
                        scanner, converter, ..
                    } = this;
                    let _ = scanner.push(data, |ev| {
                        if let Some(d) = event_data(ev) {
                            converter.on_event(&d, &mut out);
                        }
                        Keep::Drop
                    });
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
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
