//! What the pipeline's stages answer with, before it becomes an HTTP response (see
//! `pipeline::respond`): the guard that ends the request needs to know which kind of body
//! ends it.

use super::ending::Tracked;
use crate::cache::flight::FlightBody;
use bytes::Bytes;
use http::header::HeaderValue;
use http::StatusCode;
use sluice_types::Usage;

/// One answer, in OpenAI's format.
pub enum Answer {
    /// A body known in full: the request ends when its head is built.
    Whole {
        /// The upstream's status (a success: failures are errors).
        status: StatusCode,
        /// Its content type.
        content_type: HeaderValue,
        /// The body.
        body: Bytes,
        /// The usage the answer reported, if any.
        usage: Option<Usage>,
    },
    /// A whole event stream (a cached or degraded answer replayed as SSE): ends the request
    /// when its head is built.
    Events(Bytes),
    /// A stream that ends the request when it ends.
    Stream(Box<dyn Tracked>),
    /// Raw bytes piped as they arrive (text-to-speech audio), in the upstream's content
    /// type and, when it sent one, length: ends the request when it ends.
    Piped {
        /// The upstream's content type.
        content_type: HeaderValue,
        /// The upstream's `Content-Length`, if it sent one.
        content_length: Option<HeaderValue>,
        /// The body.
        body: Box<dyn Tracked>,
    },
    /// A client's copy of a stream whose upstream is driven for a flight of coalesced
    /// requests: the driven stream ends the request (its guard was handed over).
    Detached(FlightBody),
    /// A coalesced follower's copy, through the answer guardrails.
    DetachedGuarded(Box<super::guard_stream::GuardedStream<FlightBody>>),
}

impl Answer {
    /// A whole JSON body.
    pub fn json(body: Bytes, usage: Option<Usage>) -> Self {
        Self::Whole {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static("application/json"),
            body,
            usage,
        }
    }
}
