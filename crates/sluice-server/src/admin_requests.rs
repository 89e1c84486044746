//! `GET /admin/requests`: the request log, newest first, filtered, a page at a time (the
//! console's request log page reads it). Pages are read by a cursor, never an offset, and
//! each page examines a bounded number of records (see [`sluice_store::ledger::LogQuery`]),
//! so every call answers quickly however large the spend log grows. A cursor carries a tag
//! made with the master key: one that was altered is refused, and replicas that share the
//! master key read each other's.

use crate::admin_query::{self, bad, master, number, params};
use crate::response::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use sluice_core::Error;
use sluice_store::ledger::{LogPage, LogPosition, LogQuery, SpendRecord, StatusFilter, DAY_MS};
use sluice_store::UnixMs;

/// Rows a page holds unless `limit` says otherwise, and at most.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
/// Records a page examines unless `scan` says otherwise, and at most.
const DEFAULT_SCAN: u32 = 100_000;
const MAX_SCAN: u32 = 1_000_000;
/// What a cursor's tag is made for.
const CURSOR_CONTEXT: &str = "sluice 2026-12 request log cursor";

/// `GET /admin/requests?key=&model=&route=&provider=&endpoint=&status=&since=|from=&to=
/// &limit=&scan=&cursor=`.
pub async fn serve<B>(state: &AppState, req: &http::Request<B>) -> Response<ResponseBody> {
    let result = async {
        crate::handlers::admin_auth(state, req.headers())?;
        let ledger = crate::admin_keys::ledger(state)?;
        let secret = master(state);
        let now = sluice_store::unix_now_ms();
        let query = parse(req.uri().query().unwrap_or_default(), now, secret)?;
        ledger.flush().await;
        let page = ledger
            .log(query)
            .await
            .map_err(|e| crate::admin_keys::store_error(&e))?;
        let body = serde_json::to_vec(&page_json(&page, secret)).unwrap_or_default();
        Ok::<_, Error>(json(StatusCode::OK, body))
    }
    .await;
    result.unwrap_or_else(|e| error_response(&e))
}

/// Reads the query string into a log query; every parameter it does not know is refused.
fn parse(query: &str, now: UnixMs, secret: &str) -> Result<LogQuery, Error> {
    let mut q = LogQuery::all(DEFAULT_LIMIT, DEFAULT_SCAN);
    let (mut since, mut from, mut to) = (None, None, None);
    let known = [
        "key", "model", "route", "provider", "endpoint", "status", "since", "from", "to", "limit",
        "scan", "cursor",
    ];
    for (name, value) in params(query, "/admin/requests", &known)? {
        let text = || Some(value.clone()).filter(|v| !v.is_empty());
        match name {
            "key" => q.key = text(),
            "model" => q.model = text(),
            "route" => q.route = text(),
            "provider" => q.provider = text(),
            "endpoint" => q.endpoint = text(),
            "status" if value.is_empty() => {}
            "status" => {
                q.status = Some(StatusFilter::parse(&value).ok_or_else(|| {
                    bad(
                        "`status` must be a status code (100-599), `errors` or `ok`",
                        "status",
                    )
                })?)
            }
            "since" => since = text(),
            "from" => from = text(),
            "to" => to = text(),
            "limit" => q.limit = number(&value, "limit", 1..=MAX_LIMIT)?,
            "scan" => q.scan_limit = number(&value, "scan", 1..=MAX_SCAN)?,
            "cursor" if value.is_empty() => {}
            _ => q.after = Some(read_cursor(&value, secret)?),
        }
    }
    // A page examines at least one record past a full page, to know whether another follows.
    q.scan_limit = q.scan_limit.max(q.limit + 1);
    q.since = match (since, from) {
        (Some(_), Some(_)) => return Err(bad("give either `since` or `from`, not both", "since")),
        (Some(s), None) => sluice_store::ledger::since(&s, now).map_err(|e| bad(e, "since"))?,
        (None, Some(f)) => {
            instant(&f, false).ok_or_else(|| bad(time_message("from", &f), "from"))?
        }
        (None, None) => 0,
    };
    if let Some(t) = to {
        q.until = instant(&t, true).ok_or_else(|| bad(time_message("to", &t), "to"))?;
    }
    if q.until <= q.since {
        return Err(bad(
            "the period is backwards: `to` is before its start",
            "to",
        ));
    }
    Ok(q)
}

fn time_message(name: &str, text: &str) -> String {
    format!(
        "`{name}` must be a UTC date (YYYY-MM-DD), a UTC time (YYYY-MM-DDTHH:MM[:SS][Z]) or \
         Unix milliseconds, not `{text}`"
    )
}

/// A period's bound: Unix ms; a UTC day (its start, or for the end of a period the start
/// of the next day: the day is included); or a UTC time to the minute or second.
fn instant(text: &str, end: bool) -> Option<UnixMs> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').unwrap_or(t))),
        None => (text, None),
    };
    let day = u64::try_from(sluice_store::ledger::parse_day(date)?).ok()?;
    let Some(time) = time else {
        return Some((day + u64::from(end)) * DAY_MS);
    };
    let mut parts = time.split(':');
    let mut field = |max: u64| -> Option<u64> {
        let p = parts.next()?;
        let n: u64 = p.parse().ok().filter(|_| p.len() == 2)?;
        (n < max).then_some(n)
    };
    let (h, m) = (field(24)?, field(60)?);
    let s = match time.matches(':').count() {
        1 => 0,
        2 => field(60)?,
        _ => return None,
    };
    Some(day * DAY_MS + ((h * 60 + m) * 60 + s) * 1000)
}

