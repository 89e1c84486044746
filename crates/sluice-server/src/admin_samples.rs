//! `GET /admin/samples`: the sampled payloads (`[observability] sample_rate`), newest
//! first, filtered by route, model, deployment, key or request id, paged by cursor (the
//! `next_cursor` of the page before, tagged with the master key as the request log's are:
//! an altered one is refused). See [`crate::samples`] for what is kept.

use crate::admin_query::{self, bad, master, params};
use crate::response::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::{Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice_core::{Error, ErrorKind};
use sluice_store::samples::{SampleQuery, StoredSample, MAX_PAGE};

/// Samples per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 20;
/// What a cursor's tag is made for.
const CURSOR_CONTEXT: &str = "sluice 2026-12 samples cursor";

/// Serves `GET /admin/samples`.
pub async fn serve<B>(state: &AppState, req: &http::Request<B>) -> Response<ResponseBody> {
    let result = async {
        crate::handlers::admin_auth(state, req.headers())?;
        let Some(sampler) = &state.samples else {
            return Err(bad(
                "payload sampling is off: set `[observability] sample_rate` above 0",
                "sample_rate",
            ));
        };
        let secret = master(state);
        let now = sluice_store::unix_now_ms();
        let query = parse(req.uri().query().unwrap_or_default(), now, secret)?;
        let rows = sampler
            .writer()
            .store()
            .list(&query)
            .await
            .map_err(|e| -> Error {
                ErrorKind::Unavailable {
                    message: format!("the samples store failed: {e}"),
                }
                .into()
            })?;
        let next = match rows.last() {
            Some(last) if rows.len() == query.limit as usize => {
                Value::from(cursor(last.id, secret))
            }
            _ => Value::Null,
        };
        let data: Vec<Value> = rows.iter().map(sample_json).collect();
        Ok(json!({"object": "list", "data": data, "next_cursor": next}))
    }
    .await;
    match result {
        Ok(v) => json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
        Err(e) => error_response(&e),
    }
}

/// The query string read into a query: `route`, `model`, `deployment`, `key` (a key's id),
/// `request_id`, `limit` (1 to 100) and `cursor`; anything else is refused by name.
fn parse(query: &str, now_ms: u64, secret: &str) -> Result<SampleQuery, Error> {
    let mut q = SampleQuery {
        now_ms,
        limit: DEFAULT_LIMIT,
        ..SampleQuery::default()
    };
    let known = [
        "route",
        "model",
        "deployment",
        "key",
        "request_id",
        "limit",
        "cursor",
    ];
    for (name, value) in params(query, "/admin/samples", &known)? {
        let text = || Some(value.clone()).filter(|v| !v.is_empty());
        match name {
            "route" => q.route = text(),
            "model" => q.model = text(),
            "deployment" => q.deployment = text(),
            "key" => q.key_id = text(),
            "request_id" => q.request_id = text(),
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("`limit` must be 1 to {MAX_PAGE}"), "limit"))?;
            }
            _ => q.before = Some(read_cursor(&value, secret)?),
        }
    }
    Ok(q)
}

/// The cursor after sample `id`: `ID.TAG`.
fn cursor(id: u64, secret: &str) -> String {
    admin_query::cursor(&id.to_string(), secret, CURSOR_CONTEXT)
}

/// The sample id a cursor names, if this gateway's master key made it.
fn read_cursor(text: &str, secret: &str) -> Result<u64, Error> {
    let at = admin_query::read_cursor(text, secret, CURSOR_CONTEXT)?;
    at.parse().map_err(|_| {
        bad(
            "`cursor` is not one this gateway gave out: start again from the first page",
            "cursor",
        )
    })
}

/// A sample as the admin API shows it: the bodies as the JSON they are.
fn sample_json(s: &StoredSample) -> Value {
    let body = |b: &[u8]| -> Value {
        std::str::from_utf8(b)
            .ok()
            .and_then(|t| RawValue::from_string(t.to_string()).ok())
            .and_then(|raw| serde_json::to_value(raw).ok())
            .unwrap_or(Value::Null)
    };
    let x = &s.sample;
    json!({
        "id": s.id.to_string(),
        "created_at_ms": x.ts_ms,
        "expires_at_ms": x.expires_ms,
        "request_id": x.request_id,
        "key_id": x.key_id,
        "endpoint": x.endpoint,
        "model": x.model,
        "route": x.route,
        "deployment": x.deployment,
        "canary": x.canary,
        "status": x.status,
        "request": body(&x.request),
        "response": x.response.as_deref().map(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_and_bad_ones_refused() {
        let c = cursor(42, "m");
        let q = parse(&format!("route=r%201&limit=5&cursor={c}&key=key_1"), 7, "m").unwrap();
        assert_eq!(q.route.as_deref(), Some("r 1"));
        assert_eq!((q.limit, q.before, q.now_ms), (5, Some(42), 7));
        assert_eq!(q.key_id.as_deref(), Some("key_1"));
        let q = parse("request_id=req+1&model=", 0, "m").unwrap();
        assert_eq!(q.request_id.as_deref(), Some("req 1"));
        assert_eq!(q.model, None);
        assert_eq!(parse("", 0, "m").unwrap().limit, DEFAULT_LIMIT);
        let altered = c.replacen("42.", "41.", 1);
        for bad in [
            "limit=0",
            "limit=101",
            "cursor=abc",
            "cursor=42",
            &format!("cursor={altered}"),
            "colour=red",
            "route=%ZZ",
        ] {
            assert!(parse(bad, 0, "m").is_err(), "{bad}");
        }
        assert!(parse(&format!("cursor={c}"), 0, "another master").is_err());
    }
}
