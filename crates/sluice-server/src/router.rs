//! The router: a `match` on method and path (a dozen routes need no route table, no
//! boxing, no per-request allocation). The proxied endpoints are found by their
//! description ([`Endpoint::at`]) and served by the pipeline; the rest are handlers.

use crate::admin_history;
use crate::admin_keys;
use crate::admin_local;
use crate::admin_query;
use crate::admin_requests;
use crate::admin_samples;
use crate::batches;
use crate::console;
use crate::endpoint::Endpoint;
use crate::files;
use crate::handlers;
use crate::pipeline;
use crate::request_body::ClientBody;
use crate::request_id::{self, X_REQUEST_ID};
use crate::response::ResponseBody;
use crate::state::AppState;
use crate::stored_responses;
use http::{Method, Request, Response};
use std::convert::Infallible;
use std::sync::Arc;
use tracing::Instrument;

/// Routes one request: hyper's on the wire, any [`ClientBody`] in process (tests). The
/// request runs in a span carrying its id (`request_id`), so every line it logs has it, a
/// stream's included (its body is polled in the span).
pub async fn route<B: ClientBody>(
    state: Arc<AppState>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, Infallible> {
    let request_id = request_id::for_request(req.headers());
    let span =
        tracing::info_span!("request", request_id = %request_id.to_str().unwrap_or_default());
    let response = dispatch(state, req, &request_id)
        .instrument(span.clone())
        .await;
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(X_REQUEST_ID, request_id);
    Ok(Response::from_parts(parts, body.in_span(span)))
}

/// The handler of one request, by method and path: a proxied endpoint's pipeline, or
/// [`handle`]. Each is boxed where it is made: the pipeline's future is the largest of all
/// (several KiB, its stages inline), and made inline here it would make this future, the
/// route's and the connection's request future as large, each copied whole as it is built
/// and moved into the next (three copies of about 9 KiB a request, callgrind showed).
async fn dispatch<B: ClientBody>(
    state: Arc<AppState>,
    req: Request<B>,
    request_id: &http::HeaderValue,
) -> Response<ResponseBody> {
    let path = req.uri().path();
    if admin_query::takes_none(path) {
        let query = req.uri().query();
        if let Some(refused) = admin_query::none_taken(&state, path, req.headers(), query) {
            return refused;
        }
    }
    match Endpoint::at(path) {
        Some(endpoint) if req.method() == Method::POST => {
            Box::pin(pipeline::serve(&state, endpoint, req, request_id)).await
        }
        _ => Box::pin(handle(state, req)).await,
    }
}

/// Every request but a proxied endpoint's `POST`, by method and path.
async fn handle<B: ClientBody>(state: Arc<AppState>, req: Request<B>) -> Response<ResponseBody> {
    let method = req.method().clone();
    let path = req.uri().path();
    match (&method, path, Endpoint::at(path)) {
        (m, p, Some(_)) => handlers::method_not_allowed(m, p, "POST"),
        (&Method::GET, "/v1/models" | "/models", _) => {
            handlers::models(&state, req.headers()).await
        }
        (&Method::GET, p, _) if p.starts_with("/v1/models/") => {
            handlers::model(&state, req.headers(), &p["/v1/models/".len()..]).await
        }
        (_, p, _) if files::is_files_path(p) => files::serve(&state, req).await,
        (_, p, _) if batches::api::is_batches_path(p) => batches::api::serve(&state, req).await,
        (_, p, _) if stored_responses::is_stored_path(p) => {
            stored_responses::serve(&state, req).await
        }
        (m, p, _) if console::is_console_path(p) => console::serve(m, p, req.headers()),
        (&Method::GET, "/health", _) => handlers::health(),
        (&Method::GET, "/health/detailed", _) => {
            handlers::status(&state, req.headers(), handlers::health_detailed)
        }
        (&Method::GET, "/health/ready", _) => crate::ready::ready(&state).await,
        (&Method::GET, "/metrics", _) => handlers::status(&state, req.headers(), handlers::metrics),
        (&Method::GET, "/admin/health", _) => {
            handlers::admin(&state, req.headers(), handlers::health_detailed)
        }
        (&Method::GET, "/admin/metrics", _) => {
            handlers::admin(&state, req.headers(), handlers::metrics)
        }
        (&Method::GET, "/admin/routes", _) => handlers::admin_routes(&state, req.headers()),
        (&Method::GET, "/admin/cache", _) => handlers::admin_cache(&state, req.headers()).await,
        (&Method::DELETE, "/admin/cache", _) => {
            handlers::admin_cache_clear(&state, req.headers()).await
        }
        (_, p, _) if p == "/admin/keys" || p.starts_with("/admin/keys/") => {
            let rest = p["/admin/keys".len()..].to_string();
            admin_keys::serve(&state, &rest, req).await
        }
        (&Method::GET, "/admin/spend", _) => admin_keys::spend(&state, &req).await,
        (&Method::GET, "/admin/requests", _) => admin_requests::serve(&state, &req).await,
        (&Method::GET, "/admin/samples", _) => admin_samples::serve(&state, &req).await,
        (&Method::GET, "/admin/history", _) => admin_history::serve(&state, &req),
        (m, p, _) if p.starts_with(admin_local::PREFIX) => {
            admin_local::serve(&state, m, p, req.headers()).await
        }
        (&Method::POST, "/admin/config/reload", _) => handlers::admin_reload(&state, req.headers()),
        (&Method::POST, p, _) if p.starts_with("/admin/routes/") && p.ends_with("/canary") => {
            let name = p["/admin/routes/".len()..p.len() - "/canary".len()].to_string();
            handlers::admin_canary(&state, &name, req).await
        }
        (
            m,
            p @ ("/v1/models" | "/models" | "/health" | "/health/detailed" | "/health/ready"
            | "/metrics"),
            _,
        ) => handlers::method_not_allowed(m, p, "GET"),
        (m, p @ "/admin/cache", _) => handlers::method_not_allowed(m, p, "GET, DELETE"),
        (
            m,
            p @ ("/admin/spend" | "/admin/requests" | "/admin/samples" | "/admin/history"
            | "/admin/health" | "/admin/metrics"),
            _,
        ) => handlers::method_not_allowed(m, p, "GET"),
        (m, p @ "/admin/config/reload", _) => handlers::method_not_allowed(m, p, "POST"),
        (_, p, _) => handlers::not_found(p),
    }
}
