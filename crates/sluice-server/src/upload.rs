//! Multipart uploads in (`/v1/audio/transcriptions`, `/v1/audio/translations`,
//! `/v1/images/edits`, `/v1/images/variations`): read as they arrive, text fields kept,
//! file parts spooled to `server.upload_dir` a frame at a time, so an upload of any size
//! costs a frame of memory; the spool is what a fallback sends again. Refused with 413
//! before reading when `Content-Length` is over `server.max_upload_bytes`, and as soon as
//! the body passes it otherwise; a cut or malformed upload leaves no spool behind.

use crate::multipart_body::malformed;
use crate::request_body::ClientBody;
use sluice_core::config::ServerConfig;
use sluice_core::{Error, ErrorKind, Operation};
use sluice_providers::{SpooledFile, Upload};
use sluice_types::multipart::{self, Event, Multipart};
use tokio::io::AsyncWriteExt;

/// Most parts in one upload.
const MAX_PARTS: usize = 64;
/// Most bytes of all text fields together.
const MAX_FIELD_BYTES: usize = 256 * 1024;

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Error {
    ErrorKind::InvalidRequest {
        message: message.into(),
        param,
    }
    .into()
}

/// The file fields each upload endpoint takes, and the one it requires.
fn file_fields(op: Operation) -> (&'static [&'static str], &'static str) {
    match op {
        Operation::ImageEdit => (&["image", "image[]", "mask"], "image"),
        Operation::ImageVariation => (&["image"], "image"),
        _ => (&["file"], "file"),
    }
}

/// Reads the upload of `op`: its fields, its files spooled.
pub async fn receive<B: ClientBody>(
    server: &ServerConfig,
    op: Operation,
    parts: &http::request::Parts,
    body: B,
) -> Result<Upload, Error> {
    let (mut frames, boundary) = crate::multipart_body::open(server, parts, body)?;
    let mut reader = Reader {
        multipart: Multipart::new(&boundary, MAX_PARTS),
        upload: Upload::default(),
        current: None,
        field_bytes: 0,
        files: file_fields(op).0,
        dir: &server.upload_dir,
        op,
    };
    while let Some(data) = frames.next().await? {
        reader.multipart.push(&data);
        reader.drain().await?;
    }
    reader.multipart.finish().map_err(malformed)?;
    reader.finish(op)
}

/// The part being read.
enum Current {
    /// A text field, gathered.
    Field(String, Vec<u8>),
    /// A file part, spooled.
    File(SpooledFile, tokio::fs::File),
}

struct Reader<'a> {
    multipart: Multipart,
    upload: Upload,
    current: Option<Current>,
    field_bytes: usize,
    files: &'static [&'static str],
    dir: &'a std::path::Path,
    op: Operation,
}

impl Reader<'_> {
    /// Takes every event the reader has so far.
    async fn drain(&mut self) -> Result<(), Error> {
        while let Some(event) = self.multipart.next_event().map_err(malformed)? {
            match event {
                Event::Part(head) => self.begin(head).await?,
                Event::Data(d) => self.data(&d).await?,
                Event::PartEnd => self.end().await?,
                Event::End => {}
            }
        }
        Ok(())
    }

    async fn begin(&mut self, head: multipart::PartHead) -> Result<(), Error> {
        let is_file = self.files.contains(&head.name.as_str());
        self.current = Some(match (is_file, head.filename) {
            (false, Some(_)) => {
                return Err(invalid(
                    format!(
                        "unexpected file part `{}`; this endpoint takes files in {}",
                        head.name,
                        self.files.join(", ")
                    ),
                    None,
                ))
            }
            (false, None) => Current::Field(head.name, Vec::new()),
            (true, filename) => {
                let filename = filename.unwrap_or_else(|| head.name.clone());
                check_type(self.op, &filename, head.content_type.as_deref())?;
                let path = self.dir.join(format!(
                    "sluice-upload-{:016x}{:016x}",
                    sluice_core::rng::next_u64(),
                    sluice_core::rng::next_u64()
                ));
                let file = tokio::fs::File::create(&path).await.map_err(|e| {
                    Error::from(ErrorKind::Internal {
                        message: format!(
                            "could not spool the upload in `server.upload_dir` ({}): {e}",
                            self.dir.display()
                        ),
                    })
                })?;
                let spooled = SpooledFile {
                    field: head.name,
                    filename,
                    content_type: head.content_type,
                    path,
                    len: 0,
                };
                Current::File(spooled, file)
            }
        });
        Ok(())
    }

    async fn data(&mut self, d: &[u8]) -> Result<(), Error> {
        match &mut self.current {
            Some(Current::Field(_, value)) => {
                self.field_bytes += d.len();
                if self.field_bytes > MAX_FIELD_BYTES {
                    return Err(invalid(
                        format!("the upload's text fields are longer than {MAX_FIELD_BYTES} bytes"),
                        None,
                    ));
                }
                value.extend_from_slice(d);
            }
            Some(Current::File(spooled, file)) => {
                file.write_all(d).await.map_err(spool_error)?;
                spooled.len += d.len() as u64;
            }
            None => {}
        }
        Ok(())
    }

    async fn end(&mut self) -> Result<(), Error> {
        match self.current.take() {
            Some(Current::Field(name, value)) => {
                let value = String::from_utf8(value)
                    .map_err(|_| invalid(format!("the field `{name}` is not UTF-8 text"), None))?;
                if name == "model" {
                    self.upload.model = value;
                } else {
                    self.upload.fields.push((name, value));
                }
            }
            Some(Current::File(spooled, mut file)) => {
                file.flush().await.map_err(spool_error)?;
                self.upload.files.push(spooled);
            }
            None => {}
        }
        Ok(())
    }

    /// The upload, checked: a model and the endpoint's required file.
    fn finish(self, op: Operation) -> Result<Upload, Error> {
        let upload = self.upload;
        if upload.model.is_empty() {
            return Err(invalid(
                "you must provide a model parameter (the `model` field)",
                Some("model"),
            ));
        }
        let required = file_fields(op).1;
        if !upload
            .files
            .iter()
            .any(|f| f.field.trim_end_matches("[]") == required)
        {
            return Err(invalid(
                format!("the upload has no `{required}` file part"),
                Some(required),
            ));
        }
        if upload.files.iter().any(|f| f.len == 0) {
            return Err(invalid("an uploaded file is empty", Some(required)));
        }
        Ok(upload)
    }
}

/// The file types the upstreams take: OpenAI's lists, by extension or content type.
fn check_type(op: Operation, filename: &str, content_type: Option<&str>) -> Result<(), Error> {
    const AUDIO: &[&str] = &[
        "flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm",
    ];
    const IMAGE: &[&str] = &["png", "jpg", "jpeg", "webp"];
    let (kinds, family) = match op {
        Operation::Transcription | Operation::Translation => (AUDIO, "audio/"),
        _ => (IMAGE, "image/"),
    };
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    let by_name = ext.as_deref().is_some_and(|e| kinds.contains(&e));
    let by_type = content_type.is_some_and(|t| {
        t.get(..family.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(family))
    });
    if by_name || (ext.is_none() && by_type) {
        return Ok(());
    }
    Err(invalid(
        format!(
            "unsupported file type of `{filename}`: expected one of {}",
            kinds.join(", ")
        ),
        Some(file_fields(op).1),
    ))
}

fn spool_error(e: std::io::Error) -> Error {
    ErrorKind::Internal {
        message: format!("could not spool the upload: {e}"),
    }
    .into()
}
