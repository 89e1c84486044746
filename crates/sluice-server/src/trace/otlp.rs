//! The OTLP trace export request (`ExportTraceServiceRequest` of opentelemetry-proto's
//! `collector/trace/v1/trace_service.proto`) in protobuf's wire format, written by hand:
//! the few messages a span needs (resource, scope, span, event, status, key-value, any
//! value), their field numbers as the proto files define them.

use super::span::{Attribute, Event, Span, Status, Value};

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Who sends the spans: the resource's attributes and the instrumentation scope.
pub struct Source<'a> {
    /// The resource's attributes (`service.name`, ...).
    pub resource: &'a [Attribute],
    /// The instrumentation scope's name.
    pub scope: &'a str,
    /// Its version.
    pub version: &'a str,
}

/// `ExportTraceServiceRequest { resource_spans: [ { resource, scope_spans: [ { scope,
/// spans } ] } ] }`, appended to `buf`.
pub fn encode<'s>(
    buf: &mut Vec<u8>,
    source: &Source<'_>,
    spans: impl IntoIterator<Item = &'s Span>,
) {
    // ExportTraceServiceRequest.resource_spans = 1 (a batch: KiBs to MiBs; a span: hundreds
    // of bytes; the rest: under 128 bytes)
    nested(buf, 1, 3, |b| {
        // ResourceSpans.resource = 1 { Resource.attributes = 1 }
        nested(b, 1, 1, |b| {
            for a in source.resource {
                nested(b, 1, 1, |b| key_value(b, a));
            }
        });
        // ResourceSpans.scope_spans = 2
        nested(b, 2, 3, |b| {
            // ScopeSpans.scope = 1 { name = 1, version = 2 }
            nested(b, 1, 1, |b| {
                string(b, 1, source.scope);
                string(b, 2, source.version);
            });
            // ScopeSpans.spans = 2
            for s in spans {
                nested(b, 2, 2, |b| span(b, s));
            }
        });
    });
}

/// `Span`.
fn span(b: &mut Vec<u8>, s: &Span) {
    bytes(b, 1, &s.trace_id.0);
    bytes(b, 2, &s.span_id.0);
    if let Some(state) = &s.trace_state {
        string(b, 3, state);
    }
    if let Some(parent) = &s.parent {
        bytes(b, 4, &parent.0);
    }
    string(b, 5, &s.name);
    tag(b, 6, VARINT);
    varint(b, s.kind as u64);
    tag(b, 7, FIXED64);
    b.extend_from_slice(&s.start.to_le_bytes());
    tag(b, 8, FIXED64);
    b.extend_from_slice(&s.end.to_le_bytes());
    for a in &s.attributes {
        nested(b, 9, 1, |b| key_value(b, a));
    }
    for e in &s.events {
        nested(b, 11, 1, |b| event(b, e));
    }
    if let Status::Error(message) = &s.status {
        // Status { message = 2, code = 3 (STATUS_CODE_ERROR = 2) }
        nested(b, 15, 1, |b| {
            string(b, 2, message);
            tag(b, 3, VARINT);
            varint(b, 2);
        });
    }
    // flags = 16 (fixed32): the W3C trace flags in the low byte, bit 8 (whether the parent
    // is known to be remote or not) and bit 9 (it is: the client's span).
    let remote = if s.remote_parent { 0x300 } else { 0x100 };
    tag(b, 16, FIXED32);
    b.extend_from_slice(&(u32::from(s.flags) | remote).to_le_bytes());
}

/// `Span.Event`.
fn event(b: &mut Vec<u8>, e: &Event) {
    tag(b, 1, FIXED64);
    b.extend_from_slice(&e.time.to_le_bytes());
    string(b, 2, e.name);
    for a in &e.attributes {
        nested(b, 3, 1, |b| key_value(b, a));
    }
}

/// `KeyValue { key = 1, value = 2: AnyValue }`.
fn key_value(b: &mut Vec<u8>, (key, value): &Attribute) {
    string(b, 1, key);
    nested(b, 2, 1, |b| match value {
        Value::Str(s) => string(b, 1, s),
        Value::Static(s) => string(b, 1, s),
        Value::Bool(v) => {
            tag(b, 2, VARINT);
            varint(b, u64::from(*v));
        }
        Value::Int(v) => {
            tag(b, 3, VARINT);
            // int64: two's complement as a 64-bit varint.
            varint(b, *v as u64);
        }
        Value::Float(v) => {
            tag(b, 4, FIXED64);
            b.extend_from_slice(&v.to_le_bytes());
        }
    });
}

fn tag(b: &mut Vec<u8>, field: u32, wire: u32) {
    varint(b, u64::from(field << 3 | wire));
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn bytes(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    tag(b, field, LEN);
    varint(b, v.len() as u64);
    b.extend_from_slice(v);
}

fn string(b: &mut Vec<u8>, field: u32, v: &str) {
    bytes(b, field, v.as_bytes());
}

/// A length-delimited field whose content `f` writes, the varint of its length expected to
/// take `guess` bytes (1: under 128 bytes, 2: under 16 KiB, 3: under 2 MiB). That much room
/// is kept before the content, which is moved only when its length needs another size (the
/// varint stays minimal either way).
fn nested(b: &mut Vec<u8>, field: u32, guess: usize, f: impl FnOnce(&mut Vec<u8>)) {
    tag(b, field, LEN);
    let at = b.len();
    b.resize(at + guess, 0);
    f(b);
    let end = b.len();
    let len = end - at - guess;
    let n = varint_len(len as u64);
    if n > guess {
        b.resize(end + n - guess, 0);
        b.copy_within(at + guess..end, at + n);
    } else if n < guess {
        b.copy_within(at + guess..end, at + n);
        b.truncate(end - (guess - n));
    }
    // The varint written in place, over the room kept for it.
    let mut v = len as u64;
    for byte in &mut b[at..at + n] {
        *byte = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// How many bytes `v` takes as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
