//! A streaming reader of `multipart/form-data` bodies (RFC 7578 over RFC 2046's framing).
//!
//! Uploads (audio to transcribe, images to edit, files for batches) are read as they
//! arrive and never held whole: the caller feeds the body's frames in with
//! [`Multipart::push`] and takes [`Event`]s out with [`Multipart::next_event`]: a part's
//! headers, slices of its body (the buffer's own bytes, no copy), its end, and the end of
//! the body. The reader holds back only as many bytes as could be the start of a
//! boundary, so its memory is one frame plus the boundary, whatever the part's size.
//!
//! No I/O here: the server streams the slices to disk or upstream.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

/// Longest part header block read (all header lines of one part).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// Why a body is not readable as `multipart/form-data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartError(pub String);

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MultipartError {}

fn error(message: impl Into<String>) -> MultipartError {
    MultipartError(message.into())
}

/// The boundary named by a `Content-Type: multipart/form-data; boundary=...` header.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(error(format!(
            "the body must be multipart/form-data (Content-Type is `{mime}`)"
        )));
    }
    let found = params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| unquote(value.trim()))
    });
    match found {
        Some(b) if !b.is_empty() && b.len() <= MAX_BOUNDARY => Ok(b),
        Some(_) => Err(error("the multipart boundary must be 1 to 70 characters")),
        None => Err(error("the Content-Type names no multipart boundary")),
    }
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => value.to_string(),
    }
}

/// The headers of one part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartHead {
    /// The form field's name (`Content-Disposition: form-data; name="..."`).
    pub name: String,
    /// The file name, for a file part.
    pub filename: Option<String>,
    /// The part's `Content-Type`, if sent.
    pub content_type: Option<String>,
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part begins.
    Part(PartHead),
    /// Bytes of the current part's body.
    Data(Bytes),
    /// The current part ended.
    PartEnd,
    /// The closing boundary: the body is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first boundary (a preamble is skipped).
    Preamble,
    /// Just after a boundary: `--` ends the body, a line break starts a part.
    AfterBoundary,
    /// Reading a part's headers.
    Headers,
    /// Reading a part's body.
    Body,
    /// The closing boundary was read; the epilogue is ignored.
    Done,
}

/// The incremental reader of one body.
#[derive(Debug)]
pub struct Multipart {
    /// `\r\n--BOUNDARY`: every delimiter but the first (which the reader treats alike by
    /// starting its buffer with a line break).
    delimiter: Vec<u8>,
    buf: BytesMut,
    stage: Stage,
    parts: usize,
    max_parts: usize,
}

impl Multipart {
    /// A reader of a body framed by `boundary`, accepting at most `max_parts` parts.
    pub fn new(boundary: &str, max_parts: usize) -> Self {
        let mut delimiter = Vec::with_capacity(boundary.len() + 4);
        delimiter.extend_from_slice(b"\r\n--");
        delimiter.extend_from_slice(boundary.as_bytes());
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.extend_from_slice(b"\r\n");
        Self {
            delimiter,
            buf,
            stage: Stage::Preamble,
            parts: 0,
            max_parts,
        }
    }

    /// Adds the next bytes of the body.
    pub fn push(&mut self, data: &[u8]) {
        if self.stage != Stage::Done {
            self.buf.extend_from_slice(data);
        }
    }

