//! Virtual keys and spend reports, for the admin API (`/admin/keys`, `/admin/spend`) and
//! the CLI (`sluice keys`, `sluice spend`), which share these functions.
//!
//! A key is made from a JSON object of settings, read into a [`NewKeySpec`]; an update
//! applies a [`KeySpec`] (see [`crate::key_spec`] for the fields). The secret is returned
//! once, by create, and never again.

use crate::admin_query::{self, bad as param_error};
use crate::key_spec::bad;
use crate::request_body::ClientBody;
use crate::response::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};
use sluice_core::{keys, Error, ErrorKind};
use sluice_store::{Dimension, KeyRecord, Ledger, LimitId, Report};

pub use crate::key_spec::{KeySpec, NewKeySpec};
pub use crate::money::usd;

pub(crate) fn store_error(e: &sluice_store::StoreError) -> Error {
    ErrorKind::Unavailable {
        message: format!("the key store failed: {e}"),
    }
    .into()
}

/// A key as the admin API and the CLI show it: never the secret. `spent` is its spend in
/// the current budget window, in nano-USD.
pub fn key_json(k: &KeyRecord, spent: u64, now: u64) -> Value {
    let secs = |ms: Option<u64>| ms.map(|ms| ms / 1000);
    let status = if k.revoked_ms.is_some() {
        "revoked"
    } else if k.expires_ms.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    json!({
        "id": k.id,
        "name": k.name,
        "hint": k.hint,
        "status": status,
        "models": k.models,
        "guardrails": k.guardrails,
        "rpm": k.rpm,
        "tpm": k.tpm,
        "max_concurrent": k.max_concurrent,
        "budget_usd": k.budget_nano_usd.map(|n| n as f64 / 1e9),
        "budget_period": k.budget_period.as_str(),
        "spend_usd": spent as f64 / 1e9,
        "metadata": serde_json::from_str::<Value>(&k.metadata).unwrap_or_else(|_| json!({})),
        "created_at": k.created_ms / 1000,
        "expires_at": secs(k.expires_ms),
        "revoked_at": secs(k.revoked_ms),
    })
}

/// Makes a key from `spec` and stores it; returns the record and its secret.
pub async fn create(
    ledger: &Ledger,
    spec: &NewKeySpec,
    now: u64,
) -> Result<(KeyRecord, String), Error> {
    let mut secret = keys::new_secret()
        .map_err(|message| -> Error { ErrorKind::Internal { message }.into() })?;
    if let Some(given) = &spec.secret {
        // An operator's own secret (a key moved from another gateway, say).
        secret.hash = keys::hash(given);
        secret.hint = keys::hint(given);
        secret.secret.clone_from(given);
        if ledger
            .key_by_hash(&secret.hash)
            .await
            .map_err(|e| store_error(&e))?
            .is_some()
        {
            return Err(bad("a key with this secret already exists"));
        }
    }
    let mut key = KeyRecord {
        id: secret.id,
        hash: secret.hash,
        hint: secret.hint,
        metadata: "{}".into(),
        created_ms: now,
        ..KeyRecord::default()
    };
    spec.settings.apply(&mut key, now);
    ledger.save_key(&key).await.map_err(|e| store_error(&e))?;
    Ok((key, secret.secret))
}

/// Finds a key by id or name; 404 when there is none.
pub async fn find(ledger: &Ledger, id: &str) -> Result<KeyRecord, Error> {
    ledger
        .key(id)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(|| {
            ErrorKind::NotFound {
                path: format!("/admin/keys/{id}"),
            }
            .into()
        })
}

/// Applies `spec` to the key `id` and stores it.
pub async fn update(
    ledger: &Ledger,
    id: &str,
    spec: &KeySpec,
    now: u64,
) -> Result<KeyRecord, Error> {
    let mut key = find(ledger, id).await?;
    spec.apply(&mut key, now);
    ledger.save_key(&key).await.map_err(|e| store_error(&e))?;
    Ok(key)
}

