//! OpenAI's shapes shared by the APIs of stored objects (files, batches, responses): a page
//! of a listing, the 404 of an object that is not there (or is another key's), and the
//! listing's query string.

use crate::response::{json, ResponseBody};
use http::{Response, StatusCode};
use serde::Serialize;
use sluice_core::Error;

/// `200` with a page: `{"object":"list","data":[...],"first_id","last_id","has_more"}`;
/// `id` names an item.
pub fn page<T: Serialize>(
    data: &[T],
    id: impl Fn(&T) -> &str,
    has_more: bool,
) -> Response<ResponseBody> {
    #[derive(Serialize)]
    struct List<'a, T> {
        object: &'static str,
        data: &'a [T],
        first_id: Option<&'a str>,
        last_id: Option<&'a str>,
        has_more: bool,
    }
    let body = List {
        object: "list",
        data,
        first_id: data.first().map(&id),
        last_id: data.last().map(&id),
        has_more,
    };
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// `404` `invalid_request_error` with OpenAI's message for the object type (`code`, `param`
/// as OpenAI sends them for it).
pub fn not_found(
    message: &str,
    param: Option<&'static str>,
    code: Option<&'static str>,
) -> Response<ResponseBody> {
    let body = sluice_types::ErrorBody {
        message,
        kind: "invalid_request_error",
        param,
        code,
    };
    json(StatusCode::NOT_FOUND, body.to_json())
}

/// The `name=value` pairs of a query string (a name alone has an empty value).
pub fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// A listing's `limit`: an integer from 1 to `max`, else a 400 naming `limit`.
pub fn limit(value: &str, max: usize) -> Result<usize, Error> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            Error::invalid_request(
                format!("limit must be an integer from 1 to {max}, not `{value}`"),
                Some("limit"),
            )
        })
}
