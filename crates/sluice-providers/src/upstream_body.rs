//! The body of an upstream request: the client's (possibly spliced or translated) body in
//! memory, or a multipart upload streamed from its spool.

use crate::upload::UploadBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Body of an upstream request: the (possibly spliced or translated) client body, sent
/// whole; or a multipart upload streamed from its spool.
#[derive(Debug)]
pub enum UpstreamBody {
    /// A body in memory.
    Whole(Full<Bytes>),
    /// An upload, its files read from disk as they are sent.
    Upload(UploadBody),
}

impl UpstreamBody {
    /// A body in memory.
    pub fn new(body: Bytes) -> Self {
        Self::Whole(Full::new(body))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Self::Whole(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            Self::Upload(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(b) => b.is_end_stream(),
            Self::Upload(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Whole(b) => b.size_hint(),
            Self::Upload(b) => b.size_hint(),
        }
    }
}
