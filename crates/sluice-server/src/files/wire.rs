//! The Files API on the wire: a file object, a listing and a deletion as OpenAI writes
//! them, the listing's query string, and the files' own errors (a file that is not there,
//! a store that failed).

use crate::list_wire;
use crate::response::{json, ResponseBody};
use http::{Response, StatusCode};
use serde::Serialize;
use sluice_core::{Error, ErrorKind};
use sluice_store::files::{FileObject, ListQuery, Order, Page, Purpose, MAX_LIST_LIMIT};
use sluice_store::StoreError;

/// A file object.
#[derive(Serialize)]
struct Wire<'a> {
    id: &'a str,
    object: &'static str,
    bytes: u64,
    created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    filename: &'a str,
    purpose: &'static str,
    status: &'static str,
    status_details: Option<&'static str>,
}

fn wire(f: &FileObject) -> Wire<'_> {
    Wire {
        id: &f.id,
        object: "file",
        bytes: f.bytes,
        created_at: f.created_at,
        expires_at: f.expires_at,
        filename: &f.filename,
        purpose: f.purpose.as_str(),
        status: f.status.as_str(),
        status_details: None,
    }
}

/// `200` with the file object.
pub fn file(f: &FileObject) -> Response<ResponseBody> {
    json(
        StatusCode::OK,
        serde_json::to_vec(&wire(f)).unwrap_or_default(),
    )
}

/// `200` with a page of the listing.
pub fn list(page: &Page) -> Response<ResponseBody> {
    let data: Vec<Wire<'_>> = page.files.iter().map(wire).collect();
    list_wire::page(&data, |f| f.id, page.has_more)
}

/// `200` with `{"id","object":"file","deleted":true}`.
pub fn deleted(id: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({"id": id, "object": "file", "deleted": true});
    json(StatusCode::OK, body.to_string())
}

/// `404` in OpenAI's shape: what a file of another key, an expired one, or one that never
/// was all answer alike.
pub fn not_found(id: &str) -> Response<ResponseBody> {
    list_wire::not_found(
        &format!("No such File object: {id}"),
        Some("id"),
        Some("file_not_found"),
    )
}

/// A failure of the store as the client sees it: 503 while it cannot be reached, else 500;
/// the cause is logged, not sent.
pub fn store_error(e: &StoreError) -> Error {
    tracing::warn!(error = %e, "files store");
    match e {
        StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::Postgres(_) => {
            ErrorKind::Unavailable {
                message: "the files store is unavailable right now".into(),
            }
            .into()
        }
        _ => ErrorKind::Internal {
            message: "the files store failed".into(),
        }
        .into(),
    }
}

/// The listing's query string: `after`, `limit` (1 to 10,000; default 10,000), `order`
/// (`asc`, `desc`; default `desc`), `purpose`. Unknown parameters are ignored, as OpenAI
/// does; a bad value of a known one is a 400 naming it.
pub fn list_query(query: Option<&str>) -> Result<ListQuery, Error> {
    let mut q = ListQuery::default();
    for (name, value) in list_wire::pairs(query) {
        match name {
            "after" if !value.is_empty() => q.after = Some(value.to_string()),
            "limit" => q.limit = list_wire::limit(value, MAX_LIST_LIMIT)?,
            "order" => {
                q.order = Order::parse(value).ok_or_else(|| {
                    Error::invalid_request(
                        format!("order must be `asc` or `desc`, not `{value}`"),
                        Some("order"),
                    )
                })?;
            }
            "purpose" => q.purpose = Some(purpose(value)?),
            _ => {}
        }
    }
    Ok(q)
}

/// A purpose as a client names it; an unknown one is a 400 that lists them.
pub fn purpose(value: &str) -> Result<Purpose, Error> {
    Purpose::parse(value).ok_or_else(|| {
        let known: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
        Error::invalid_request(
            format!(
                "unknown purpose `{value}`: expected one of {}",
                known.join(", ")
            ),
            Some("purpose"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries() {
        let q = list_query(Some("after=file-abc&limit=2&order=asc&purpose=batch&x=1")).unwrap();
        assert_eq!(q.after.as_deref(), Some("file-abc"));
        assert_eq!(
            (q.limit, q.order, q.purpose),
            (2, Order::Asc, Some(Purpose::Batch))
        );
        assert_eq!(list_query(None).unwrap(), ListQuery::default());
        for (bad, param) in [
            ("limit=0", "limit"),
            ("limit=10001", "limit"),
            ("limit=x", "limit"),
            ("order=up", "order"),
            ("purpose=nope", "purpose"),
        ] {
            assert_eq!(
                list_query(Some(bad)).unwrap_err().param(),
                Some(param),
                "{bad}"
            );
        }
    }
}
