//! The admin API's load and unload of a local model (`POST /admin/local/models/{name}/load`
//! and `/unload`), on the pool: a load is an acquire released at once (so the model's
//! keep-alive then runs as after a request); an unload frees an idle model now.

use super::runtime::LocalRuntime;
use serde_json::{json, Value};
use sluice_core::{Error, ErrorKind};
use sluice_local::pool::{PoolError, PoolErrorKind, Unload};
use std::time::Instant;

/// A pool error as the admin API answers it: 404 for a name the pool does not have, 503
/// (with the pool's reason) for a load that cannot happen now or failed.
fn admin_error(name: &str, e: &PoolError) -> Error {
    match e.kind() {
        PoolErrorKind::NotFound(_) => ErrorKind::NotFound {
            path: format!("/admin/local/models/{name}"),
        }
        .into(),
        _ => ErrorKind::Unavailable {
            message: format!("local model `{name}`: {e}"),
        }
        .into(),
    }
}

/// Loads `name` (waiting for the load), answering how long it took.
pub async fn load(local: &LocalRuntime, name: &str) -> Result<Value, Error> {
    let started = Instant::now();
    let lease = local
        .pool
        .acquire(name, None)
        .await
        .map_err(|e| admin_error(name, &e))?;
    drop(lease);
    tracing::info!(model = %name, "local model loaded by an operator");
    Ok(json!({
        "model": name,
        "state": "loaded",
        "took_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// Unloads `name` if it is idle; one that requests hold is refused (400) with their count.
pub fn unload(local: &LocalRuntime, name: &str) -> Result<Value, Error> {
    match local.pool.unload(name).map_err(|e| admin_error(name, &e))? {
        Unload::Unloaded { bytes } => Ok(json!({"model": name, "state": "unloaded", "freed_bytes": bytes})),
        Unload::NotLoaded => Ok(json!({"model": name, "state": "unloaded", "freed_bytes": 0})),
        Unload::InUse { in_flight } => Err(ErrorKind::InvalidRequest {
            message: format!(
                "local model `{name}` is in use ({in_flight} requests hold or await it): try again when they end"
            ),
            param: None,
        }
        .into()),
    }
}
