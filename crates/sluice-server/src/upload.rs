//! Multipart uploads in (`/v1/audio/transcriptions`, `/v1/audio/translations`,
//! `/v1/images/edits`, `/v1/images/variations`): read as they arrive, text fields kept,
//! file parts spooled to `server.upload_dir` a frame at a time, so an upload of any size
//! costs a frame of memory; the spool is what a fallback sends again. Refused with 413
//! before reading when `Content-Length` is over `server.max_upload_bytes`, and as soon as
//! the body passes it otherwise; a cut or malformed upload leaves no spool behind.
//!
//! An upload whose `model` field comes before its first (required) file is handed on
//! early: at the file's first bytes, [`receive`] returns what came so far with the rest of
//! the body still to read ([`Rest`]), so the first try upstream starts while the client
//! sends; the parts after that go to the upload's [`Feed`], which the tries' bodies follow.

use crate::multipart_body::{malformed, Frames};
use crate::request_body::ClientBody;
use sluice_core::config::ServerConfig;
use sluice_core::{Error, ErrorKind, Operation};
use sluice_providers::{Feed, SpooledFile, Upload};
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

/// An upload read: whole, or handed on at its first file's first bytes with the rest of
/// the body still to read.
pub enum Received<'a, B> {
    /// Read to its end and checked.
    Whole(Upload),
    /// Still arriving: the upload so far (its `live` part following the spool) and the
    /// rest of the body, which must be read alongside the tries.
    Early(Upload, Box<Rest<'a, B>>),
}

/// The rest of an upload handed on early.
pub struct Rest<'a, B> {
    frames: Frames<B>,
    reader: Reader<'a>,
}

impl<B: ClientBody> Rest<'_, B> {
    /// Reads the rest of the upload into its spool. Its end (whole, or the error) is the
    /// end of every body following it.
    pub async fn finish(mut self: Box<Self>) -> Result<(), Error> {
        let result = self.read().await;
        if let Some(feed) = self.reader.feed.take() {
            match &result {
                Ok(()) => feed.whole(),
                Err(e) => feed.fail(e.message()),
            }
        }
        result
    }

    async fn read(&mut self) -> Result<(), Error> {
        while let Some(data) = self.frames.next().await? {
            self.reader.multipart.push(&data);
            self.reader.drain().await?;
        }
        self.reader.multipart.finish().map_err(malformed)
    }
}

/// Reads the upload of `op`: its fields, its files spooled; handed on early once its
/// model is known and its first file's bytes begin.
pub async fn receive<'a, B: ClientBody>(
    server: &'a ServerConfig,
    op: Operation,
    parts: &http::request::Parts,
    body: B,
) -> Result<Received<'a, B>, Error> {
    let (mut frames, boundary) = crate::multipart_body::open(server, parts, body)?;
    let mut reader = Reader {
        multipart: Multipart::new(&boundary, MAX_PARTS),
        upload: Upload::default(),
        current: None,
        field_bytes: 0,
        files: file_fields(op).0,
        dir: &server.upload_dir,
        op,
        feed: None,
    };
    while let Some(data) = frames.next().await? {
        reader.multipart.push(&data);
        reader.drain().await?;
        if reader.feed.is_some() {
            let upload = std::mem::take(&mut reader.upload);
            return Ok(Received::Early(upload, Box::new(Rest { frames, reader })));
        }
    }
    reader.multipart.finish().map_err(malformed)?;
    reader.finish(op).map(Received::Whole)
}

/// The part being read.
enum Current {
    /// A text field, gathered.
    Field(String, Vec<u8>),
    /// A file part, spooled.
    File(SpooledFile, tokio::fs::File),
    /// A file part of an upload handed on early, spooled: its length is the feed's.
    Fed(tokio::fs::File),
}

struct Reader<'a> {
    multipart: Multipart,
    upload: Upload,
    current: Option<Current>,
    field_bytes: usize,
    files: &'static [&'static str],
    dir: &'a std::path::Path,
    op: Operation,
    /// Where the parts go once the upload has been handed on early.
    feed: Option<Feed>,
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
                match &self.feed {
                    Some(feed) => {
                        feed.begin_file(spooled);
                        Current::Fed(file)
                    }
                    None => Current::File(spooled, file),
                }
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
            Some(Current::Fed(file)) => {
                // Flushed before the feed counts it, so a body following the spool
                // reads only bytes that are in it.
                file.write_all(d).await.map_err(spool_error)?;
                file.flush().await.map_err(spool_error)?;
                if let Some(feed) = &self.feed {
                    feed.grew(d.len() as u64);
                }
            }
            None => {}
        }
        self.hand_on().await
    }

    /// Hands the upload on early when it can be: its model known, its first file the
    /// endpoint's required one and begun. From here on its parts go to the feed.
    async fn hand_on(&mut self) -> Result<(), Error> {
        let required = file_fields(self.op).1;
        let ready = self.feed.is_none()
            && !self.upload.model.is_empty()
            && self.upload.files.is_empty()
            && matches!(&self.current, Some(Current::File(f, _))
                if f.len > 0 && f.field.trim_end_matches("[]") == required);
        if !ready {
            return Ok(());
        }
        let Some(Current::File(spooled, mut file)) = self.current.take() else {
            return Ok(());
        };
        file.flush().await.map_err(spool_error)?;
        let (feed, growing) = Feed::start(self.upload.fields.clone(), spooled);
        self.upload.live = Some(growing);
        self.feed = Some(feed);
        self.current = Some(Current::Fed(file));
        Ok(())
    }

    async fn end(&mut self) -> Result<(), Error> {
        match self.current.take() {
            Some(Current::Field(name, value)) => {
                let value = String::from_utf8(value)
                    .map_err(|_| invalid(format!("the field `{name}` is not UTF-8 text"), None))?;
                match (&self.feed, name == "model") {
                    // Handed on, the model is the one the tries were routed by.
                    (Some(_), true) => {}
                    (Some(feed), false) => feed.field(name, value),
                    (None, true) => self.upload.model = value,
                    (None, false) => self.upload.fields.push((name, value)),
                }
            }
            Some(Current::File(spooled, mut file)) => {
                file.flush().await.map_err(spool_error)?;
                self.upload.files.push(spooled);
            }
            Some(Current::Fed(mut file)) => {
                file.flush().await.map_err(spool_error)?;
                let len = self.feed.as_ref().map_or(0, Feed::end_file);
                if len == 0 {
                    return Err(invalid(
                        "an uploaded file is empty",
                        Some(file_fields(self.op).1),
                    ));
                }
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
