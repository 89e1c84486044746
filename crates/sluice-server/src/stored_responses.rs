//! The Responses API's stored responses over HTTP (the store is
//! `sluice_store::responses`; what is stored, `pipeline`'s turns):
//! `GET /v1/responses/{id}` (the `response` object as it was answered),
//! `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items` (paged by `after`,
//! `limit`, `order`), in OpenAI's shapes.
//!
//! Every request is authenticated as the proxied endpoints are, and every response belongs
//! to the key that made it: another key's response is a 404, exactly like one that does
//! not exist, has expired, or was made with `store: false`.

use crate::conversations::{owner, store_error};
use crate::pipeline::auth::authenticate;
use crate::request_body::ClientBody;
use crate::response::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::{Method, Request, Response, StatusCode};
use sluice_core::{Error, ErrorKind};
use sluice_providers::responses::items::{self, ItemsQuery, Order, INCLUDABLE, MAX_LIMIT};
use sluice_store::responses::{Content, Kept, ResponseStore};
use sluice_store::Owner;

/// Whether `path` is a stored response's (`/v1/responses/...`; OpenAI's clients may omit
/// the `/v1`).
pub fn is_stored_path(path: &str) -> bool {
    rest(path).is_some()
}

/// What follows `/v1/responses/` in `path`.
fn rest(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/responses/")
        .or_else(|| path.strip_prefix("/responses/"))
}

type Answer = Result<Response<ResponseBody>, Error>;

/// Serves one request under `/v1/responses/`.
pub async fn serve<B: ClientBody>(state: &AppState, req: Request<B>) -> Response<ResponseBody> {
    let path = req.uri().path();
    let Some(rest) = rest(path) else {
        return crate::handlers::not_found(path);
    };
    let identity = match authenticate(state, req.headers()).await {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    let owner = owner(identity.key().map(|k| k.id.as_str()));
    let store = &state.responses;
    let query = req.uri().query();
    let answer = match (req.method(), rest.split_once('/')) {
        (&Method::GET, None) => retrieve(store, &owner, rest, query).await,
        (&Method::DELETE, None) => delete(store, &owner, rest).await,
        (&Method::GET, Some((id, "input_items"))) => input_items(store, &owner, id, query).await,
        (m, None) => return crate::handlers::method_not_allowed(m, path, "GET, DELETE"),
        (m, Some((_, "input_items"))) => {
            return crate::handlers::method_not_allowed(m, path, "GET")
        }
        (_, Some(_)) => return crate::handlers::not_found(path),
    };
    answer.unwrap_or_else(|e| error_response(&e))
}

/// The content of response `id` of `owner`, if it has one.
async fn content(store: &ResponseStore, owner: &Owner, id: &str) -> Result<Option<Content>, Error> {
    let found = store.get(id, owner).await.map_err(|e| store_error(&e))?;
    Ok(match found.map(|r| r.kept) {
        Some(Kept::Content(c)) => Some(c),
        Some(Kept::Withheld(_)) | None => None,
    })
}

async fn retrieve(store: &ResponseStore, owner: &Owner, id: &str, query: Option<&str>) -> Answer {
    for (name, value) in pairs(query) {
        match name {
            "include" | "include[]" => includable(value)?,
            "stream" if value == "true" => {
                return Err(invalid(
                    "stream: replaying a stored response as events is not supported; \
                     retrieve it whole"
                        .into(),
                    "stream",
                ))
            }
            _ => {}
        }
    }
    Ok(match content(store, owner, id).await? {
        Some(c) => json(StatusCode::OK, c.response),
        None => not_found(id),
    })
}

async fn delete(store: &ResponseStore, owner: &Owner, id: &str) -> Answer {
    Ok(
        match store.delete(id, owner).await.map_err(|e| store_error(&e))? {
            true => {
                let body = serde_json::json!({"id": id, "object": "response", "deleted": true});
                json(StatusCode::OK, body.to_string())
            }
            false => not_found(id),
        },
    )
}

async fn input_items(
    store: &ResponseStore,
    owner: &Owner,
    id: &str,
    query: Option<&str>,
) -> Answer {
    let q = items_query(query)?;
    let Some(c) = content(store, owner, id).await? else {
        return Ok(not_found(id));
    };
    let page = items::page(&c.input_items, &q).map_err(|message| -> Error {
        tracing::warn!(%id, %message, "stored input items unreadable");
        ErrorKind::Internal {
            message: "the stored input items cannot be read".into(),
        }
        .into()
    })?;
    Ok(json(StatusCode::OK, page))
}

/// The query's `name=value` pairs (values of ids, numbers and include names need no
/// decoding but for the brackets of `include[]`).
fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let name = if name.eq_ignore_ascii_case("include%5B%5D") {
                "include[]"
            } else {
                name
            };
            (name, value)
        })
}

/// The input items' query: `after`, `limit` (1 to 100; default 20), `order` (`asc`,
/// `desc`; default `desc`), `include`. Unknown parameters are ignored, as OpenAI does; a
/// bad value of a known one is a 400 naming it.
fn items_query(query: Option<&str>) -> Result<ItemsQuery, Error> {
    let mut q = ItemsQuery::default();
    for (name, value) in pairs(query) {
        match name {
            "after" if !value.is_empty() => q.after = Some(value.to_owned()),
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            format!(
                                "limit must be an integer from 1 to {MAX_LIMIT}, not `{value}`"
                            ),
                            "limit",
                        )
                    })?;
            }
            "order" => {
                q.order = match value {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => {
                        return Err(invalid(
                            format!("order must be `asc` or `desc`, not `{value}`"),
                            "order",
                        ))
                    }
                }
            }
            "include" | "include[]" => includable(value)?,
            _ => {}
        }
    }
    Ok(q)
}

/// Accepts an `include` value OpenAI documents (each asks sluice for nothing more).
fn includable(value: &str) -> Result<(), Error> {
    if INCLUDABLE.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        format!(
            "include: unknown value `{value}`: expected one of {}",
            INCLUDABLE.join(", ")
        ),
        "include",
    ))
}

fn invalid(message: String, param: &'static str) -> Error {
    Error::invalid_request(message, Some(param))
}

/// `404` in OpenAI's shape: another key's response, an expired one, one made with
/// `store: false` and one that never was all answer alike.
fn not_found(id: &str) -> Response<ResponseBody> {
    crate::list_wire::not_found(&format!("Response with id '{id}' not found."), None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        assert!(is_stored_path("/v1/responses/resp_1"));
        assert!(is_stored_path("/responses/resp_1/input_items"));
        assert!(!is_stored_path("/v1/responses"));
        let q = items_query(Some(
            "after=msg_1&limit=5&order=asc&include%5B%5D=message.input_image.image_url",
        ))
        .unwrap();
        assert_eq!(
            q,
            ItemsQuery {
                after: Some("msg_1".into()),
                limit: 5,
                order: Order::Asc
            }
        );
        for bad in ["limit=0", "limit=101", "order=up", "include=nope"] {
            assert!(items_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
