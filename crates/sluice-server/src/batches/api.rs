//! The endpoints: `POST /v1/batches`, `GET /v1/batches` (paged by `after` and `limit`),
//! `GET /v1/batches/{id}` and `POST /v1/batches/{id}/cancel`. Every request is
//! authenticated as the proxied endpoints are, and every batch belongs to the key that
//! created it: another key's batch is a 404, exactly like one that does not exist.

use super::handle::{Batches, Signal};
use super::wire;
use crate::files::owner;
use crate::pipeline::auth::authenticate;
use crate::request_body::ClientBody;
use crate::response::{error_response, ResponseBody};
use crate::state::AppState;
use http::{Method, Request, Response};
use sluice_core::{Error, ErrorKind};
use sluice_store::batches::{BatchStatus, NewBatch};
use sluice_store::files::{unix_now_s, Owner, Purpose};
use sluice_store::StoreError;

/// The path every route here starts with.
pub const PREFIX: &str = "/v1/batches";

/// Whether `path` is the Batch API's.
pub fn is_batches_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/v1/batches/")
}

type Answer = Result<Response<ResponseBody>, Error>;

/// Serves one request under [`PREFIX`].
pub async fn serve<B: ClientBody>(state: &AppState, req: Request<B>) -> Response<ResponseBody> {
    let path = req.uri().path().to_string();
    let Some(batches) = &state.batches else {
        return crate::handlers::not_found(&path);
    };
    let identity = match authenticate(state, req.headers()).await {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    let owner = owner(&identity);
    let rest = path[PREFIX.len()..].trim_start_matches('/');
    let (id, cancel) = match rest.split_once('/') {
        Some((id, "cancel")) => (id, true),
        Some(_) => return crate::handlers::not_found(&path),
        None => (rest, false),
    };
    let method = req.method().clone();
    let answer = match (&method, id, cancel) {
        (&Method::POST, "", false) => create(state, batches, owner, req).await,
        (&Method::GET, "", false) => list(batches, &owner, req.uri().query()).await,
        (&Method::GET, id, false) => retrieve(batches, &owner, id).await,
        (&Method::POST, id, true) if !id.is_empty() => cancel_batch(batches, &owner, id).await,
        (m, "", _) => return crate::handlers::method_not_allowed(m, &path, "GET, POST"),
        (m, _, true) => return crate::handlers::method_not_allowed(m, &path, "POST"),
        (m, _, false) => return crate::handlers::method_not_allowed(m, &path, "GET"),
    };
    answer.unwrap_or_else(|e| error_response(&e))
}

fn store_error(e: &StoreError) -> Error {
    crate::files::store_error(e)
}

async fn create<B: ClientBody>(
    state: &AppState,
    batches: &Batches,
    owner: Owner,
    req: Request<B>,
) -> Answer {
    let (parts, body) = req.into_parts();
    let body = crate::request_body::read_body(&state.server, &parts, body).await?;
    let asked = wire::create(&body)?;
    let input = batches
        .files
        .get(&asked.input_file_id, &owner)
        .await
        .map_err(|e| store_error(&e))?;
    let param = "input_file_id";
    let Some(input) = input else {
        let m = format!("No such File object: {}", asked.input_file_id);
        return Err(wire::invalid(m, param));
    };
    if input.purpose != Purpose::Batch {
        let m = format!(
            "the input file `{}` has purpose `{}`; a batch's input file must have purpose `batch`",
            input.id,
            input.purpose.as_str()
        );
        return Err(wire::invalid(m, param));
    }
    let new = NewBatch {
        owner,
        endpoint: asked.endpoint_path.to_string(),
        input_file_id: input.id,
        completion_window: wire::WINDOW.to_string(),
        metadata: asked.metadata,
        expires_at: unix_now_s() + wire::WINDOW_S,
    };
    let batch = batches
        .store
        .create(new)
        .await
        .map_err(|e| store_error(&e))?;
    tracing::debug!(batch = %batch.id, input = %batch.input_file_id, "batch created");
    batches.wake();
    Ok(wire::batch(&batch))
}

async fn list(batches: &Batches, owner: &Owner, query: Option<&str>) -> Answer {
    let (after, limit) = wire::list_query(query)?;
    let page = batches
        .store
        .list(owner, after.as_deref(), limit)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(wire::list(&page))
}

async fn retrieve(batches: &Batches, owner: &Owner, id: &str) -> Answer {
    let found = batches
        .store
        .get(id, owner)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(found.map_or_else(|| wire::not_found(id), |b| wire::batch(&b)))
}

async fn cancel_batch(batches: &Batches, owner: &Owner, id: &str) -> Answer {
    let store = &batches.store;
    let Some(batch) = store.get(id, owner).await.map_err(|e| store_error(&e))? else {
        return Ok(wire::not_found(id));
    };
    match batch.status {
        BatchStatus::Validating | BatchStatus::InProgress => {}
        BatchStatus::Cancelling | BatchStatus::Cancelled => return Ok(wire::batch(&batch)),
        _ => return Ok(wire::cannot_cancel(&batch)),
    }
    let now = store
        .request_cancel(id, owner)
        .await
        .map_err(|e| store_error(&e))?;
    let Some(now) = now else {
        return Err(ErrorKind::Internal {
            message: "the batch went away while being cancelled".into(),
        }
        .into());
    };
    batches.signal(id, Signal::Cancel);
    batches.wake();
    Ok(wire::batch(&now))
}
