//! The upstream's Files and Batch APIs, called on its provider's pool: a request sent and
//! its answer read, with the provider's whole-request timeout; the answer's JSON read into
//! the few fields sluice needs ([`UpstreamBatch`]), or a failure that says whether trying
//! again later may help.

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_providers::{Provider, ResponseBody, UpstreamBody};

/// Most bytes of a JSON answer read (a batch object, a file object, a listing).
const MAX_JSON: usize = 16 * 1024 * 1024;

/// Why a call to the upstream did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The upstream could not be reached, timed out, was busy (429) or failed (5xx): try
    /// again at the next poll.
    Transient(String),
    /// The upstream refused (another 4xx) or answered what cannot be read: the batch fails.
    Refused(String),
}

impl Failure {
    /// What happened, for the batch's `errors` or the log.
    pub fn message(&self) -> &str {
        match self {
            Self::Transient(m) | Self::Refused(m) => m,
        }
    }
}

/// A batch object as the upstream answers it (the fields sluice reads).
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamBatch {
    /// Its id.
    pub id: String,
    /// OpenAI's status names.
    pub status: String,
    /// Its answered lines, once written.
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// Its failed lines, once written.
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// `{total, completed, failed}`.
    #[serde(default)]
    pub request_counts: Option<Counts>,
    /// Why it failed.
    #[serde(default)]
    pub errors: Option<Box<RawValue>>,
    /// The metadata it was made with.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// An upstream batch's `request_counts`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Counts {
    /// Lines answered.
    #[serde(default)]
    pub completed: u64,
    /// Lines failed.
    #[serde(default)]
    pub failed: u64,
}

/// A listing of batches.
#[derive(Debug, Deserialize)]
pub struct BatchList {
    /// The batches, newest first.
    #[serde(default)]
    pub data: Vec<UpstreamBatch>,
}

/// An uploaded file's object (its id is all sluice needs).
#[derive(Debug, Deserialize)]
pub struct FileObject {
    /// `file-…`.
    pub id: String,
}

fn provider_says(provider: &Provider, status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    let message = serde_json::from_slice::<Wrapper>(body)
        .map(|w| w.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned());
    format!(
        "the provider `{}` answered {status}: {message}",
        provider.name()
    )
}

/// Sends `request` (built by the provider's batch API) and waits for the answer's head;
/// a non-2xx answer is read and turned into a [`Failure`].
pub async fn send(
    provider: &Provider,
    request: Result<Request<UpstreamBody>, sluice_core::Error>,
) -> Result<ResponseBody, Failure> {
    let request = request.map_err(|e| Failure::Refused(e.to_string()))?;
    let timeout = provider.config.timeout;
    let sent = tokio::time::timeout(timeout, provider.send(request)).await;
    let response = match sent {
        Err(_) => {
            let m = format!(
                "the provider `{}` did not answer within {timeout:?}",
                provider.name()
            );
            return Err(Failure::Transient(m));
        }
        Ok(Err(e)) => return Err(Failure::Transient(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response.into_body());
    }
    let body = read(provider, response.into_body())
        .await
        .unwrap_or_default();
    let m = provider_says(provider, status, &body);
    Err(if status == 429 || status >= 500 || status == 408 {
        Failure::Transient(m)
    } else {
        Failure::Refused(m)
    })
}

/// Reads a whole answer of at most [`MAX_JSON`] bytes.
async fn read(provider: &Provider, mut body: ResponseBody) -> Result<Bytes, Failure> {
    let mut out = Vec::new();
    while let Some(data) = next_frame(provider, &mut body).await? {
        out.extend_from_slice(&data);
        if out.len() > MAX_JSON {
            let m = format!(
                "the provider `{}` answered more than {MAX_JSON} bytes",
                provider.name()
            );
            return Err(Failure::Refused(m));
        }
    }
    Ok(Bytes::from(out))
}

/// Sends `request` and reads its 2xx answer as `T`.
pub async fn json<T: DeserializeOwned>(
    provider: &Provider,
    request: Result<Request<UpstreamBody>, sluice_core::Error>,
) -> Result<T, Failure> {
    let body = send(provider, request).await?;
    let bytes = read(provider, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Refused(format!(
            "the provider `{}` answered what is not OpenAI's format: {e}",
            provider.name()
        ))
    })
}

/// The next frame of a file's content, within the provider's chunk timeout; `None` at its
/// end.
pub async fn next_frame(
    provider: &Provider,
    body: &mut ResponseBody,
) -> Result<Option<Bytes>, Failure> {
    loop {
        let frame = tokio::time::timeout(provider.config.chunk_timeout, body.frame()).await;
        match frame {
            Err(_) => {
                return Err(Failure::Transient(format!(
                    "the provider `{}` stopped sending",
                    provider.name()
                )))
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(Failure::Transient(e.to_string())),
            Ok(Some(Ok(f))) => {
                if let Ok(data) = f.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