/// Revokes the key `id` (it stays listed, marked revoked).
pub async fn revoke(ledger: &Ledger, id: &str, now: u64) -> Result<KeyRecord, Error> {
    let mut key = find(ledger, id).await?;
    if key.revoked_ms.is_none() {
        key.revoked_ms = Some(now);
        ledger.save_key(&key).await.map_err(|e| store_error(&e))?;
    }
    Ok(key)
}

/// The key's spend in its current budget window, from the spend log.
pub async fn logged_spend(ledger: &Ledger, k: &KeyRecord, now: u64) -> u64 {
    let (window, _) = k.budget_period.window(now);
    ledger.window_spend(&k.id, &window).await.unwrap_or(0)
}

/// A report as JSON.
pub fn report_json(by: Dimension, since: u64, report: &Report) -> Value {
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|r| {
            json!({
                "group": r.group,
                "requests": r.requests,
                "errors": r.errors,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "cached_tokens": r.cached_tokens,
                "cache_write_tokens": r.cache_write_tokens,
                "reasoning_tokens": r.reasoning_tokens,
                "cost_usd": r.cost_nano_usd as f64 / 1e9,
            })
        })
        .collect();
    json!({
        "by": by.name(),
        "since": since / 1000,
        "from_rollups": report.from_rollups,
        "total_usd": report.rows.iter().map(|r| r.cost_nano_usd).sum::<u64>() as f64 / 1e9,
        "rows": rows,
    })
}

// === the admin API ===

pub(crate) fn ledger(state: &AppState) -> Result<&Ledger, Error> {
    state.ledger.as_ref().ok_or_else(|| {
        ErrorKind::InvalidRequest {
            message: "the spend log and key store are off (`spend.enabled = false` and no `server.master_key`)".into(),
            param: None,
        }
        .into()
    })
}

async fn spec_of<B: ClientBody>(state: &AppState, body: B) -> Result<Map<String, Value>, Error> {
    let bytes = crate::request_body::read_limited(
        body,
        None,
        false,
        64 * 1024,
        state.server.request_read_timeout,
    )
    .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("invalid JSON: {e}"))),
    }
}

async fn current_spend(state: &AppState, ledger: &Ledger, k: &KeyRecord, now: u64) -> u64 {
    let (window, _) = k.budget_period.window(now);
    let name = LimitId::KeyBudget {
        key: k.id.clone(),
        window,
    }
    .name();
    if state.seeded_contains(&name) {
        if let Ok(spent) = state.limiter.spent(&name).await {
            return spent;
        }
    }
    logged_spend(ledger, k, now).await
}

fn ok(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    json(status, serde_json::to_vec(v).unwrap_or_default())
}

