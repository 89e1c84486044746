//! The encoder's output read back by a small protobuf reader written for the test.

use super::*;
use crate::trace::context::{SpanId, TraceId};
use crate::trace::span::Kind;

/// A field read back: its number and its value.
#[derive(Debug, Clone)]
enum Field {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(Vec<u8>),
}

fn read_varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Every field of one message, in order; panics on anything malformed.
fn fields(b: &[u8]) -> Vec<(u32, Field)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let key = read_varint(b, &mut at);
        let (number, wire) = ((key >> 3) as u32, (key & 7) as u32);
        let field = match wire {
            VARINT => Field::Varint(read_varint(b, &mut at)),
            FIXED64 => {
                let v = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
                at += 8;
                Field::Fixed64(v)
            }
            FIXED32 => {
                let v = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                at += 4;
                Field::Fixed32(v)
            }
            LEN => {
                let len = read_varint(b, &mut at) as usize;
                let v = b[at..at + len].to_vec();
                at += len;
                Field::Bytes(v)
            }
            other => panic!("wire type {other}"),
        };
        out.push((number, field));
    }
    assert_eq!(at, b.len());
    out
}

fn all(b: &[u8], number: u32) -> Vec<Field> {
    fields(b)
        .into_iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, f)| f)
        .collect()
}

fn one(b: &[u8], number: u32) -> Field {
    let mut found = all(b, number);
    assert_eq!(found.len(), 1, "field {number} of {b:?}");
    found.remove(0)
}

fn msg(f: Field) -> Vec<u8> {
    match f {
        Field::Bytes(b) => b,
        other => panic!("not a message: {other:?}"),
    }
}

fn text(f: Field) -> String {
    String::from_utf8(msg(f)).unwrap()
}

/// A `KeyValue` read back as its key and `AnyValue`'s one field.
fn attribute(b: &[u8]) -> (String, (u32, Field)) {
    let key = text(one(b, 1));
    let value = fields(&msg(one(b, 2))).remove(0);
    (key, value)
}

fn sample(long_name: bool) -> Span {
    Span {
        trace_id: TraceId([7; 16]),
        span_id: SpanId([9; 8]),
        parent: Some(SpanId([3; 8])),
        trace_state: Some("a=b".into()),
        flags: 1,
        remote_parent: true,
        name: if long_name {
            "x".repeat(300).into()
        } else {
            "chat m".into()
        },
        kind: Kind::Server,
        start: 1_700_000_000_000_000_000,
        end: 1_700_000_000_500_000_000,
        attributes: vec![
            ("gen_ai.operation.name", Value::Static("chat")),
            ("gen_ai.usage.input_tokens", Value::Int(12)),
            ("neg", Value::Int(-5)),
            ("sluice.cost_usd", Value::Float(0.25)),
            ("sluice.degraded", Value::Bool(true)),
            ("long", Value::Str("y".repeat(20_000).into())),
        ],
        events: vec![Event {
            time: 1_700_000_000_100_000_000,
            name: "sluice.cache",
            attributes: vec![("sluice.cache.status", Value::Static("miss"))],
        }],
        status: Status::Error("upstream 503".into()),
    }
}

#[test]
fn decodes_back() {
    for long_name in [false, true] {
        let span_in = sample(long_name);
        let mut buf = Vec::new();
        let source = Source {
            resource: &[("service.name", Value::Static("sluice"))],
            scope: "sluice",
            version: "0.1.0",
        };
        encode(&mut buf, &source, [&span_in, &span_in]);
        let resource_spans = msg(one(&buf, 1));
        let resource = msg(one(&resource_spans, 1));
        let (k, (n, v)) = attribute(&msg(one(&resource, 1)));
        assert_eq!(
            (k.as_str(), n, text(v).as_str()),
            ("service.name", 1, "sluice")
        );
        let scope_spans = msg(one(&resource_spans, 2));
        let scope = msg(one(&scope_spans, 1));
        assert_eq!(text(one(&scope, 1)), "sluice");
        assert_eq!(text(one(&scope, 2)), "0.1.0");
        let spans = all(&scope_spans, 2);
        assert_eq!(spans.len(), 2);
        let s = msg(spans[0].clone());
        assert_eq!(msg(one(&s, 1)), vec![7; 16]);
        assert_eq!(msg(one(&s, 2)), vec![9; 8]);
        assert_eq!(text(one(&s, 3)), "a=b");
        assert_eq!(msg(one(&s, 4)), vec![3; 8]);
        assert_eq!(text(one(&s, 5)), &*span_in.name);
        assert!(matches!(one(&s, 6), Field::Varint(2)));
        assert!(matches!(
            one(&s, 7),
            Field::Fixed64(1_700_000_000_000_000_000)
        ));
        assert!(matches!(
            one(&s, 8),
            Field::Fixed64(1_700_000_000_500_000_000)
        ));
        assert!(matches!(one(&s, 16), Field::Fixed32(0x301)));
        let attrs: Vec<_> = all(&s, 9).into_iter().map(|f| attribute(&msg(f))).collect();
        assert_eq!(attrs.len(), 6);
        assert_eq!(attrs[0].0, "gen_ai.operation.name");
        assert_eq!(text(attrs[0].1 .1.clone()), "chat");
        assert!(matches!(attrs[1].1, (3, Field::Varint(12))));
        assert!(matches!(attrs[2].1, (3, Field::Varint(v)) if v as i64 == -5));
        assert!(matches!(attrs[3].1, (4, Field::Fixed64(v)) if f64::from_bits(v) == 0.25));
        assert!(matches!(attrs[4].1, (2, Field::Varint(1))));
        assert_eq!(text(attrs[5].1 .1.clone()).len(), 20_000);
        let event = msg(one(&s, 11));
        assert!(matches!(
            one(&event, 1),
            Field::Fixed64(1_700_000_000_100_000_000)
        ));
        assert_eq!(text(one(&event, 2)), "sluice.cache");
        assert_eq!(attribute(&msg(one(&event, 3))).0, "sluice.cache.status");
        let status = msg(one(&s, 15));
        assert_eq!(text(one(&status, 2)), "upstream 503");
        assert!(matches!(one(&status, 3), Field::Varint(2)));
    }
}

#[test]
fn a_root_span_without_state_or_status() {
    let span_in = Span {
        parent: None,
        trace_state: None,
        remote_parent: false,
        status: Status::Unset,
        ..sample(false)
    };
    let mut buf = Vec::new();
    let source = Source {
        resource: &[],
        scope: "s",
        version: "v",
    };
    encode(&mut buf, &source, [&span_in]);
    let scope_spans = msg(one(&msg(one(&buf, 1)), 2));
    let s = msg(one(&scope_spans, 2));
    assert!(all(&s, 3).is_empty());
    assert!(all(&s, 4).is_empty());
    assert!(all(&s, 15).is_empty());
    assert!(matches!(one(&s, 16), Field::Fixed32(0x101)));
}

/// Whatever room was guessed for a length, its varint comes out minimal, the content after it.
#[test]
fn nested_lengths_are_minimal_whatever_the_guess() {
    for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
        let content: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut minimal = Vec::new();
        varint(&mut minimal, len as u64);
        assert_eq!(varint_len(len as u64), minimal.len(), "{len}");
        for guess in 1..=3 {
            let mut b = vec![0xaa];
            nested(&mut b, 5, guess, |b| b.extend_from_slice(&content));
            let mut want = vec![0xaa, 5 << 3 | 2];
            want.extend_from_slice(&minimal);
            want.extend_from_slice(&content);
            assert!(b == want, "len {len}, guess {guess}");
        }
    }
}
