//! A client's `multipart/form-data` body read under the upload limits, for every endpoint
//! that takes one (`/v1/files`, audio and image uploads): 413 before reading when
//! `Content-Length` is over `server.max_upload_bytes` and as soon as the body passes it
//! otherwise, 408 past `server.upload_read_timeout_ms`, a 400 for a body without a
//! multipart boundary or that breaks off. The frames go to the caller's multipart reader.

use crate::request_body::ClientBody;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use sluice_core::config::ServerConfig;
use sluice_core::{Error, ErrorKind};
use sluice_types::multipart::{self, MultipartError};
use std::time::Duration;
use tokio::time::Instant;

/// A multipart error as the 400 the client gets.
pub fn malformed(e: MultipartError) -> Error {
    ErrorKind::InvalidRequest {
        message: e.0,
        param: None,
    }
    .into()
}

fn too_large(limit: u64) -> Error {
    ErrorKind::PayloadTooLarge {
        limit,
        setting: "server.max_upload_bytes",
    }
    .into()
}

/// The body's frames, under the limits.
pub struct Frames<B> {
    body: B,
    limit: u64,
    received: u64,
    timeout: Duration,
    deadline: Instant,
}

/// Opens the upload in `parts`: its frames and its boundary.
pub fn open<B: ClientBody>(
    server: &ServerConfig,
    parts: &http::request::Parts,
    body: B,
) -> Result<(Frames<B>, String), Error> {
    let limit = server.max_upload_bytes;
    let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header(CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large(limit));
    }
    let boundary =
        multipart::boundary(header(CONTENT_TYPE).unwrap_or_default()).map_err(malformed)?;
    let frames = Frames {
        body,
        limit,
        received: 0,
        timeout: server.upload_read_timeout,
        deadline: Instant::now() + server.upload_read_timeout,
    };
    Ok((frames, boundary))
}

impl<B: ClientBody> Frames<B> {
    /// The next bytes of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let frame = match tokio::time::timeout_at(self.deadline, self.body.frame()).await {
                Err(_) => {
                    let limit_ms = self.timeout.as_millis() as u64;
                    return Err(ErrorKind::ClientTimeout { limit_ms }.into());
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(ErrorKind::InvalidRequest {
                        message: format!("could not read the upload: {e}"),
                        param: None,
                    }
                    .into())
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.received += data.len() as u64;
            if self.received > self.limit {
                return Err(too_large(self.limit));
            }
            return Ok(Some(data));
        }
    }
}
