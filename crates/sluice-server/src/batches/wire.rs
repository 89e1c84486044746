//! The Batch API on the wire: the batch object and a listing as OpenAI writes them, the
//! create request and the listing's query as clients send them, and the batches' own errors.

use crate::endpoint::Endpoint;
use crate::list_wire;
use crate::response::{json, ResponseBody};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_core::Error;
use sluice_store::batches::{Batch, BatchPage, MAX_LIST_LIMIT};

/// The endpoints a batch may run, as OpenAI names them.
pub const ENDPOINTS: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
];

/// The only completion window.
pub const WINDOW: &str = "24h";

/// Seconds in [`WINDOW`].
pub const WINDOW_S: u64 = 24 * 3600;

/// A batch object.
#[derive(Serialize)]
struct Wire<'a> {
    id: &'a str,
    object: &'static str,
    endpoint: &'a str,
    errors: Option<&'a RawValue>,
    input_file_id: &'a str,
    completion_window: &'a str,
    status: &'static str,
    output_file_id: Option<&'a str>,
    error_file_id: Option<&'a str>,
    created_at: u64,
    in_progress_at: Option<u64>,
    expires_at: u64,
    finalizing_at: Option<u64>,
    completed_at: Option<u64>,
    failed_at: Option<u64>,
    expired_at: Option<u64>,
    cancelling_at: Option<u64>,
    cancelled_at: Option<u64>,
    request_counts: Counts,
    metadata: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Counts {
    total: u64,
    completed: u64,
    failed: u64,
}

fn raw(text: Option<&str>) -> Option<&RawValue> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

fn wire(b: &Batch) -> Wire<'_> {
    let t = &b.times;
    Wire {
        id: &b.id,
        object: "batch",
        endpoint: &b.endpoint,
        errors: raw(b.errors.as_deref()),
        input_file_id: &b.input_file_id,
        completion_window: &b.completion_window,
        status: b.status.as_str(),
        output_file_id: b.output_file_id.as_deref(),
        error_file_id: b.error_file_id.as_deref(),
        created_at: t.created_at,
        in_progress_at: t.in_progress_at,
        expires_at: t.expires_at,
        finalizing_at: t.finalizing_at,
        completed_at: t.completed_at,
        failed_at: t.failed_at,
        expired_at: t.expired_at,
        cancelling_at: t.cancelling_at,
        cancelled_at: t.cancelled_at,
        request_counts: Counts {
            total: b.counts.total,
            completed: b.counts.completed,
            failed: b.counts.failed,
        },
        metadata: raw(b.metadata.as_deref()),
    }
}

/// `200` with the batch object.
pub fn batch(b: &Batch) -> Response<ResponseBody> {
    json(
        StatusCode::OK,
        serde_json::to_vec(&wire(b)).unwrap_or_default(),
    )
}

/// `200` with a page of the listing.
pub fn list(page: &BatchPage) -> Response<ResponseBody> {
    let data: Vec<Wire<'_>> = page.batches.iter().map(wire).collect();
    list_wire::page(&data, |b| b.id, page.has_more)
}

/// `404` in OpenAI's shape: another key's batch answers as one that never was.
pub fn not_found(id: &str) -> Response<ResponseBody> {
    list_wire::not_found(
        &format!("No such Batch object: {id}"),
        Some("batch_id"),
        Some("batch_not_found"),
    )
}

/// `409`: a batch that has ended cannot be cancelled.
pub fn cannot_cancel(b: &Batch) -> Response<ResponseBody> {
    let body = sluice_types::ErrorBody {
        message: &format!("Cannot cancel a batch with status `{}`.", b.status.as_str()),
        kind: "invalid_request_error",
        param: None,
        code: Some("batch_not_cancellable"),
    };
    json(StatusCode::CONFLICT, body.to_json())
}

pub(super) fn invalid(message: String, param: &'static str) -> Error {
    Error::invalid_request(message, Some(param))
}

