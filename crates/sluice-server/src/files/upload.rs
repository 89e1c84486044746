//! `POST /v1/files`: a `multipart/form-data` body with a `file` part and a `purpose` field
//! (and optionally `expires_after[anchor]` = `created_at` with `expires_after[seconds]`;
//! `batch` files expire after 30 days without it, as OpenAI's do),
//! read as it arrives: the file part's slices go straight into the store's [`Upload`], so
//! an upload costs a frame of memory whatever its size. Refused with 413 before reading when
//! `Content-Length` is over `server.max_upload_bytes`, and as soon as the body passes it
//! otherwise. Whatever fails (a bad body, a missing part, an unsupported type, a cut
//! connection) drops the upload, which leaves nothing behind.

use crate::multipart_body::malformed;
use crate::request_body::ClientBody;
use sluice_core::config::ServerConfig;
use sluice_core::{Error, ErrorKind};
use sluice_store::files::{FileObject, FileStore, NewFile, Owner, Purpose, Upload};
use sluice_types::multipart::{Event, Multipart, PartHead};

use super::wire::{self, store_error};

/// Most parts in one body.
const MAX_PARTS: usize = 16;

/// Longest text field.
const MAX_FIELD_BYTES: usize = 1024;

/// How long a `batch` file lives without `expires_after`: 30 days, as OpenAI's.
const BATCH_EXPIRY_SECONDS: u64 = 30 * 24 * 3600;

/// `expires_after[seconds]`'s bounds (an hour to 30 days, as OpenAI's).
const EXPIRY_SECONDS: std::ops::RangeInclusive<u64> = 3600..=2_592_000;

fn invalid(message: impl Into<String>, param: &'static str) -> Error {
    ErrorKind::InvalidRequest {
        message: message.into(),
        param: Some(param),
    }
    .into()
}

/// Reads the upload and stores the file for `owner`.
pub async fn receive<B: ClientBody>(
    server: &ServerConfig,
    store: &FileStore,
    owner: Owner,
    parts: &http::request::Parts,
    body: B,
) -> Result<FileObject, Error> {
    let (mut frames, boundary) = crate::multipart_body::open(server, parts, body)?;
    let mut form = Form {
        multipart: Multipart::new(&boundary, MAX_PARTS),
        store,
        current: None,
        file: None,
        purpose: None,
        anchor: None,
        seconds: None,
    };
    while let Some(data) = frames.next().await? {
        form.multipart.push(&data);
        form.drain().await?;
    }
    form.multipart.finish().map_err(malformed)?;
    form.finish(owner).await
}

/// The part being read.
enum Current {
    /// A text field, gathered.
    Field(String, Vec<u8>),
    /// The file, going to the store.
    File,
    /// A part skipped (a field this endpoint does not take).
    Skipped,
}

/// The form as read so far.
struct Form<'a> {
    multipart: Multipart,
    store: &'a FileStore,
    current: Option<Current>,
    /// The file: its name and its upload (complete once its part ended).
    file: Option<(String, Upload)>,
    purpose: Option<Purpose>,
    anchor: Option<String>,
    seconds: Option<String>,
}

// === impl Form ===

