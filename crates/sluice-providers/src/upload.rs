//! Multipart uploads to the upstream (audio to transcribe, images to edit): the client's
//! upload, spooled by the server (its text fields in memory, its files on disk), sent as a
//! new `multipart/form-data` body whose file parts stream from disk, so an upload is never
//! held whole in memory and a fallback can send it again.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

mod form;
mod growing;

pub use form::SpooledFile;
use form::{fixed_form, FixedBody, PartRef};
pub use growing::{Feed, Growing};

/// A client's multipart upload, read and spooled; or, while it is still arriving, what
/// came before its first file and the spool that grows.
#[derive(Debug, Default)]
pub struct Upload {
    /// The `model` field.
    pub model: String,
    /// The other text fields, in order (of an upload still arriving, those before its
    /// first file).
    pub fields: Vec<(String, String)>,
    /// The file parts, in order (none while the upload is still arriving: they are in
    /// `live`).
    pub files: Vec<SpooledFile>,
    /// The upload as it arrives, when it was handed on before its end.
    pub live: Option<std::sync::Arc<Growing>>,
}

impl Upload {
    /// A text field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What an image edit or variation is billed by: `n` (default 1), `size` and `quality`
    /// as the form gives them (a size that is not `WIDTHxHEIGHT`, `auto` included, is none).
    pub fn image_units(&self) -> sluice_types::MediaUnits {
        sluice_types::MediaUnits {
            images: self
                .field("n")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(1),
            image_size: self.field("size").and_then(sluice_types::media::image_size),
            image_quality: self.field("quality").map(str::to_ascii_lowercase),
            ..sluice_types::MediaUnits::default()
        }
    }

    /// Where its first file is spooled, once the upload has arrived whole (`None` while
    /// it is still arriving, or without a file).
    pub fn first_file(&self) -> Option<std::path::PathBuf> {
        match &self.live {
            Some(growing) => growing.first_file(),
            None => self.files.first().map(|f| f.path.clone()),
        }
    }

    /// Whether the client asked for a stream (`stream=true`).
    pub fn stream(&self) -> bool {
        self.field("stream")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The upload as a multipart body for the upstream, naming `model`: its content type
    /// and the body. Fails only if a spooled file cannot be opened.
    pub fn body(&self, model: &str) -> std::io::Result<(String, UploadBody)> {
        self.form(Some(model))
    }

    /// The upload as a multipart body, with a `model` field first when `model` is given
    /// (the Files API has none): its content type and the body. An upload still arriving
    /// gives a body that follows its spool (see [`growing`]).
    pub fn form(&self, model: Option<&str>) -> std::io::Result<(String, UploadBody)> {
        if let Some(live) = &self.live {
            let (content_type, made) = live.body(model)?;
            let kind = match made {
                growing::Made::Fixed(b) => Kind::Fixed(b),
                growing::Made::Following(b) => Kind::Following(b),
            };
            return Ok((content_type, UploadBody(kind)));
        }
        let parts = self
            .fields
            .iter()
            .map(|(name, value)| PartRef::Field(name, value))
            .chain(self.files.iter().map(PartRef::File));
        let (content_type, body) = fixed_form(model, parts)?;
        Ok((content_type, UploadBody(Kind::Fixed(body))))
    }
}

/// The body of an upload to the upstream, its files read from disk a chunk at a time as
/// the connection takes them: of known length (sent as `Content-Length`) when the upload
/// had arrived whole, else chunked, following the spool as it grows.
pub struct UploadBody(Kind);

enum Kind {
    Fixed(FixedBody),
    Following(growing::Following),
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadBody")
            .field("size", &self.size_hint())
            .finish()
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Fixed(b) => Pin::new(b).poll_frame(cx),
            Kind::Following(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Fixed(b) => b.is_end_stream(),
            Kind::Following(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Fixed(b) => b.size_hint(),
            Kind::Following(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
