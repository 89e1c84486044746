//! The semantic stage's embedding by a model sluice does not run itself: a `/v1/embeddings`
//! request of the gateway's own (`Caller::Gateway`) through the whole pipeline, so that a
//! route's fallbacks, retries, the exact cache (the same question is embedded once), metrics
//! and the spend log (a record without a key, endpoint `embeddings`, request id
//! `<request id>-semantic`) apply as to any other request. When the request is traced, its
//! embedding request carries its trace context (`traceparent` naming the request's span,
//! and the client's `tracestate`), so the embedding's span is the request span's child in
//! the same trace.

use crate::pipeline::traced::Recording;
use crate::response::ResponseBody;
use crate::state::AppState;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use sluice_core::{Error, ErrorKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

#[derive(Deserialize)]
struct Embeddings {
    data: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Embedding {
    embedding: Vec<f32>,
}

fn failed(model: &str, why: String) -> Error {
    ErrorKind::Unavailable {
        message: format!("the semantic cache's model `{model}` could not embed: {why}"),
    }
    .into()
}

/// The pipeline's entry for a `/v1/embeddings` request of the gateway's own: handed down to the
/// stage by the pipeline, which this module cannot import (the pipeline imports it). Its
/// future is boxed: it runs inside the pipeline's own future, whose type would otherwise
/// contain itself.
pub type OwnEmbeddings =
    for<'a> fn(
        &'a Arc<AppState>,
        Request<Full<Bytes>>,
        &'a HeaderValue,
    ) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send + 'a>>;

/// The request the semantic stage embeds for.
#[derive(Clone, Copy)]
pub struct Parent<'a> {
    /// Its id: its embedding request's is `<id>-semantic`.
    pub request_id: &'a HeaderValue,
    /// Its trace, when the gateway sends traces.
    pub trace: Option<&'a Recording>,
}

/// The embedding of `text` by `model` (a model or route), asked of the pipeline on behalf of
/// the request `parent`.
pub(super) async fn embed(
    (state, own): (&Arc<AppState>, OwnEmbeddings),
    model: &str,
    text: String,
    parent: Parent<'_>,
) -> Result<Vec<f32>, Error> {
    let body = serde_json::json!({"model": model, "input": text}).to_string();
    let id = format!(
        "{}-semantic",
        parent.request_id.to_str().unwrap_or("sluice")
    );
    let request_id =
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("sluice-semantic"));
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/embeddings")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(model, e.to_string()))?;
    if let Some(trace) = parent.trace {
        let headers = req.headers_mut();
        headers.insert("traceparent", trace.child_header());
        if let Some(vendors) = trace.trace_state() {
            headers.insert("tracestate", vendors);
        }
    }
    let response = own(state, req, &request_id).await;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(model, e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(failed(model, format!("{status}: {}", text.trim())));
    }
    let answer: Embeddings = serde_json::from_slice(&bytes)
        .map_err(|e| failed(model, format!("not an embeddings answer: {e}")))?;
    answer
        .data
        .into_iter()
        .next()
        .map(|e| e.embedding)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| failed(model, "the answer holds no vector".into()))
}
