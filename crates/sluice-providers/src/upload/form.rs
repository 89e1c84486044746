//! The `multipart/form-data` bodies sluice sends upstream: spooled files, part heads, and
//! a form whose files are whole on disk, sent with its length, each file read a chunk at a
//! time as the connection takes it.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from a spooled file per frame.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Reads at most `want` bytes of a spool file. A spool file never ends before the length that was
/// recorded for it, so an end of file is an error that says `what` was short.
pub(crate) fn read_chunk(
    file: &mut tokio::fs::File,
    cx: &mut Context<'_>,
    want: usize,
    what: &'static str,
) -> Poll<std::io::Result<Bytes>> {
    let mut buf = BytesMut::zeroed(want);
    let mut read = ReadBuf::new(&mut buf);
    ready!(Pin::new(file).poll_read(cx, &mut read))?;
    let n = read.filled().len();
    if n == 0 {
        return Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            what,
        )));
    }
    buf.truncate(n);
    Poll::Ready(Ok(buf.freeze()))
}

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

/// One part of a form to send, borrowed.
pub(crate) enum PartRef<'a> {
    /// A text field: its name and value.
    Field(&'a str, &'a str),
    /// A spooled file, whole.
    File(&'a SpooledFile),
}

/// A new boundary for a form sluice sends.
pub(crate) fn new_boundary() -> String {
    format!(
        "sluice-{:016x}{:016x}",
        sluice_core::rng::next_u64(),
        sluice_core::rng::next_u64()
    )
}

/// A form of `parts` (with a `model` field first when given), its files whole on disk:
/// its content type and a body of known length (sent as `Content-Length`).
pub(crate) fn fixed_form<'a>(
    model: Option<&str>,
    parts: impl Iterator<Item = PartRef<'a>>,
) -> std::io::Result<(String, FixedBody)> {
    let boundary = new_boundary();
    let mut pieces = VecDeque::new();
    let mut head = Vec::with_capacity(512);
    if let Some(model) = model {
        text_part(&mut head, &boundary, "model", model);
    }
    let mut len = 0u64;
    for part in parts {
        match part {
            PartRef::Field(name, value) => text_part(&mut head, &boundary, name, value),
            PartRef::File(f) => {
                part_head(&mut head, &boundary, &f.field, Some(f));
                len += head.len() as u64 + f.len;
                pieces.push_back(Piece::Bytes(Bytes::from(std::mem::take(&mut head))));
                let file = std::fs::File::open(&f.path)?;
                pieces.push_back(Piece::File(tokio::fs::File::from_std(file), f.len));
                head.extend_from_slice(b"\r\n");
            }
        }
    }
    head.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    len += head.len() as u64;
    pieces.push_back(Piece::Bytes(Bytes::from(head)));
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let body = FixedBody {
        pieces,
        remaining: len,
    };
    Ok((content_type, body))
}

/// Form field names and file names are quoted; quotes and line breaks are escaped as the
/// HTML standard's form encoding does.
fn escaped(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

pub(crate) fn part_head(out: &mut Vec<u8>, boundary: &str, name: &str, file: Option<&SpooledFile>) {
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

pub(crate) fn text_part(out: &mut Vec<u8>, boundary: &str, name: &str, value: &str) {
    part_head(out, boundary, name, None);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(crate) enum Piece {
    Bytes(Bytes),
    /// An open spooled file and the bytes left to read of it.
    File(tokio::fs::File, u64),
}

/// A form whose files are whole on disk: its length known.
pub(crate) struct FixedBody {
    pieces: VecDeque<Piece>,
    remaining: u64,
}

impl Body for FixedBody {
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
                    let chunk = ready!(read_chunk(
                        file,
                        cx,
                        want,
                        "a spooled upload is shorter than when it was received"
                    ))?;
                    *left -= chunk.len() as u64;
                    if *left > 0 {
                        this.remaining -= chunk.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    chunk
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
