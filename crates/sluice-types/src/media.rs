//! The light views of the JSON media endpoints: `/v1/audio/speech`,
//! `/v1/images/generations`, `/v1/rerank` and `/v1/moderations`. Each reads what routing,
//! limits and billing act on (the model, whether it streams, the units it is billed by) and
//! checks the fields an upstream would refuse anyway, so bad input gets a 400 from sluice
//! before any upstream is called. The rest of the body passes through untouched.

use crate::chat::{expect_object, model_field};
use crate::splice;
use crate::{json_error, InvalidRequest};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// Which media endpoint a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `/v1/audio/speech`.
    Speech,
    /// `/v1/images/generations`.
    ImageGeneration,
    /// `/v1/rerank`.
    Rerank,
    /// `/v1/moderations`.
    Moderation,
}

/// What a media request is billed by, besides tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaUnits {
    /// Characters of text to speak.
    pub characters: u64,
    /// Images asked for (`n`).
    pub images: u64,
    /// Their `size`, as `(width, height)`.
    pub image_size: Option<(u16, u16)>,
    /// Their `quality`, lowercase.
    pub image_quality: Option<String>,
    /// Documents to rank.
    pub documents: u64,
}

/// What sluice knows about a media request.
#[derive(Debug, Clone)]
pub struct MediaRequest<'a> {
    /// The endpoint.
    pub kind: MediaKind,
    /// The model the client named.
    pub model: Cow<'a, str>,
    model_span: Range<usize>,
    /// A stream was asked for (`stream: true`, or speech's `stream_format: "sse"`).
    pub stream: bool,
    /// Billing units known from the request.
    pub units: MediaUnits,
    /// Bytes of the text the model reads: the basis of token estimates.
    pub text_bytes: usize,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    // Speech.
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    voice: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_format: Option<&'a RawValue>,
    // Images.
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(borrow, default)]
    size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    quality: Option<&'a RawValue>,
    // Rerank.
    #[serde(borrow, default)]
    query: Option<&'a RawValue>,
    #[serde(borrow, default)]
    documents: Option<&'a RawValue>,
    #[serde(default)]
    top_n: Option<u64>,
}

/// A rerank document: a string, or an object with `text`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Document<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Object {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
}

impl<'a> MediaRequest<'a> {
    /// Parses and checks a body of `kind`.
    pub fn parse(kind: MediaKind, body: &'a [u8]) -> Result<Self, InvalidRequest> {
        expect_object(body)?;
        let wire: Wire<'a> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
        let (model, model_span) = model_field(body, wire.model)?;
        let mut r = Self {
            kind,
            model,
            model_span,
            stream: wire.stream.unwrap_or(false),
            units: MediaUnits::default(),
            text_bytes: 0,
        };
        match kind {
            MediaKind::Speech => r.speech(&wire)?,
            MediaKind::ImageGeneration => r.image(&wire)?,
            MediaKind::Rerank => r.rerank(&wire)?,
            MediaKind::Moderation => r.moderation(&wire)?,
        }
        Ok(r)
    }

    fn speech(&mut self, w: &Wire<'_>) -> Result<(), InvalidRequest> {
        let input = required_string(w.input, "input")?;
        if input.is_empty() {
            return Err(InvalidRequest::param("input", "`input` must not be empty"));
        }
        required_string(w.voice, "voice").or_else(|e| match w.voice {
            // Newer voices may be objects (`{"id": ...}`): passed through.
            Some(v) if v.get().starts_with('{') => Ok(Cow::Borrowed("")),
            _ => Err(e),
        })?;
        if let Some(f) = w.stream_format {
            let f = string_field(f, "stream_format")?;
            match &*f {
                "sse" => self.stream = true,
                "audio" => {}
                other => {
                    return Err(InvalidRequest::param(
                        "stream_format",
                        format!("`stream_format` must be `sse` or `audio`, not `{other}`"),
                    ))
                }
            }
        }
        self.units.characters = input.chars().count() as u64;
        self.text_bytes = input.len();
        Ok(())
    }

