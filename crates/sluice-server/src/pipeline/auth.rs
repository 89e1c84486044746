//! Who is calling: with `server.master_key` set, every `/v1` request carries
//! `Authorization: Bearer <key>` (or Anthropic's `x-api-key`), and the key is the master key
//! or a virtual key, looked up by the hash of its secret through the [`KeyCache`] in front of
//! the ledger. Without a master key, sluice is open and nobody is asked.
//!
//! [`KeyCache`]: crate::keys::KeyCache

use crate::keys::{bearer, Identity};
use crate::state::AppState;
use http::HeaderMap;
use sluice_core::{keys, Error, ErrorKind};
use std::sync::Arc;
use std::time::Instant;

fn unauthorized(message: &str) -> Error {
    ErrorKind::Authentication {
        message: message.to_string(),
    }
    .into()
}

/// Authenticates one `/v1` request.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Identity, Error> {
    let result = identify(state, headers).await;
    if result.as_ref().is_err_and(|e| e.status_code() == 401) {
        state
            .tab_metrics
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    result
}

async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Identity, Error> {
    let Some(master) = &state.master_key else {
        return Ok(Identity::Open);
    };
    let Some(token) = bearer(headers) else {
        return Err(unauthorized(
            "missing API key: send `Authorization: Bearer <key>`",
        ));
    };
    if keys::same_secret(token, master.expose()) {
        return Ok(Identity::Master);
    }
    let hash = keys::hash(token);
    let now = Instant::now();
    let ttl = state.keys_config.cache_ttl;
    let key = match state.keys.get(&hash, ttl, now) {
        Some(k) => k,
        None => {
            let Some(ledger) = &state.ledger else {
                return Err(unauthorized("invalid API key"));
            };
            let found = ledger.key_by_hash(&hash).await.map_err(|e| -> Error {
                tracing::warn!(error = %e, "key lookup failed");
                ErrorKind::Unavailable {
                    message: "cannot check the API key right now: the key store is unavailable"
                        .into(),
                }
                .into()
            })?;
            let found = found.map(Arc::new);
            state.keys.put(hash, found.clone(), now);
            found
        }
    };
    let Some(key) = key else {
        return Err(unauthorized("invalid API key"));
    };
    let unix_ms = sluice_store::unix_now_ms();
    if key.revoked_ms.is_some() {
        return Err(unauthorized("this API key has been revoked"));
    }
    if key.expires_ms.is_some_and(|e| e <= unix_ms) {
        return Err(unauthorized("this API key has expired"));
    }
    Ok(Identity::Key(key))
}
