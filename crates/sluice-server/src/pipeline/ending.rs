//! How a streamed answer ended, as the stream itself tells it: the one thing every body
//! that ends a request (a relayed upstream stream, a local model's stream, a coalesced
//! follower's copy) has to say to the guard that closes the request (see `finish`).

use crate::response::Aborted;
use bytes::Bytes;
use http_body::Body;
use sluice_types::Usage;
use std::time::Duration;

/// The end of a request, as recorded in its spend record and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The status the client got in the end (499: the client left; 502: a stream failed
    /// midway, after its 200 head).
    pub status: u16,
    /// Tokens used upstream (zero for answers from the cache).
    pub usage: Usage,
    /// `usage` is sluice's estimate: the upstream reported none.
    pub estimated: bool,
    /// Arrival of the request to the first byte of a stream.
    pub ttft: Option<Duration>,
}

impl Ending {
    /// An end with nothing used upstream.
    pub fn bare(status: u16) -> Self {
        Self {
            status,
            usage: Usage::default(),
            estimated: false,
            ttft: None,
        }
    }
}

/// A streamed body that can say how it ended.
pub trait Tracked: Body<Data = Bytes, Error = Aborted> + Send + Unpin + 'static {
    /// How the stream went: called once, when it has ended (`completed`) or when it is
    /// dropped before its end (the client left: `!completed`).
    fn ending(&mut self, completed: bool) -> Ending;

    /// What guardrails found of the request and of this stream, for the spend record
    /// (`None`: nothing, or the stream was not guarded).
    fn guardrails(&self) -> Option<String> {
        None
    }
}
