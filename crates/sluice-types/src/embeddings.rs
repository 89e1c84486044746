//! `POST /v1/embeddings`: the light request view.

use crate::chat::{expect_object, model_field};
use crate::splice;
use crate::{json_error, InvalidRequest};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

/// What sluice knows about an embeddings request.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest<'a> {
    /// The model the client named.
    pub model: Cow<'a, str>,
    model_span: Range<usize>,
    /// Bytes of `input`: the basis of token estimates.
    pub input_bytes: usize,
}

impl<'a> EmbeddingsRequest<'a> {
    /// Parses and validates an embeddings request body.
    pub fn parse(body: &'a [u8]) -> Result<Self, InvalidRequest> {
        expect_object(body)?;
        let wire: Wire<'a> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
        let (model, model_span) = model_field(body, wire.model)?;
        let input = wire.input.ok_or_else(|| {
            InvalidRequest::param(
                "input",
                "`input` is required: a string, an array of strings, or an array of token arrays",
            )
        })?;
        let raw = input.get();
        let ok = match raw.as_bytes().first() {
            Some(b'"') => true,
            Some(b'[') => {
                let inner = &raw[1..raw.len() - 1];
                !inner.trim().is_empty()
            }
            _ => false,
        };
        if !ok {
            return Err(InvalidRequest::param(
                "input",
                "`input` must be a string or a non-empty array of strings or token arrays",
            ));
        }
        Ok(Self {
            model,
            model_span,
            input_bytes: raw.len(),
        })
    }

    /// The body to send upstream, with `model` replaced when it differs.
    pub fn upstream_body(&self, body: &Bytes, upstream_model: &str) -> Bytes {
        splice::replace_model(body, &self.model_span, &self.model, upstream_model)
    }

    /// Input tokens estimated from the size of `input`.
    pub fn estimated_tokens(&self) -> u64 {
        (self.input_bytes as u64).div_ceil(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_input() {
        let ok =
            EmbeddingsRequest::parse(br#"{"model":"e","input":["a","b"],"dimensions":8}"#).unwrap();
        assert_eq!(ok.model, "e");
        for (body, want) in [
            (&br#"{"model":"e"}"#[..], "`input` is required"),
            (br#"{"model":"e","input":[]}"#, "non-empty"),
            (br#"{"model":"e","input":5}"#, "`input` must be"),
            (br#"{"input":"x"}"#, "model"),
        ] {
            let e = EmbeddingsRequest::parse(body).unwrap_err();
            assert!(e.message.contains(want), "{}", e.message);
        }
    }

    #[test]
    fn rewrites_model() {
        let body = Bytes::from_static(br#"{"model":"e","input":"x"}"#);
        let r = EmbeddingsRequest::parse(&body).unwrap();
        assert_eq!(
            &r.upstream_body(&body, "text-embedding-3-small")[..],
            br#"{"model":"text-embedding-3-small","input":"x"}"#
        );
    }
}
