//! Byte-level edits of a JSON object body: replace a top-level value, or add a field.
//!
//! Rewriting a request by splicing costs one copy of the body; building a JSON tree and
//! serialising it again costs a parse, an allocation per node and a re-encode.

use bytes::Bytes;
use std::ops::Range;

/// One edit: replace `span` of the original with `with` (an empty span inserts).
#[derive(Debug, Clone)]
pub struct Edit {
    /// The bytes of the original body that are replaced.
    pub span: Range<usize>,
    /// What stands there instead.
    pub with: Vec<u8>,
}

/// Where a new field goes in a JSON object body: just before its closing brace.
///
/// Returns `None` when the body does not end with `}` (after trailing whitespace).
pub fn object_end(body: &[u8]) -> Option<usize> {
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    (body[end] == b'}').then_some(end)
}

/// `body` with the `model` value at `span` (currently `current`) replaced by `upstream`;
/// the same `Bytes` when they are equal.
pub fn replace_model(
    body: &Bytes,
    span: &std::ops::Range<usize>,
    current: &str,
    upstream: &str,
) -> Bytes {
    if upstream == current {
        return body.clone();
    }
    let edit = Edit {
        span: span.clone(),
        with: serde_json::to_vec(upstream).unwrap_or_default(),
    };
    apply(body, vec![edit])
}

/// Where a request body's `model` and `stream_options` sit, and what the client asked of
/// its stream: enough to write the upstream's body by splicing (chat and legacy completions
/// share it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModelAndUsage<'a> {
    /// The `model` the client sent.
    pub model: &'a str,
    /// Where its value sits.
    pub model_span: &'a Range<usize>,
    /// `"stream": true`.
    pub stream: bool,
    /// The client asked for the usage chunk.
    pub include_usage: bool,
    /// Where `stream_options` sits, and its raw value.
    pub stream_options: Option<&'a (Range<usize>, &'a str)>,
}

impl ModelAndUsage<'_> {
    /// `body` with `model` replaced by `upstream_model` when it differs and, for a stream,
    /// `stream_options.include_usage` set when `force_usage` asks for it (other
    /// `stream_options` kept). Without changes it is the same buffer.
    pub fn apply(&self, body: &Bytes, upstream_model: &str, force_usage: bool) -> Bytes {
        let mut edits = Vec::new();
        if upstream_model != self.model {
            edits.push(Edit {
                span: self.model_span.clone(),
                with: serde_json::to_vec(upstream_model).unwrap_or_default(),
            });
        }
        if self.stream && force_usage && !self.include_usage {
            match self.stream_options {
                Some((span, raw)) => {
                    let mut map: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(raw).unwrap_or_default();
                    map.insert("include_usage".into(), serde_json::Value::Bool(true));
                    edits.push(Edit {
                        span: span.clone(),
                        with: serde_json::to_vec(&map).unwrap_or_default(),
                    });
                }
                None => {
                    if let Some(end) = object_end(body) {
                        edits.push(Edit {
                            span: end..end,
                            with: br#","stream_options":{"include_usage":true}"#.to_vec(),
                        });
                    }
                }
            }
        }
        apply(body, edits)
    }
}

/// Applies `edits` (any order, non-overlapping) to `body`. No edits: the same `Bytes`, no copy.
pub fn apply(body: &Bytes, mut edits: Vec<Edit>) -> Bytes {
    if edits.is_empty() {
        return body.clone();
    }
    edits.sort_by_key(|e| e.span.start);
    let extra: usize = edits.iter().map(|e| e.with.len()).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let mut at = 0;
    for e in &edits {
        let start = e.span.start.clamp(at, body.len());
        out.extend_from_slice(&body[at..start]);
        out.extend_from_slice(&e.with);
        at = e.span.end.clamp(start, body.len());
    }
    out.extend_from_slice(&body[at..]);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_inserts() {
        let body = Bytes::from_static(br#"{"model":"a","x":1} "#);
        let end = object_end(&body).unwrap();
        let out = apply(
            &body,
            vec![
                Edit {
                    span: end..end,
                    with: br#","y":2"#.to_vec(),
                },
                Edit {
                    span: 9..12,
                    with: br#""bbb""#.to_vec(),
                },
            ],
        );
        assert_eq!(&out[..], br#"{"model":"bbb","x":1,"y":2} "#);
    }

    #[test]
    fn no_edits_is_same_buffer() {
        let body = Bytes::from_static(b"{}");
        assert_eq!(apply(&body, Vec::new()).as_ptr(), body.as_ptr());
        assert_eq!(object_end(b"[1]"), None);
    }
}