    /// Whether the closing boundary has been read.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// The next event from what was pushed so far; `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, MultipartError> {
        loop {
            match self.stage {
                Stage::Done => return Ok(None),
                Stage::Preamble => match memmem::find(&self.buf, &self.delimiter) {
                    Some(at) => {
                        self.buf.advance(at + self.delimiter.len());
                        self.stage = Stage::AfterBoundary;
                    }
                    None => {
                        if self.buf.len() > MAX_HEADER_BYTES + self.delimiter.len() {
                            return Err(error("no multipart boundary at the start of the body"));
                        }
                        return Ok(None);
                    }
                },
                Stage::AfterBoundary => return self.after_boundary(),
                Stage::Headers => return self.headers(),
                Stage::Body => return Ok(self.body()),
            }
        }
    }

    /// Checks that the body ended where it may: after its closing boundary.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.stage {
            Stage::Done => Ok(()),
            _ => Err(error(
                "the multipart body ended before its closing boundary",
            )),
        }
    }

    fn after_boundary(&mut self) -> Result<Option<Event>, MultipartError> {
        // Transport padding (spaces and tabs) may follow a boundary.
        let pad = self
            .buf
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let rest = &self.buf[pad..];
        if rest.len() < 2 {
            return Ok(None);
        }
        if rest.starts_with(b"--") {
            self.stage = Stage::Done;
            self.buf.clear();
            return Ok(Some(Event::End));
        }
        if !rest.starts_with(b"\r\n") {
            return Err(error(
                "a multipart boundary is not followed by a line break",
            ));
        }
        self.parts += 1;
        if self.parts > self.max_parts {
            return Err(error(format!(
                "the multipart body has more than {} parts",
                self.max_parts
            )));
        }
        self.buf.advance(pad + 2);
        self.stage = Stage::Headers;
        self.headers()
    }

    fn headers(&mut self) -> Result<Option<Event>, MultipartError> {
        // A part without headers has no name: refused.
        if self.buf.starts_with(b"\r\n") {
            return Err(error("a multipart part has no Content-Disposition header"));
        }
        let Some(end) = memmem::find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > MAX_HEADER_BYTES {
                return Err(error(format!(
                    "a multipart part's headers are longer than {MAX_HEADER_BYTES} bytes"
                )));
            }
            return Ok(None);
        };
        if end > MAX_HEADER_BYTES {
            return Err(error(format!(
                "a multipart part's headers are longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        let block = self.buf.split_to(end + 4);
        let text = std::str::from_utf8(&block[..end])
            .map_err(|_| error("a multipart part's headers are not UTF-8"))?;
        let head = part_head(text)?;
        self.stage = Stage::Body;
        Ok(Some(Event::Part(head)))
    }

    fn body(&mut self) -> Option<Event> {
        if let Some(at) = memmem::find(&self.buf, &self.delimiter) {
            if at > 0 {
                return Some(Event::Data(self.buf.split_to(at).freeze()));
            }
            self.buf.advance(self.delimiter.len());
            self.stage = Stage::AfterBoundary;
            return Some(Event::PartEnd);
        }
        // Everything but a tail that could begin a delimiter is the part's.
        let keep = self.delimiter.len() - 1;
        let safe = self.buf.len().saturating_sub(keep);
        let safe = match memchr::memchr(b'\r', &self.buf[safe..]) {
            Some(cr) => safe + cr,
            None => self.buf.len(),
        };
        (safe > 0).then(|| Event::Data(self.buf.split_to(safe).freeze()))
    }
}

/// Reads a part's header block.
fn part_head(block: &str) -> Result<PartHead, MultipartError> {
    let mut head = PartHead::default();
    let mut disposition = false;
    for line in block.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            return Err(error(format!(
                "a multipart header line is malformed: `{line}`"
            )));
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            disposition = true;
            disposition_params(value, &mut head)?;
        } else if name.trim().eq_ignore_ascii_case("content-type") {
            head.content_type = Some(value.to_string());
        }
    }
    if !disposition {
        return Err(error("a multipart part has no Content-Disposition header"));
    }
    if head.name.is_empty() {
        return Err(error(
            "a multipart part's Content-Disposition names no field",
        ));
    }
    Ok(head)
}

/// `form-data; name="field"; filename="a.wav"` (and RFC 5987's `filename*=UTF-8''...`).
fn disposition_params(value: &str, head: &mut PartHead) -> Result<(), MultipartError> {
    let mut params = split_params(value).into_iter();
    let kind = params.next().unwrap_or_default();
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(error(format!(
            "a multipart part's Content-Disposition is `{}`, not form-data",
            kind.trim()
        )));
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("name") {
            head.name = unquote(v);
        } else if k.eq_ignore_ascii_case("filename") {
            head.filename.get_or_insert_with(|| unquote(v));
        } else if k.eq_ignore_ascii_case("filename*") {
            if let Some(name) = extended_value(v) {
                head.filename = Some(name);
            }
        }
    }
    Ok(())
}

/// Splits header parameters on `;` outside quoted strings.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// RFC 5987: `UTF-8''percent%20encoded`.
fn extended_value(v: &str) -> Option<String> {
    let (charset, rest) = v.split_once('\'')?;
    let (_, encoded) = rest.split_once('\'')?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