impl Form<'_> {
    /// Takes every event the reader has so far.
    async fn drain(&mut self) -> Result<(), Error> {
        while let Some(event) = self.multipart.next_event().map_err(malformed)? {
            match event {
                Event::Part(head) => self.begin(head).await?,
                Event::Data(d) => self.data(&d).await?,
                Event::PartEnd => self.end()?,
                Event::End => {}
            }
        }
        Ok(())
    }

    async fn begin(&mut self, head: PartHead) -> Result<(), Error> {
        let current = match (head.name.as_str(), head.filename) {
            ("file", Some(filename)) => {
                if self.file.is_some() {
                    return Err(invalid("the upload has more than one `file` part", "file"));
                }
                if let Some(purpose) = self.purpose {
                    check_type(purpose, &filename)?;
                }
                let upload = self.store.upload().await.map_err(|e| store_error(&e))?;
                self.file = Some((filename, upload));
                Current::File
            }
            ("file", None) => {
                return Err(invalid(
                    "the `file` part must be a file (with a filename), not a text field",
                    "file",
                ))
            }
            (name, Some(_)) => {
                return Err(invalid(
                    format!("unexpected file part `{name}`: the file goes in the `file` part"),
                    "file",
                ))
            }
            (name @ ("purpose" | "expires_after[anchor]" | "expires_after[seconds]"), None) => {
                Current::Field(name.to_string(), Vec::new())
            }
            (_, None) => Current::Skipped,
        };
        self.current = Some(current);
        Ok(())
    }

    async fn data(&mut self, d: &[u8]) -> Result<(), Error> {
        match (&mut self.current, &mut self.file) {
            (Some(Current::Field(name, value)), _) => {
                if value.len() + d.len() > MAX_FIELD_BYTES {
                    let message =
                        format!("the field `{name}` is longer than {MAX_FIELD_BYTES} bytes");
                    return Err(invalid(message, "purpose"));
                }
                value.extend_from_slice(d);
            }
            (Some(Current::File), Some((_, upload))) => {
                upload.write(d).await.map_err(|e| store_error(&e))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), Error> {
        let Some(Current::Field(name, value)) = self.current.take() else {
            return Ok(());
        };
        let value = String::from_utf8(value)
            .map_err(|_| invalid(format!("the field `{name}` is not UTF-8 text"), "purpose"))?;
        match name.as_str() {
            "purpose" => {
                let purpose = wire::purpose(value.trim())?;
                if !purpose.uploadable() {
                    return Err(invalid(
                        format!("files of purpose `{purpose}` are written by sluice, not uploaded"),
                        "purpose",
                    ));
                }
                if let Some((filename, _)) = &self.file {
                    check_type(purpose, filename)?;
                }
                self.purpose = Some(purpose);
            }
            "expires_after[anchor]" => self.anchor = Some(value),
            _ => self.seconds = Some(value),
        }
        Ok(())
    }

    /// Stores the file, once the form has everything it needs.
    async fn finish(self, owner: Owner) -> Result<FileObject, Error> {
        let Some(purpose) = self.purpose else {
            return Err(invalid("the upload has no `purpose` field", "purpose"));
        };
        let Some((filename, upload)) = self.file else {
            return Err(invalid("the upload has no `file` part", "file"));
        };
        if upload.bytes() == 0 {
            return Err(invalid("the uploaded file is empty", "file"));
        }
        let expires_after = expiry(self.anchor.as_deref(), self.seconds.as_deref())?;
        let new = NewFile {
            owner,
            purpose,
            filename,
            // As OpenAI's: batch input files expire after 30 days unless told otherwise.
            expires_after: expires_after
                .or((purpose == Purpose::Batch).then_some(BATCH_EXPIRY_SECONDS)),
        };
        upload.finish(new).await.map_err(|e| store_error(&e))
    }
}

/// Refuses a file whose name's extension its purpose does not take.
fn check_type(purpose: Purpose, filename: &str) -> Result<(), Error> {
    if purpose.accepts(filename) {
        return Ok(());
    }
    Err(invalid(
        format!(
            "unsupported file type of `{filename}` for purpose `{purpose}`: expected one of {}",
            purpose.extensions().join(", ")
        ),
        "file",
    ))
}

/// `expires_after`: the anchor (`created_at`, the only one) and seconds from it, read as
/// those seconds.
fn expiry(anchor: Option<&str>, seconds: Option<&str>) -> Result<Option<u64>, Error> {
    let param = "expires_after";
    match (anchor.map(str::trim), seconds.map(str::trim)) {
        (None, None) => Ok(None),
        (Some("created_at"), Some(s)) => match s.parse::<u64>() {
            Ok(n) if EXPIRY_SECONDS.contains(&n) => Ok(Some(n)),
            _ => Err(invalid(
                format!(
                    "expires_after[seconds] must be an integer from 3600 to 2592000, not `{s}`"
                ),
                param,
            )),
        },
        (Some("created_at"), None) => Err(invalid("expires_after[seconds] is missing", param)),
        (Some(a), _) => Err(invalid(
            format!("expires_after[anchor] must be `created_at`, not `{a}`"),
            param,
        )),
        (None, Some(_)) => Err(invalid("expires_after[anchor] is missing", param)),
    }
}
