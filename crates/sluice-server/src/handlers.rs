//! The endpoints that are not proxied: models, health, metrics.

use crate::request_body::ClientBody;
use crate::response::{error_response, json, ResponseBody};
use crate::state::AppState;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use sluice_core::{ErrorKind, Operation};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// `GET /v1/models`: every model and route, or those a virtual key may use.
pub async fn models(state: &AppState, headers: &http::HeaderMap) -> Response<ResponseBody> {
    let identity = match crate::pipeline::auth::authenticate(state, headers).await {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    if identity.key().is_none_or(|k| k.models.is_empty()) {
        return json(StatusCode::OK, state.models_json.clone());
    }
    match serde_json::from_slice::<serde_json::Value>(&state.models_json) {
        Ok(mut v) => {
            if let Some(data) = v.get_mut("data").and_then(|d| d.as_array_mut()) {
                data.retain(|m| m["id"].as_str().is_some_and(|id| identity.allows(id)));
            }
            json(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => json(StatusCode::OK, state.models_json.clone()),
    }
}

/// `GET /v1/models/{model}`.
pub async fn model(
    state: &AppState,
    headers: &http::HeaderMap,
    id: &str,
) -> Response<ResponseBody> {
    if let Err(e) = crate::pipeline::auth::authenticate(state, headers)
        .await
        .and_then(|i| i.check_model(id))
    {
        return error_response(&e);
    }
    let owner = state.resolve(id).map(|r| match r {
        crate::state::Resolved::Model(d)
        | crate::state::Resolved::Passthrough { deployment: d, .. } => {
            state.providers[state.deployments[d].provider].name()
        }
        crate::state::Resolved::Route(_) => "sluice",
    });
    match owner {
        Ok(owner) => json(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({
                "id": id,
                "object": "model",
                "created": 0,
                "owned_by": owner,
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

/// `GET /health/detailed`: providers, deployments with their breakers and latencies,
/// routes with their canaries.
pub fn health_detailed(state: &AppState) -> Response<ResponseBody> {
    let now = Instant::now();
    let providers: Vec<serde_json::Value> = state
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let models: Vec<&str> = state.deployments[..state.configured_models]
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
                "health_check": state.health_checks.json(p),
            })
        })
        .collect();
    let models: Vec<serde_json::Value> = state
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let s = state.metrics.series(i);
            // Every endpoint's requests to the model (chat, completions, embeddings, media).
            let ops = Operation::ALL.map(|op| s.endpoint(op));
            serde_json::json!({
                "name": &*d.name,
                "provider": state.providers[d.provider].name(),
                "upstream": &*d.upstream,
                "requests": ops.iter().map(|e| e.requests()).sum::<u64>(),
                "upstream_errors": ops.iter().map(|e| e.upstream_errors()).sum::<u64>(),
                "breaker": d.breaker.state(now).as_str(),
                "rate_limited_for_ms": d.breaker.rate_limited_until(now).map(|u| u.duration_since(now).as_millis() as u64),
                "latency_ewma_ms": {"ttft": d.ttft.get(), "total": d.total.get()},
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
        "routes": routes_json(state, now),
        "local": state.local.as_deref().map(crate::local::health),
        "cache": state.cache.as_ref().map(|c| {
            let (entries, bytes) = c.memory_usage();
            let m = &c.metrics;
            serde_json::json!({
                "store": c.store_kind,
                "memory_entries": entries,
                "memory_bytes": bytes,
                "memory_max_bytes": state.cache_config.memory_bytes,
                "hits": m.hits.load(Relaxed),
                "misses": m.misses.load(Relaxed),
                "coalesced": m.coalesced.load(Relaxed),
                "bypasses": m.bypasses.load(Relaxed),
                "flights": c.flights.len(),
                "saved_usd": m.saved_nano_usd.load(Relaxed) as f64 / 1e9,
            })
        }),
    });
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn routes_json(state: &AppState, now: Instant) -> Vec<serde_json::Value> {
    state
        .routes
        .iter()
        .map(|r| {
            let rc = &r.config;
            let targets: Vec<&str> = rc
                .targets
                .iter()
                .map(|&t| &*state.deployments[t].name)
                .collect();
            let canary = r.canary.as_ref().map(|c| {
                let snap = c.snapshot(now);
                serde_json::json!({
                    "target": &*state.deployments[c.config.target].name,
                    "percent": snap.percent,
                    "stage": snap.stage,
                    "stages": c.config.stages,
                    "rollbacks": snap.rollbacks,
                    "last_rollback": snap.last_rollback,
                    "window_requests": snap.window_requests,
                    "window_failures": snap.window_failures,
                })
            });
            serde_json::json!({
                "name": rc.name,
                "strategy": rc.strategy.as_str(),
                "targets": targets,
                "canary": canary,
            })
        })
        .collect()
}

/// Gauges read from live state, appended to the counters of [`crate::metrics::Metrics`].
fn live_gauges(state: &AppState, out: &mut String) {
    use std::fmt::Write;
    let now = Instant::now();
    out.push_str("# HELP sluice_breaker_state Circuit breaker of a deployment: 0 closed, 1 open, 2 half-open.\n# TYPE sluice_breaker_state gauge\n");
    for d in &state.deployments {
        let _ = writeln!(
            out,
            "sluice_breaker_state{{model=\"{}\"}} {}",
            d.name,
            d.breaker.state(now).as_gauge()
        );
    }
    out.push_str("# HELP sluice_deployment_latency_ewma_seconds Moving average of a deployment's latency: time to first byte and to the end.\n# TYPE sluice_deployment_latency_ewma_seconds gauge\n");
    for d in &state.deployments {
        for (kind, e) in [("ttft", &d.ttft), ("total", &d.total)] {
            if let Some(ms) = e.get() {
                let _ = writeln!(
                    out,
                    "sluice_deployment_latency_ewma_seconds{{model=\"{}\",kind=\"{kind}\"}} {}",
                    d.name,
                    ms / 1000.0
                );
            }
        }
    }
    out.push_str("# HELP sluice_canary_percent Share of a route's traffic sent to its canary candidate.\n# TYPE sluice_canary_percent gauge\n");
    for r in &state.routes {
        if let Some(c) = &r.canary {
            let _ = writeln!(
                out,
                "sluice_canary_percent{{route=\"{}\"}} {}",
                r.config.name,
                c.percent(now)
            );
        }
    }
}

/// `GET /metrics`: Prometheus text.
pub fn metrics(state: &AppState) -> Response<ResponseBody> {
    let mut text = state.metrics.render();
    live_gauges(state, &mut text);
    if let Some(c) = &state.cache {
        c.render(&mut text);
    }
    state
        .tab_metrics
        .render(&state.limiter, state.ledger.as_ref(), &mut text);
    if let Some(local) = &state.local {
        crate::local::render(local, &mut text);
    }
    if let Some(batches) = &state.batches {
        batches.render(&mut text);
    }
    if let Some(shared) = &state.shared_routing {
        shared.render(&mut text);
    }
    state.health_checks.render(&state.providers, &mut text);
    state.reloads.render(&mut text);
    if let Some(tracer) = &state.tracer {
        tracer.render(&mut text);
    }
    if let Some(sampler) = &state.samples {
        sampler.writer().render(&mut text);
    }
    let mut r = Response::new(ResponseBody::full(text));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `POST /admin/config/reload`: reads the config again and swaps it in (see
/// [`crate::live`]); a config that does not load is refused with its error and the current
/// one keeps serving.
pub fn admin_reload(state: &AppState, headers: &http::HeaderMap) -> Response<ResponseBody> {
    if let Err(e) = admin_auth(state, headers) {
        return error_response(&e);
    }
    let Some(reload) = state.reload_hook.get() else {
        return error_response(
            &ErrorKind::InvalidRequest {
                message: "this gateway was not started from a config it can read again".into(),
                param: None,
            }
            .into(),
        );
    };
    match (reload.0)() {
        Ok(changes) => {
            let body = serde_json::json!({
                "status": "reloaded",
                "added": changes.added,
                "removed": changes.removed,
                "kept": changes.kept,
            });
            json(
                StatusCode::OK,
                serde_json::to_vec(&body).unwrap_or_default(),
            )
        }
        Err(message) => error_response(
            &ErrorKind::InvalidRequest {
                message,
                param: None,
            }
            .into(),
        ),
    }
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

/// Checks the admin key: `Ok` for the master key, else the error to answer with.
/// Admits the master key only.
/// A status page (`/metrics`, `/health/detailed`): open unless `server.public_status` is
/// `false`, then behind the master key.
pub fn status(
    state: &AppState,
    headers: &http::HeaderMap,
    page: fn(&AppState) -> Response<ResponseBody>,
) -> Response<ResponseBody> {
    match state.server.public_status {
        true => page(state),
        false => admin(state, headers, page),
    }
}

/// A page behind the master key (`/admin/metrics`, `/admin/health`: the console's reads).
pub fn admin(
    state: &AppState,
    headers: &http::HeaderMap,
    page: fn(&AppState) -> Response<ResponseBody>,
) -> Response<ResponseBody> {
    match admin_auth(state, headers) {
        Ok(()) => page(state),
        Err(e) => error_response(&e),
    }
}

pub(crate) fn admin_auth(
    state: &AppState,
    headers: &http::HeaderMap,
) -> Result<(), sluice_core::Error> {
    let Some(key) = &state.master_key else {
        return Err(ErrorKind::Permission {
            message: "the admin API is disabled: set `server.master_key`".into(),
        }
        .into());
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    let want = key.expose().as_bytes();
    // Compare in time independent of where the first difference is.
    let same = given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ErrorKind::Authentication {
            message: "the admin API needs `Authorization: Bearer <server.master_key>`".into(),
        }
        .into())
    }
}

/// `GET /admin/routes`: routes with their canary state.
pub fn admin_routes(state: &AppState, headers: &http::HeaderMap) -> Response<ResponseBody> {
    if let Err(e) = admin_auth(state, headers) {
        return error_response(&e);
    }
    let body = serde_json::json!({"routes": routes_json(state, Instant::now())});
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// `POST /admin/routes/{route}/canary` with `{"action": "advance" | "promote" | "rollback"}`.
pub async fn admin_canary<B: ClientBody>(
    state: &AppState,
    route: &str,
    req: http::Request<B>,
) -> Response<ResponseBody> {
    if let Err(e) = admin_auth(state, req.headers()) {
        return error_response(&e);
    }
    let Some(r) = state.route(route) else {
        return not_found(&format!("/admin/routes/{route}"));
    };
    let Some(canary) = &r.canary else {
        return error_response(
            &ErrorKind::InvalidRequest {
                message: format!("route `{route}` has no canary"),
                param: None,
            }
            .into(),
        );
    };
    let body = match crate::request_body::read_limited(
        req.into_body(),
        None,
        false,
        64 * 1024,
        state.server.request_read_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    #[derive(serde::Deserialize)]
    struct Action {
        action: String,
    }
    let now = Instant::now();
    let action = serde_json::from_slice::<Action>(&body).map(|a| a.action);
    let percent = match action.as_deref() {
        Ok("advance") => canary.advance(now),
        Ok("promote") => canary.promote(now),
        Ok("rollback") => {
            canary.roll_back();
            if let Some(i) = state.routes.iter().position(|x| x.config.name == route) {
                if let Some(rm) = state.metrics.route(i) {
                    rm.canary_rollbacks.fetch_add(1, Relaxed);
                }
            }
            tracing::warn!(route, "canary rolled back by an operator");
            0.0
        }
        _ => {
            return error_response(
                &ErrorKind::InvalidRequest {
                    message: "expected {\"action\": \"advance\" | \"promote\" | \"rollback\"}"
                        .into(),
                    param: Some("action"),
                }
                .into(),
            )
        }
    };
    tracing::info!(route, percent, "canary stage changed");
    json(
        StatusCode::OK,
        serde_json::to_vec(&serde_json::json!({"route": route, "percent": percent}))
            .unwrap_or_default(),
    )
}

/// `GET /admin/cache`: the cache's counters and the store's entries and bytes.
pub async fn admin_cache(state: &AppState, headers: &http::HeaderMap) -> Response<ResponseBody> {
    if let Err(e) = admin_auth(state, headers) {
        return error_response(&e);
    }
    let Some(cache) = &state.cache else {
        return json(StatusCode::OK, &br#"{"enabled":false}"#[..]);
    };
    cache.flush().await;
    let store = match cache.stats().await {
        Ok(s) => serde_json::json!({
            "entries": s.entries,
            "bytes": s.bytes,
            "hits": s.hits,
            "misses": s.misses,
            "saved_usd": s.saved_nano_usd as f64 / 1e9,
            "saved_ms": s.saved_ms,
        }),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    let (entries, bytes) = cache.memory_usage();
    let body = serde_json::json!({
        "enabled": true,
        "store_kind": cache.store_kind,
        "memory": {"entries": entries, "bytes": bytes},
        "store": store,
    });
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// `DELETE /admin/cache`: drops every entry, in memory and in the store.
pub async fn admin_cache_clear(
    state: &AppState,
    headers: &http::HeaderMap,
) -> Response<ResponseBody> {
    if let Err(e) = admin_auth(state, headers) {
        return error_response(&e);
    }
    let removed = match &state.cache {
        None => Ok(0),
        Some(c) => c.clear().await,
    };
    match removed {
        Ok(n) => json(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({"removed": n})).unwrap_or_default(),
        ),
        Err(e) => error_response(
            &ErrorKind::Unavailable {
                message: format!("the cache store failed: {e}"),
            }
            .into(),
        ),
    }
}
