//! The endpoints that are not proxied: models, health, metrics.

use crate::body::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use sluice_core::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;

/// `GET /v1/models`.
pub fn models(state: &AppState) -> Response<ResponseBody> {
    json(StatusCode::OK, state.models_json.clone())
}

/// `GET /v1/models/{model}`.
pub fn model(state: &AppState, id: &str) -> Response<ResponseBody> {
    match state.resolve(id) {
        Ok(t) => json(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({
                "id": id,
                "object": "model",
                "created": 0,
                "owned_by": t.provider.name(),
            }))
            .unwrap_or_default(),
        ),
        Err(e) => error_response(&e),
    }
}

/// `GET /health`: liveness.
pub fn health() -> Response<ResponseBody> {
    json(StatusCode::OK, &br#"{"status":"ok"}"#[..])
}

/// `GET /health/detailed`: providers, models and what they have served.
pub fn health_detailed(state: &AppState) -> Response<ResponseBody> {
    let providers: Vec<serde_json::Value> = state
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let models: Vec<&str> = state
                .deployments
                .iter()
                .filter(|d| d.provider == i)
                .map(|d| &*d.name)
                .collect();
            serde_json::json!({
                "name": p.name(),
                "type": p.config.kind.as_str(),
                "base_url": p.config.base_url,
                "passthrough": p.config.passthrough,
                "models": models,
            })
        })
        .collect();
    let models: Vec<serde_json::Value> = state
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let s = state.metrics.series(i);
            let chat = s.endpoint(crate::metrics::Endpoint::Chat);
            let emb = s.endpoint(crate::metrics::Endpoint::Embeddings);
            serde_json::json!({
                "name": &*d.name,
                "provider": state.providers[d.provider].name(),
                "upstream": &*d.upstream,
                "requests": chat.requests() + emb.requests(),
                "upstream_errors": chat.upstream_errors() + emb.upstream_errors(),
            })
        })
        .collect();
    let body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "in_flight": state.metrics.in_flight.load(Relaxed),
        "providers": providers,
        "models": models,
    });
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// `GET /metrics`: Prometheus text.
pub fn metrics(state: &AppState) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(state.metrics.render()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Any other path.
pub fn not_found(path: &str) -> Response<ResponseBody> {
    error_response(
        &ErrorKind::NotFound {
            path: path.to_string(),
        }
        .into(),
    )
}

/// A known path with the wrong method.
pub fn method_not_allowed(
    method: &http::Method,
    path: &str,
    allow: &'static str,
) -> Response<ResponseBody> {
    let mut r = error_response(
        &ErrorKind::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
        }
        .into(),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}
