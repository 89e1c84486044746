//! One line of a batch through the whole pipeline, in process, as the batch's key
//! ([`Caller::BatchLine`]), and its answer as a line of the output or error file in
//! OpenAI's format: `{"id","custom_id","response":{"status_code","request_id","body"},"error"}`
//! (a malformed line: `"response":null` and `"error":{"code","message"}`).

use super::handle::Batches;
use super::input::Malformed;
use crate::endpoint::Endpoint;
use crate::pipeline::{self, Caller};
use crate::state::AppState;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::value::RawValue;
use sluice_store::batches::{LineResult, Outcome};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// An output or error file line.
#[derive(Serialize)]
struct OutputLine<'a> {
    id: &'a str,
    custom_id: Option<&'a str>,
    response: Option<Answered<'a>>,
    error: Option<LineError<'a>>,
}

#[derive(Serialize)]
struct Answered<'a> {
    status_code: u16,
    request_id: &'a str,
    body: &'a RawValue,
}

#[derive(Serialize)]
struct LineError<'a> {
    code: &'a str,
    message: &'a str,
}

/// The id of line `number` of `batch_id` (`batch_req_…`), also its request id.
pub fn request_id(batch_id: &str, number: u64) -> String {
    let suffix = batch_id.strip_prefix("batch_").unwrap_or(batch_id);
    format!("batch_req_{suffix}_{number}")
}

/// The error file's line of a line that did not run (`code`: why).
pub fn not_run(
    batch_id: &str,
    number: u64,
    custom_id: Option<&str>,
    code: &str,
    message: &str,
) -> LineResult {
    let id = request_id(batch_id, number);
    let line = OutputLine {
        id: &id,
        custom_id,
        response: None,
        error: Some(LineError { code, message }),
    };
    LineResult {
        line: number,
        outcome: Outcome::Failed,
        text: serde_json::to_string(&line).unwrap_or_default(),
    }
}

/// The error file's line of a malformed line.
pub fn malformed(batch_id: &str, number: u64, m: &Malformed) -> LineResult {
    not_run(batch_id, number, m.custom_id.as_deref(), m.code, &m.message)
}

/// Counts a line in flight while it lives.
struct InFlight<'a>(&'a Batches);

impl<'a> InFlight<'a> {
    fn new(b: &'a Batches) -> Self {
        b.metrics.lines_in_flight.fetch_add(1, Relaxed);
        Self(b)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.lines_in_flight.fetch_sub(1, Relaxed);
    }
}

/// What a line is: its batch, number, endpoint and request.
pub struct Line<'a> {
    /// Who runs it, and as whom.
    pub caller: &'a Caller,
    /// The batch's endpoint.
    pub endpoint: Endpoint,
    /// OpenAI's name of it (the request's path).
    pub path: &'static str,
    /// Its number in the input file.
    pub number: u64,
    /// Its `custom_id`.
    pub custom_id: &'a str,
    /// Its request body.
    pub body: Bytes,
}

/// Runs `line` through the pipeline and writes its answer as a result.
pub async fn run(state: &Arc<AppState>, batches: &Batches, line: Line<'_>) -> LineResult {
    let batch_id = line.caller.batch_id().unwrap_or_default();
    let id = request_id(batch_id, line.number);
    let request_id = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("batch_req"));
    let req = Request::builder()
        .method(Method::POST)
        .uri(line.path)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(line.body));
    let Ok(req) = req else {
        return not_run(
            batch_id,
            line.number,
            Some(line.custom_id),
            "internal_error",
            "cannot build the request",
        );
    };
    let (status, body) = {
        let _counted = InFlight::new(batches);
        let response =
            pipeline::serve_as(state, line.endpoint, req, &request_id, line.caller).await;
        let status = response.status().as_u16();
        match response.into_body().collect().await {
            Ok(c) => (status, c.to_bytes()),
            // Only a piped answer (speech, which batches do not take) can break off.
            Err(aborted) => {
                let message = aborted.to_string();
                let custom_id = Some(line.custom_id);
                return not_run(
                    batch_id,
                    line.number,
                    custom_id,
                    "stream_interrupted",
                    &message,
                );
            }
        }
    };
    answered(&id, line.number, line.custom_id, status, &body)
}

/// The result of a line answered `status` with `body`.
fn answered(id: &str, number: u64, custom_id: &str, status: u16, body: &[u8]) -> LineResult {
    let owned;
    let body: &RawValue = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(_) => {
            // Not JSON (never from the JSON endpoints): kept as a string.
            let text = String::from_utf8_lossy(body);
            owned = serde_json::value::to_raw_value(&text).unwrap_or_default();
            &owned
        }
    };
    let line = OutputLine {
        id,
        custom_id: Some(custom_id),
        response: Some(Answered {
            status_code: status,
            request_id: id,
            body,
        }),
        error: None,
    };
    LineResult {
        line: number,
        outcome: if (200..300).contains(&status) {
            Outcome::Completed
        } else {
            Outcome::Failed
        },
        text: serde_json::to_string(&line).unwrap_or_default(),
    }
}
