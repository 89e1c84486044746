//! `GET /health/ready`: whether this replica should take traffic. `/health` says the process
//! is alive; this one is 503 `draining` once the shutdown began (a request can still arrive
//! then, on a connection taken before it), and otherwise asks each store the config uses for
//! a cheap answer, within
//! [`CHECK_TIMEOUT`] each, all at once:
//!
//! - the ledger (keys and the spend log, SQLite or PostgreSQL): without it no virtual key can
//!   be looked up, so it failing makes the replica **not ready** (503);
//! - the limiter on Redis and the cache store: sluice serves without them (limits fall back
//!   to in-process counting, the cache misses), so them failing makes it **degraded** (200);
//! - the files (`/v1/files`: their index and their contents' directory): only the Files API
//!   needs them, so them failing makes it **degraded** too.

use crate::response::{json, ResponseBody};
use crate::state::AppState;
use http::{Response, StatusCode};
use sluice_store::{Limiter, StoreError};
use std::future::Future;
use std::time::Duration;

/// Longest wait for one store's answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One store's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// Not configured.
    Off,
    Ok,
    Failed(String),
}

impl Check {
    async fn of(f: impl Future<Output = Result<(), StoreError>>) -> Self {
        match tokio::time::timeout(CHECK_TIMEOUT, f).await {
            Ok(Ok(())) => Self::Ok,
            Ok(Err(e)) => Self::Failed(e.to_string()),
            Err(_) => Self::Failed(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        }
    }

    fn failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Self::Off => serde_json::json!({"status": "off"}),
            Self::Ok => serde_json::json!({"status": "ok"}),
            Self::Failed(e) => serde_json::json!({"status": "failed", "error": e}),
        }
    }
}

/// `GET /health/ready`.
pub async fn ready(state: &AppState) -> Response<ResponseBody> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        let body = serde_json::json!({"status": "draining"});
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_vec(&body).unwrap_or_default(),
        );
    }
    let ledger = async {
        match &state.ledger {
            None => Check::Off,
            Some(l) => Check::of(async { l.window_spend("", "ready").await.map(drop) }).await,
        }
    };
    let limiter = async {
        match &state.limiter {
            Limiter::Memory(_) => Check::Off,
            redis => Check::of(async { redis.spent("ready").await.map(drop) }).await,
        }
    };
    let cache = async {
        match &state.cache {
            None => Check::Off,
            Some(c) => Check::of(c.store_answers()).await,
        }
    };
    let files = async {
        match &state.files {
            None => Check::Off,
            Some(f) => Check::of(f.check()).await,
        }
    };
    let (ledger, limiter, cache, files) = tokio::join!(ledger, limiter, cache, files);
    let (code, status) = if ledger.failed() {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    } else if limiter.failed() || cache.failed() || files.failed() {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ready")
    };
    let body = serde_json::json!({
        "status": status,
        "checks": {
            "ledger": ledger.json(),
            "redis_limiter": limiter.json(),
            "cache_store": cache.json(),
            "files": files.json(),
        },
    });
    json(code, serde_json::to_vec(&body).unwrap_or_default())
}
