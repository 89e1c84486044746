//! Multipart uploads to the upstream (audio to transcribe, images to edit): the client's
//! upload, spooled by the server (its text fields in memory, its files on disk), sent as a
//! new `multipart/form-data` body whose file parts stream from disk, so an upload is never
//! held whole in memory and a fallback can send it again.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from a spooled file per frame.
const READ_CHUNK: usize = 64 * 1024;

/// A file part of an upload, spooled to disk. The spool is removed when it is dropped (a
/// body still streaming it keeps its own open handle).
#[derive(Debug)]
pub struct SpooledFile {
    /// The form field (`file`, `image`, `image[]`, `mask`).
    pub field: String,
    /// The client's file name.
    pub filename: String,
    /// The part's content type, if the client sent one.
    pub content_type: Option<String>,
    /// Where it is spooled.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A client's multipart upload, read and spooled.
#[derive(Debug, Default)]
pub struct Upload {
    /// The `model` field.
    pub model: String,
    /// The other text fields, in order.
    pub fields: Vec<(String, String)>,
    /// The file parts, in order.
    pub files: Vec<SpooledFile>,
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
    /// (the Files API has none): its content type and the body.
    pub fn form(&self, model: Option<&str>) -> std::io::Result<(String, UploadBody)> {
        let boundary = format!(
            "sluice-{:016x}{:016x}",
            sluice_core::rng::next_u64(),
            sluice_core::rng::next_u64()
        );
        let mut pieces = VecDeque::new();
        let mut head = Vec::with_capacity(512);
        if let Some(model) = model {
            text_part(&mut head, &boundary, "model", model);
        }
        for (name, value) in &self.fields {
            text_part(&mut head, &boundary, name, value);
        }
        let mut len = 0u64;
        for f in &self.files {
            part_head(&mut head, &boundary, &f.field, Some(f));
            len += head.len() as u64 + f.len;
            pieces.push_back(Piece::Bytes(Bytes::from(std::mem::take(&mut head))));
            let file = std::fs::File::open(&f.path)?;
            pieces.push_back(Piece::File(tokio::fs::File::from_std(file), f.len));
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        len += head.len() as u64;
        pieces.push_back(Piece::Bytes(Bytes::from(head)));
        let content_type = format!("multipart/form-data; boundary={boundary}");
        Ok((
            content_type,
            UploadBody {
                pieces,
                remaining: len,
            },
        ))
    }
}

/// Form field names and file names are quoted; quotes and line breaks are escaped as the
/// HTML standard's form encoding does.
fn escaped(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn part_head(out: &mut Vec<u8>, boundary: &str, name: &str, file: Option<&SpooledFile>) {
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    out.extend_from_slice(
        format!("Content-Disposition: form-data; name=\"{}\"", escaped(name)).as_bytes(),
    );
    if let Some(f) = file {
        out.extend_from_slice(format!("; filename=\"{}\"", escaped(&f.filename)).as_bytes());
        let ct = f
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        out.extend_from_slice(format!("\r\nContent-Type: {ct}").as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

fn text_part(out: &mut Vec<u8>, boundary: &str, name: &str, value: &str) {
    part_head(out, boundary, name, None);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

enum Piece {
    Bytes(Bytes),
    /// An open spooled file and the bytes left to read of it.
    File(tokio::fs::File, u64),
}

/// The body of an upload to the upstream: its length known (sent as `Content-Length`), its
/// files read from disk a chunk at a time as the connection takes them.
pub struct UploadBody {
    pieces: VecDeque<Piece>,
    remaining: u64,
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadBody")
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(front) = this.pieces.front_mut() else {
                return Poll::Ready(None);
            };
            let data = match front {
                Piece::Bytes(b) => std::mem::take(b),
                Piece::File(_, 0) => Bytes::new(),
                Piece::File(file, left) => {
                    let want = READ_CHUNK.min(usize::try_from(*left).unwrap_or(READ_CHUNK));
                    let mut buf = BytesMut::zeroed(want);
                    let mut read = ReadBuf::new(&mut buf);
                    ready!(Pin::new(file).poll_read(cx, &mut read))?;
                    let n = read.filled().len();
                    if n == 0 {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "a spooled upload is shorter than when it was received",
                        ))));
                    }
                    *left -= n as u64;
                    buf.truncate(n);
                    if *left > 0 {
                        this.remaining -= n as u64;
                        return Poll::Ready(Some(Ok(Frame::data(buf.freeze()))));
                    }
                    buf.freeze()
                }
            };
            this.pieces.pop_front();
            if !data.is_empty() {
                this.remaining -= data.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests;