    fn image(&mut self, w: &Wire<'_>) -> Result<(), InvalidRequest> {
        let prompt = required_string(w.prompt, "prompt")?;
        if prompt.is_empty() {
            return Err(InvalidRequest::param(
                "prompt",
                "`prompt` must not be empty",
            ));
        }
        let n = w.n.unwrap_or(1);
        if !(1..=10).contains(&n) {
            return Err(InvalidRequest::param("n", "`n` must be between 1 and 10"));
        }
        self.units.images = n;
        self.units.image_size = match w.size.map(|s| string_field(s, "size")).transpose()? {
            None => None,
            Some(s) if s == "auto" => None,
            Some(s) => Some(image_size(&s).ok_or_else(|| {
                InvalidRequest::param(
                    "size",
                    format!(
                        "`size` must be `WIDTHxHEIGHT` (such as `1024x1024`) or `auto`, not `{s}`"
                    ),
                )
            })?),
        };
        self.units.image_quality = w
            .quality
            .map(|q| string_field(q, "quality"))
            .transpose()?
            .map(|q| q.to_ascii_lowercase());
        self.text_bytes = prompt.len();
        Ok(())
    }

    fn rerank(&mut self, w: &Wire<'_>) -> Result<(), InvalidRequest> {
        let query = required_string(w.query, "query")?;
        if query.trim().is_empty() {
            return Err(InvalidRequest::param("query", "`query` must not be empty"));
        }
        let not_array = || {
            InvalidRequest::param(
                "documents",
                "`documents` is required: an array of strings or of objects with `text`",
            )
        };
        let docs: Vec<&RawValue> = w
            .documents
            .and_then(|d| serde_json::from_str(d.get()).ok())
            .ok_or_else(not_array)?;
        if docs.is_empty() {
            return Err(InvalidRequest::param(
                "documents",
                "`documents` must not be empty",
            ));
        }
        let mut bytes = query.len() * docs.len();
        for (i, d) in docs.iter().enumerate() {
            let doc: Document<'_> = serde_json::from_str(d.get()).map_err(|_| {
                InvalidRequest::param(
                    "documents",
                    format!("`documents[{i}]` must be a string or an object with a string `text`"),
                )
            })?;
            bytes += match doc {
                Document::Text(t) | Document::Object { text: t } => t.len(),
            };
        }
        if w.top_n == Some(0) {
            return Err(InvalidRequest::param("top_n", "`top_n` must be at least 1"));
        }
        self.units.documents = docs.len() as u64;
        self.text_bytes = bytes;
        Ok(())
    }

    fn moderation(&mut self, w: &Wire<'_>) -> Result<(), InvalidRequest> {
        let input = w.input.ok_or_else(|| {
            InvalidRequest::param(
                "input",
                "`input` is required: a string, an array of strings, or an array of text and image parts",
            )
        })?;
        let raw = input.get();
        if !matches!(raw.as_bytes().first(), Some(b'"' | b'[')) {
            return Err(InvalidRequest::param(
                "input",
                "`input` must be a string or an array",
            ));
        }
        self.text_bytes = raw.len();
        Ok(())
    }

    /// The body to send upstream, with `model` replaced when it differs.
    pub fn upstream_body(&self, body: &Bytes, upstream_model: &str) -> Bytes {
        splice::replace_model(body, &self.model_span, &self.model, upstream_model)
    }

    /// Input tokens estimated from the size of the text read.
    pub fn estimated_tokens(&self) -> u64 {
        (self.text_bytes as u64).div_ceil(4)
    }
}

/// `1024x1024` as `(1024, 1024)`.
pub fn image_size(s: &str) -> Option<(u16, u16)> {
    let (w, h) = s.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

fn string_field<'a>(
    raw: &'a RawValue,
    param: &'static str,
) -> Result<Cow<'a, str>, InvalidRequest> {
    serde_json::from_str(raw.get())
        .map_err(|_| InvalidRequest::param(param, format!("`{param}` must be a string")))
}

fn required_string<'a>(
    raw: Option<&'a RawValue>,
    param: &'static str,
) -> Result<Cow<'a, str>, InvalidRequest> {
    let raw = raw.ok_or_else(|| InvalidRequest::param(param, format!("`{param}` is required")))?;
    string_field(raw, param)
}

#[cfg(test)]
mod tests;
