//! Why a request on a connection of [`super::H1Client`] failed: no connection, an exchange
//! that broke before the response's head, or a body that broke before its end.

use std::fmt;
use std::io;

/// Why a request failed, or its response's body broke off.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed before the response's head was read.
    Exchange(Cause),
    /// The response's body could not be read to its end (shown as hyper showed it:
    /// `error reading a body from connection`, the cause as its source).
    Body(Cause),
}

/// What went wrong on the connection.
#[derive(Debug)]
pub enum Cause {
    /// Writing the request failed.
    Write(io::Error),
    /// The request's own body failed (a spooled upload could not be read), or did not
    /// match its length.
    RequestBody(io::Error),
    /// Reading the socket failed.
    Read(io::Error),
    /// The response head is over the limit it carries (`head::MAX_HEAD_BYTES`).
    HeadTooLarge(usize),
    /// The response head is not HTTP/1.x.
    MalformedHead(&'static str),
    /// The body's framing (chunked) is malformed.
    Framing(&'static str),
    /// The upstream closed the connection before the response's end.
    Closed,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Write(_) => f.write_str("error writing the request"),
            Self::RequestBody(_) => f.write_str("error reading the request's body"),
            Self::Read(_) => f.write_str("error reading from the connection"),
            Self::HeadTooLarge(limit) => {
                write!(f, "the response head is larger than {limit} bytes")
            }
            Self::MalformedHead(why) => write!(f, "malformed response head: {why}"),
            Self::Framing(why) => write!(f, "malformed response body: {why}"),
            Self::Closed => f.write_str("connection closed before message completed"),
        }
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Write(e) | Self::RequestBody(e) | Self::Read(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(_) => f.write_str("error trying to connect"),
            Self::Exchange(cause) => cause.fmt(f),
            Self::Body(_) => f.write_str("error reading a body from connection"),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => Some(&**e),
            Self::Exchange(cause) => cause.source(),
            Self::Body(cause) => Some(cause),
        }
    }
}
