//! The requests of OpenAI's Files and Batch APIs, for batches forwarded to an `openai`
//! provider with `batch = "native"`: the input uploaded (`POST {base_url}/files`, purpose
//! `batch`, streamed from a spooled file), the batch made (`POST {base_url}/batches`),
//! polled (`GET {base_url}/batches/{id}`), cancelled (`POST {base_url}/batches/{id}/cancel`),
//! found again by listing (`GET {base_url}/batches`), its files read
//! (`GET {base_url}/files/{id}/content`) and removed (`DELETE {base_url}/files/{id}`).
//! Only the requests are built here; the server sends them on the provider's pool.

use crate::client::UpstreamBody;
use crate::outbound::{invalid, static_headers};
use crate::upload::{SpooledFile, Upload};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Uri};
use sluice_core::config::ProviderConfig;
use sluice_core::{Error, ErrorKind};

/// The Files and Batch APIs of one provider.
#[derive(Debug)]
pub struct BatchApi {
    base_url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Whether `id` (an upstream's file or batch id) may stand in a URL path as it is.
fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn bad_id(id: &str) -> Error {
    ErrorKind::Internal {
        message: format!("the upstream's id `{id}` cannot stand in a URL"),
    }
    .into()
}

impl BatchApi {
    /// The APIs at `config`'s `base_url`, with its key and headers.
    pub fn new(config: &ProviderConfig) -> Result<Self, Error> {
        let auth = config
            .api_key
            .as_ref()
            .map(|k| (AUTHORIZATION, format!("Bearer {}", k.expose())));
        format!("{}/batches", config.base_url)
            .parse::<Uri>()
            .map_err(|_| invalid(config, "`base_url` does not form a valid URI"))?;
        Ok(Self {
            base_url: config.base_url.clone(),
            headers: static_headers(config, auth)?,
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: UpstreamBody,
    ) -> Result<Request<UpstreamBody>, Error> {
        let uri: Uri = format!("{}{path}", self.base_url).parse().map_err(|_| {
            Error::from(ErrorKind::Internal {
                message: format!("`{}{path}` is not a valid URI", self.base_url),
            })
        })?;
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        Ok(req)
    }

    fn empty(&self, method: Method, path: &str) -> Result<Request<UpstreamBody>, Error> {
        self.request(method, path, UpstreamBody::new(Bytes::new()))
    }

    /// `POST /files`: `file` (a spooled JSONL file, removed when the request is dropped)
    /// uploaded with purpose `batch`.
    pub fn upload(&self, file: SpooledFile) -> Result<Request<UpstreamBody>, Error> {
        let upload = Upload {
            model: String::new(),
            fields: vec![("purpose".into(), "batch".into())],
            files: vec![file],
            live: None,
        };
        let (content_type, body) = upload.form(None).map_err(|e| {
            Error::from(ErrorKind::Internal {
                message: format!("cannot read the batch's spooled input: {e}"),
            })
        })?;
        // The body holds its own open handle: the spool's name goes with `upload`, its
        // bytes stay readable until the body is dropped.
        let mut req = self.request(Method::POST, "/files", UpstreamBody::Upload(body))?;
        let ct = HeaderValue::from_str(&content_type).map_err(|_| -> Error {
            ErrorKind::Internal {
                message: "a multipart content type is not a header value".into(),
            }
            .into()
        })?;
        req.headers_mut().insert(CONTENT_TYPE, ct);
        drop(upload);
        Ok(req)
    }

    /// `POST /batches` with `body` (`input_file_id`, `endpoint`, `completion_window`,
    /// `metadata`).
    pub fn create(&self, body: Bytes) -> Result<Request<UpstreamBody>, Error> {
        self.request(Method::POST, "/batches", UpstreamBody::new(body))
    }

    /// `GET /batches/{id}`.
    pub fn retrieve(&self, id: &str) -> Result<Request<UpstreamBody>, Error> {
        if !safe_id(id) {
            return Err(bad_id(id));
        }
        self.empty(Method::GET, &format!("/batches/{id}"))
    }

    /// `GET /batches?limit=100`: the newest batches (to find one whose create's answer was
    /// lost).
    pub fn list(&self) -> Result<Request<UpstreamBody>, Error> {
        self.empty(Method::GET, "/batches?limit=100")
    }

    /// `POST /batches/{id}/cancel`.
    pub fn cancel(&self, id: &str) -> Result<Request<UpstreamBody>, Error> {
        if !safe_id(id) {
            return Err(bad_id(id));
        }
        self.empty(Method::POST, &format!("/batches/{id}/cancel"))
    }

    /// `GET /files/{id}/content`.
    pub fn content(&self, id: &str) -> Result<Request<UpstreamBody>, Error> {
        if !safe_id(id) {
            return Err(bad_id(id));
        }
        self.empty(Method::GET, &format!("/files/{id}/content"))
    }

    /// `DELETE /files/{id}`.
    pub fn delete_file(&self, id: &str) -> Result<Request<UpstreamBody>, Error> {
        if !safe_id(id) {
            return Err(bad_id(id));
        }
        self.empty(Method::DELETE, &format!("/files/{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_cannot_stand_in_a_path_are_refused() {
        assert!(safe_id("batch_abc-1"));
        assert!(!safe_id("../x"));
        assert!(!safe_id("a?b"));
        assert!(!safe_id(""));
    }
}
