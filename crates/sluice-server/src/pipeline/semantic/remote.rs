//! The semantic stage's embedding by a model sluice does not run itself: a `/v1/embeddings`
//! request of the gateway's own ([`Caller::Gateway`]) through the whole pipeline, so that a
//! route's fallbacks, retries, the exact cache (the same question is embedded once), metrics
//! and the spend log (a record without a key, endpoint `embeddings`, request id
//! `<request id>-semantic`) apply as to any other request.

use crate::endpoint::Endpoint;
use crate::pipeline::{serve_as, Caller};
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

/// The pipeline's answer to `req`, boxed: this runs inside the pipeline's own future, whose
/// type would otherwise contain itself (a function with a named return type, so that the
/// compiler need not prove the pipeline's future `Send` while it computes that future).
fn serve_boxed<'a>(
    state: &'a Arc<AppState>,
    req: Request<Full<Bytes>>,
    request_id: &'a HeaderValue,
    caller: &'a Caller,
) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send + 'a>> {
    Box::pin(serve_as(
        state,
        Endpoint::Embeddings,
        req,
        request_id,
        caller,
    ))
}

/// The embedding of `text` by `model` (a model or route), asked of the pipeline on behalf of
/// the request `parent`.
pub(super) async fn embed(
    state: &Arc<AppState>,
    model: &str,
    text: String,
    parent: &HeaderValue,
) -> Result<Vec<f32>, Error> {
    let body = serde_json::json!({"model": model, "input": text}).to_string();
    let id = format!("{}-semantic", parent.to_str().unwrap_or("sluice"));
    let request_id =
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("sluice-semantic"));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/embeddings")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(model, e.to_string()))?;
    let caller = Caller::Gateway;
    let response = serve_boxed(state, req, &request_id, &caller).await;
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