/// The cursor of `position`: `TS.ID.TAG`.
fn cursor(position: LogPosition, secret: &str) -> String {
    let at = format!("{}.{}", position.ts_ms, position.id);
    admin_query::cursor(&at, secret, CURSOR_CONTEXT)
}

/// The position a cursor names, if this gateway's master key made it.
fn read_cursor(text: &str, secret: &str) -> Result<LogPosition, Error> {
    let at = admin_query::read_cursor(text, secret, CURSOR_CONTEXT)?;
    let position = at.split_once('.').and_then(|(ts, id)| {
        Some(LogPosition {
            ts_ms: ts.parse().ok()?,
            id: id.parse().ok()?,
        })
    });
    position.ok_or_else(|| {
        bad(
            "`cursor` is not one this gateway gave out: start again from the first page",
            "cursor",
        )
    })
}

/// A page as JSON: `data` (records, newest first), `next_cursor` (`null` at the end),
/// `partial` (the search stopped at its bound before the page filled) and, then,
/// `searched_to_ms`, where it stopped.
fn page_json(page: &LogPage, secret: &str) -> Value {
    let data: Vec<Value> = page
        .rows
        .iter()
        .map(|row| {
            let mut v = record_json(&row.record);
            v["id"] = json!(row.id);
            v
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "next_cursor": page.next.map(|p| cursor(p, secret)),
        "partial": page.partial,
        "searched_to_ms": page.partial.then(|| page.next.map(|p| p.ts_ms)).flatten(),
    })
}

/// One record of the log as JSON: every column, the cost in USD beside its nano-USD.
fn record_json(r: &SpendRecord) -> Value {
    json!({
        "ts_ms": r.ts_ms,
        "request_id": r.request_id,
        "key_id": r.key_id,
        "key_name": r.key_name,
        "endpoint": r.endpoint,
        "route": r.route,
        "model": r.model,
        "provider": r.provider,
        "status": r.status,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens,
        "cache_write_tokens": r.cache_write_tokens,
        "reasoning_tokens": r.reasoning_tokens,
        "cost_nano_usd": r.cost_nano_usd,
        "cost_usd": r.cost_nano_usd as f64 / 1e9,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "cache": r.cache,
        "attempts": r.attempts,
        "stream": r.stream,
        "usage_estimated": r.usage_estimated,
        "batch_id": r.batch_id,
        "guardrails": r.guardrails,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 20_791 * DAY_MS + 3_600_000;

    #[test]
    fn filters_periods_and_pages_are_read() {
        let q = parse(
            "key=ops&model=gpt%2D4o&status=errors&from=2026-12-01&to=2026-12-02&limit=20",
            NOW,
            "m",
        )
        .unwrap();
        assert_eq!(q.key.as_deref(), Some("ops"));
        assert_eq!(q.model.as_deref(), Some("gpt-4o"));
        assert_eq!(q.status, Some(StatusFilter::Errors));
        assert_eq!(q.since, 20_788 * DAY_MS);
        assert_eq!(q.until, 20_790 * DAY_MS);
        assert_eq!(q.limit, 20);
        let q = parse("since=1h&to=2026-12-04T00:30", NOW, "m").unwrap();
        assert_eq!(q.since, NOW - 3_600_000);
        assert_eq!(q.until, 20_791 * DAY_MS + 1_800_000);
        let q = parse("", NOW, "m").unwrap();
        assert_eq!((q.since, q.until, q.limit), (0, UnixMs::MAX, DEFAULT_LIMIT));
    }

    #[test]
    fn bad_queries_are_refused_naming_what_is_wrong() {
        let message = |q: &str| parse(q, NOW, "m").unwrap_err().message();
        assert!(message("colour=red").contains("`colour` is not a parameter of `/admin/requests`"));
        assert!(message("from=2026-12-03&to=2026-12-01").contains("backwards"));
        assert!(message("from=yesterday").contains("`from` must be"));
        assert!(message("to=2026-12-01T25:00").contains("`to` must be"));
        assert!(message("status=teapot").contains("`status`"));
        assert!(message("limit=0").contains("`limit`"));
        assert!(message("limit=501").contains("`limit`"));
        assert!(message("since=1h&from=2026-12-01").contains("either"));
        assert!(message("model=%ZZ").contains("URL-encoded"));
    }

    #[test]
    fn cursors_round_trip_and_altered_ones_are_refused() {
        let p = LogPosition {
            ts_ms: 1_764_800_000_123,
            id: 42,
        };
        let c = cursor(p, "master");
        assert_eq!(read_cursor(&c, "master").unwrap(), p);
        let altered = c.replacen(".42.", ".41.", 1);
        for bad in [altered.as_str(), "1.2", "", "x.y.z", &c[..c.len() - 1]] {
            let e = read_cursor(bad, "master").unwrap_err();
            assert!(
                e.message().contains("not one this gateway gave out"),
                "{bad}"
            );
        }
        assert!(read_cursor(&c, "another master").is_err());
    }

    #[test]
    fn a_small_scan_still_sees_past_a_full_page() {
        let q = parse("limit=100&scan=10", NOW, "m").unwrap();
        assert_eq!(q.scan_limit, 101);
    }
}