/// `/admin/keys` and `/admin/keys/{id}`: `rest` is what follows `/admin/keys`.
pub async fn serve<B: ClientBody>(
    state: &AppState,
    rest: &str,
    req: http::Request<B>,
) -> Response<ResponseBody> {
    match serve_keys(state, rest, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn serve_keys<B: ClientBody>(
    state: &AppState,
    rest: &str,
    req: http::Request<B>,
) -> Result<Response<ResponseBody>, Error> {
    crate::handlers::admin_auth(state, req.headers())?;
    let ledger = ledger(state)?;
    let now = sluice_store::unix_now_ms();
    let id = rest.trim_start_matches('/');
    let method = req.method().clone();
    match (method, id.is_empty()) {
        (http::Method::POST, true) => {
            let spec = NewKeySpec::from_json(spec_of(state, req.into_body()).await?)?;
            spec.settings
                .check_guardrails(|g| state.guardrail(g).is_some())?;
            let (key, secret) = create(ledger, &spec, now).await?;
            state.keys.update(&key);
            tracing::info!(id = %key.id, name = %key.name, "key created");
            let mut v = key_json(&key, 0, now);
            v["key"] = Value::String(secret);
            Ok(ok(StatusCode::CREATED, &v))
        }
        (http::Method::GET, true) => {
            let all = ledger.keys().await.map_err(|e| store_error(&e))?;
            let mut data = Vec::with_capacity(all.len());
            for k in &all {
                let spent = current_spend(state, ledger, k, now).await;
                data.push(key_json(k, spent, now));
            }
            Ok(ok(StatusCode::OK, &json!({"object": "list", "data": data})))
        }
        (http::Method::GET, false) => {
            let k = find(ledger, id).await?;
            let spent = current_spend(state, ledger, &k, now).await;
            Ok(ok(StatusCode::OK, &key_json(&k, spent, now)))
        }
        (http::Method::PATCH | http::Method::POST | http::Method::PUT, false) => {
            let spec = KeySpec::from_json(spec_of(state, req.into_body()).await?)?;
            spec.check_guardrails(|g| state.guardrail(g).is_some())?;
            let k = update(ledger, id, &spec, now).await?;
            state.keys.update(&k);
            tracing::info!(id = %k.id, name = %k.name, "key updated");
            let spent = current_spend(state, ledger, &k, now).await;
            Ok(ok(StatusCode::OK, &key_json(&k, spent, now)))
        }
        (http::Method::DELETE, false) => {
            let k = revoke(ledger, id, now).await?;
            state.keys.update(&k);
            tracing::info!(id = %k.id, name = %k.name, "key revoked");
            let spent = current_spend(state, ledger, &k, now).await;
            Ok(ok(StatusCode::OK, &key_json(&k, spent, now)))
        }
        (m, _) => Err(ErrorKind::MethodNotAllowed {
            method: m.to_string(),
            path: format!("/admin/keys{rest}"),
        }
        .into()),
    }
}

/// `GET /admin/spend?by=key|model|provider|route|day&since=7d`, or with `from=YYYY-MM-DD`
/// and `to=YYYY-MM-DD` (UTC days, both included) for a range.
pub async fn spend<B>(state: &AppState, req: &http::Request<B>) -> Response<ResponseBody> {
    let result = async {
        crate::handlers::admin_auth(state, req.headers())?;
        let ledger = ledger(state)?;
        let now = sluice_store::unix_now_ms();
        let query = SpendQuery::parse(req.uri().query().unwrap_or_default(), now)?;
        ledger.flush().await;
        let report = ledger
            .report_between(query.by, query.since, query.until, now)
            .await
            .map_err(|e| store_error(&e))?;
        Ok::<_, Error>(ok(
            StatusCode::OK,
            &report_json(query.by, query.since, &report),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_response(&e))
}

/// What `/admin/spend` is asked: a grouping and a period, in Unix ms.
#[derive(Debug, PartialEq, Eq)]
struct SpendQuery {
    by: Dimension,
    since: u64,
    until: u64,
}

impl SpendQuery {
    /// Reads `by`, and `since` (a duration back from `now`, default `7d`) or `from` and
    /// `to` (UTC days; `to` alone ends a `since` period). Any other parameter, one given
    /// twice, or a value that is not one is refused with a 400 naming it.
    fn parse(query: &str, now: u64) -> Result<Self, Error> {
        let mut by = Dimension::Key;
        let (mut since, mut from, mut to) = (None, None, None);
        let known = ["by", "since", "from", "to"];
        for (name, value) in admin_query::params(query, "/admin/spend", &known)? {
            match name {
                "by" => {
                    by = Dimension::parse(&value).ok_or_else(|| {
                        param_error(
                            "`by` must be `key`, `model`, `provider`, `route` or `day`",
                            "by",
                        )
                    })?
                }
                "since" => since = Some(value),
                "from" => from = Some(day_param("from", &value)?),
                _ => to = Some(day_param("to", &value)?),
            }
        }
        let since = match (since, from) {
            (Some(_), Some(_)) => {
                return Err(param_error(
                    "give either `since` or `from`, not both",
                    "since",
                ))
            }
            (_, Some(day)) => day * sluice_store::ledger::DAY_MS,
            (text, None) => sluice_store::ledger::since(text.as_deref().unwrap_or("7d"), now)
                .map_err(|e| param_error(e, "since"))?,
        };
        let until = to.map_or(u64::MAX, |day| (day + 1) * sluice_store::ledger::DAY_MS);
        if until <= since {
            return Err(param_error(
                "the period is backwards: `to` is before its start",
                "to",
            ));
        }
        Ok(Self { by, since, until })
    }
}

/// A `from` or `to` day: its number (days since 1970-01-01).
fn day_param(name: &'static str, text: &str) -> Result<u64, Error> {
    sluice_store::ledger::parse_day(text)
        .and_then(|d| u64::try_from(d).ok())
        .ok_or_else(|| {
            param_error(
                format!("`{name}` must be a UTC date written YYYY-MM-DD, not `{text}`"),
                name,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_store::ledger::DAY_MS;

    #[test]
    fn spend_queries_read_a_period() {
        let now = 20_790 * DAY_MS + 5;
        let q = SpendQuery::parse("by=day&from=2026-12-01&to=2026-12-02", now).unwrap();
        assert_eq!(
            q,
            SpendQuery {
                by: Dimension::Day,
                since: 20_788 * DAY_MS,
                until: 20_790 * DAY_MS
            }
        );
        let q = SpendQuery::parse("since=1d", now).unwrap();
        assert_eq!(
            (q.by, q.since, q.until),
            (Dimension::Key, now - DAY_MS, u64::MAX)
        );
        let one_day = SpendQuery::parse("from=2026-12-01&to=2026-12-01", now).unwrap();
        assert_eq!(one_day.until - one_day.since, DAY_MS);
        for (query, says) in [
            ("from=2026-12-02&to=2026-12-01", "backwards"),
            ("from=2026-02-30", "`from` must be a UTC date"),
            ("to=yesterday", "`to` must be a UTC date"),
            ("since=7d&from=2026-12-01", "either"),
            ("by=week", "`day`"),
            ("since=7x", "7x"),
        ] {
            let e = SpendQuery::parse(query, now).unwrap_err();
            assert_eq!(e.status_code(), 400, "{query}");
            assert!(e.to_string().contains(says), "{query}: {e}");
        }
    }

    /// A misspelt parameter is not quietly ignored (`form=` would report the default 7
    /// days): it, and anything else the report does not read, is refused by name.
    #[test]
    fn spend_queries_refuse_what_they_do_not_read() {
        let now = 20_790 * DAY_MS + 5;
        let param = |e: &Error| match e.kind() {
            ErrorKind::InvalidRequest { param, .. } => *param,
            _ => None,
        };
        for (query, says, names) in [
            (
                "form=2026-12-01",
                "`form` is not a parameter of `/admin/spend`",
                "query",
            ),
            ("by=model&colour=red", "`colour`", "query"),
            ("by=key&by=model", "`by` is given more than once", "by"),
            ("since=%ZZ", "`since` is not URL-encoded", "since"),
            ("from=2026-12-40", "`from` must be a UTC date", "from"),
            ("by=week", "`by` must be", "by"),
            ("from=2026-12-02&to=2026-12-01", "backwards", "to"),
        ] {
            let e = SpendQuery::parse(query, now).unwrap_err();
            assert_eq!(e.status_code(), 400, "{query}");
            assert!(e.to_string().contains(says), "{query}: {e}");
            assert_eq!(param(&e), Some(names), "{query}");
        }
        let q = SpendQuery::parse("by=route&since=1d&", now).unwrap();
        assert_eq!((q.by, q.since), (Dimension::Route, now - DAY_MS));
        let q = SpendQuery::parse("since=1%64", now).unwrap();
        assert_eq!(q.since, now - DAY_MS);
    }
}