/// `POST /v1/batches` as sent.
#[derive(Deserialize)]
struct CreateBody<'a> {
    input_file_id: Option<String>,
    endpoint: Option<String>,
    completion_window: Option<String>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

/// A checked create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The input file.
    pub input_file_id: String,
    /// Its lines' endpoint.
    pub endpoint: Endpoint,
    /// OpenAI's name of it.
    pub endpoint_path: &'static str,
    /// The client's `metadata` object (JSON text), if any.
    pub metadata: Option<String>,
}

/// Reads and checks a create request: every refusal is a 400 naming its param.
pub fn create(body: &[u8]) -> Result<Create, Error> {
    let b: CreateBody<'_> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a batch request: {e}"), "body"))?;
    let input_file_id = b
        .input_file_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("`input_file_id` is required".into(), "input_file_id"))?;
    let asked = b.endpoint.unwrap_or_default();
    let endpoint_path = ENDPOINTS.into_iter().find(|e| *e == asked).ok_or_else(|| {
        invalid(
            format!(
                "unsupported endpoint `{asked}`: expected one of {}",
                ENDPOINTS.join(", ")
            ),
            "endpoint",
        )
    })?;
    let endpoint = Endpoint::at(endpoint_path)
        .ok_or_else(|| invalid(format!("unknown endpoint `{asked}`"), "endpoint"))?;
    match b.completion_window.as_deref() {
        Some(WINDOW) => {}
        other => {
            return Err(invalid(
                format!(
                    "completion_window must be `{WINDOW}`, not `{}`",
                    other.unwrap_or_default()
                ),
                "completion_window",
            ))
        }
    }
    let metadata = match b.metadata {
        None => None,
        Some(m) if m.get() == "null" => None,
        Some(m) if m.get().starts_with('{') => Some(m.get().to_string()),
        Some(_) => return Err(invalid("metadata must be an object".into(), "metadata")),
    };
    Ok(Create {
        input_file_id,
        endpoint,
        endpoint_path,
        metadata,
    })
}

/// The listing's query: `after`, `limit` (1 to 100, default 20).
pub fn list_query(query: Option<&str>) -> Result<(Option<String>, usize), Error> {
    let (mut after, mut limit) = (None, 20);
    for (name, value) in list_wire::pairs(query) {
        match name {
            "after" if !value.is_empty() => after = Some(value.to_string()),
            "limit" => limit = list_wire::limit(value, MAX_LIST_LIMIT)?,
            _ => {}
        }
    }
    Ok((after, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_requests() {
        let ok = create(br#"{"input_file_id":"file-a","endpoint":"/v1/embeddings","completion_window":"24h","metadata":{"k":"v"}}"#)
            .unwrap();
        assert_eq!(ok.endpoint, Endpoint::Embeddings);
        let text = create(
            br#"{"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h"}"#,
        )
        .unwrap();
        assert_eq!(text.endpoint, Endpoint::Completions);
        assert_eq!(ok.metadata.as_deref(), Some(r#"{"k":"v"}"#));
        for (bad, param) in [
            (
                r#"{"endpoint":"/v1/embeddings","completion_window":"24h"}"#,
                "input_file_id",
            ),
            (
                r#"{"input_file_id":"f","endpoint":"/v1/audio/speech","completion_window":"24h"}"#,
                "endpoint",
            ),
            (
                r#"{"input_file_id":"f","endpoint":"/v1/embeddings","completion_window":"1h"}"#,
                "completion_window",
            ),
            (
                r#"{"input_file_id":"f","endpoint":"/v1/embeddings","completion_window":"24h","metadata":[1]}"#,
                "metadata",
            ),
            ("nope", "body"),
        ] {
            assert_eq!(
                create(bad.as_bytes()).unwrap_err().param(),
                Some(param),
                "{bad}"
            );
        }
        assert_eq!(
            list_query(Some("after=batch_x&limit=5")).unwrap(),
            (Some("batch_x".into()), 5)
        );
        assert!(list_query(Some("limit=0")).is_err());
    }
}
