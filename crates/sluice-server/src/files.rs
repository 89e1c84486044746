//! OpenAI's Files API, stored by sluice itself (`sluice_store::files`): `POST /v1/files`
//! (multipart, streamed to disk), `GET /v1/files` (paged by cursor), `GET /v1/files/{id}`,
//! `GET /v1/files/{id}/content` (streamed from disk) and `DELETE /v1/files/{id}`.
//!
//! Every request is authenticated as the proxied endpoints are, and every file belongs to
//! the key that uploaded it (the master key's, or anyone's on a gateway without keys, are
//! the master's): another key's file is a 404, exactly like one that does not exist.
//!
//! The files: this one routes and answers; `upload` reads the multipart body into the
//! store, `wire` writes the JSON (and reads the listing's query), `body` streams a content.

mod body;
mod upload;
mod wire;

pub use wire::store_error;

use crate::keys::Identity;
use crate::pipeline::auth::authenticate;
use crate::request_body::ClientBody;
use crate::response::{error_response, ResponseBody};
use crate::state::AppState;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use sluice_core::Error;
use sluice_store::files::{FileStore, Owner};

/// The path every route here starts with.
pub const PREFIX: &str = "/v1/files";

/// Whether `path` is the Files API's.
pub fn is_files_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/v1/files/")
}

/// Whose files a caller's are (the master's for the master key and an open gateway).
pub fn owner(identity: &Identity) -> Owner {
    match identity.key() {
        Some(k) => Owner::Key(k.id.clone()),
        None => Owner::Master,
    }
}

/// Serves one request under [`PREFIX`].
pub async fn serve<B: ClientBody>(state: &AppState, req: Request<B>) -> Response<ResponseBody> {
    let path = req.uri().path().to_string();
    let Some(store) = &state.files else {
        return crate::handlers::not_found(&path);
    };
    let identity = match authenticate(state, req.headers()).await {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    let owner = owner(&identity);
    let rest = path[PREFIX.len()..].trim_start_matches('/');
    let (id, content) = match rest.split_once('/') {
        Some((id, "content")) => (id, true),
        Some(_) => return crate::handlers::not_found(&path),
        None => (rest, false),
    };
    let method = req.method().clone();
    let answer = match (&method, id, content) {
        (&Method::POST, "", _) => create(state, store, owner, req).await,
        (&Method::GET, "", _) => list(store, &owner, req.uri().query()).await,
        (&Method::GET, id, false) => retrieve(store, &owner, id).await,
        (&Method::GET, id, true) => read(store, &owner, id).await,
        (&Method::DELETE, id, false) if !id.is_empty() => delete(store, &owner, id).await,
        (m, "", _) => return crate::handlers::method_not_allowed(m, &path, "GET, POST"),
        (m, _, true) => return crate::handlers::method_not_allowed(m, &path, "GET"),
        (m, _, false) => return crate::handlers::method_not_allowed(m, &path, "GET, DELETE"),
    };
    answer.unwrap_or_else(|e| error_response(&e))
}

type Answer = Result<Response<ResponseBody>, Error>;

async fn create<B: ClientBody>(
    state: &AppState,
    store: &FileStore,
    owner: Owner,
    req: Request<B>,
) -> Answer {
    let (parts, body) = req.into_parts();
    let file = upload::receive(&state.server, store, owner, &parts, body).await?;
    tracing::debug!(id = %file.id, bytes = file.bytes, purpose = %file.purpose, "file stored");
    Ok(wire::file(&file))
}

async fn list(store: &FileStore, owner: &Owner, query: Option<&str>) -> Answer {
    let query = wire::list_query(query)?;
    let page = store
        .list(owner, &query)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(wire::list(&page))
}

async fn retrieve(store: &FileStore, owner: &Owner, id: &str) -> Answer {
    Ok(
        match store.get(id, owner).await.map_err(|e| store_error(&e))? {
            Some(file) => wire::file(&file),
            None => wire::not_found(id),
        },
    )
}

async fn read(store: &FileStore, owner: &Owner, id: &str) -> Answer {
    let Some((_, content)) = store.open(id, owner).await.map_err(|e| store_error(&e))? else {
        return Ok(wire::not_found(id));
    };
    let len = content
        .metadata()
        .await
        .map_err(|e| store_error(&e.into()))?
        .len();
    let mut r = Response::new(ResponseBody::stream(body::FileBody::new(content, len)));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    Ok(r)
}

async fn delete(store: &FileStore, owner: &Owner, id: &str) -> Answer {
    Ok(
        match store.delete(id, owner).await.map_err(|e| store_error(&e))? {
            true => wire::deleted(id),
            false => wire::not_found(id),
        },
    )
}
