//! Finished spans as OpenTelemetry's data model has them (what [`super::otlp`] encodes):
//! ids, name, kind, times, attributes, events, status.

use super::context::{SpanId, TraceId};

/// A span's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work within sluice.
    Internal = 1,
    /// A request sluice served.
    Server = 2,
    /// A request sluice sent.
    Client = 3,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(Box<str>),
    /// A static string.
    Static(&'static str),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.into())
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// One attribute.
pub type Attribute = (&'static str, Value);

/// Something that happened at an instant of a span.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix time in nanoseconds.
    pub time: u64,
    /// What happened.
    pub name: &'static str,
    /// Its details.
    pub attributes: Vec<Attribute>,
}

/// How a span ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Status {
    /// Nothing said (a success, or a failure the span does not own, like a 4xx).
    #[default]
    Unset,
    /// Failed, with why.
    Error(Box<str>),
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Its trace.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Its parent's id (none for a trace's root).
    pub parent: Option<SpanId>,
    /// The W3C `tracestate` it carried, if any.
    pub trace_state: Option<Box<str>>,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
    /// Its parent is another process's span (the client's, from its `traceparent`).
    pub remote_parent: bool,
    /// Its name.
    pub name: Box<str>,
    /// Its kind.
    pub kind: Kind,
    /// Start, Unix time in nanoseconds.
    pub start: u64,
    /// End, Unix time in nanoseconds.
    pub end: u64,
    /// Attributes.
    pub attributes: Vec<Attribute>,
    /// Events.
    pub events: Vec<Event>,
    /// How it ended.
    pub status: Status,
}
