//! Who is calling: with `server.master_key` set, every `/v1` request carries
//! `Authorization: Bearer <key>` (or Anthropic's `x-api-key`), and the key is the master key
//! or a virtual key. Virtual keys are looked up by the hash of their secret, in a small
//! in-process cache in front of the ledger (entries trusted for `keys.cache_ttl_ms`,
//! unknown hashes for one second, so a client retrying with a bad key does not reach the
//! database on every request). Without a master key, sluice is open and nobody is asked.

use crate::state::AppState;
use http::HeaderMap;
use sluice_core::{keys, Error, ErrorKind};
use sluice_store::KeyRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an unknown hash is remembered as unknown.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Cached entries at most; past it the cache is cleared (keys are few; bad hashes are not).
const MAX_ENTRIES: usize = 100_000;

/// The caller of one request.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No master key is configured: nobody is asked.
    Open,
    /// The master key.
    Master,
    /// A virtual key.
    Key(Arc<KeyRecord>),
}

impl Identity {
    /// The virtual key, if one was used.
    pub fn key(&self) -> Option<&Arc<KeyRecord>> {
        match self {
            Self::Key(k) => Some(k),
            _ => None,
        }
    }

    /// Whether this caller may use `model` (a model or route name).
    pub fn allows(&self, model: &str) -> bool {
        match self {
            Self::Key(k) => k.models.is_empty() || k.models.iter().any(|m| m == model),
            _ => true,
        }
    }

    /// Refuses a model this caller may not use, with 403.
    pub fn check_model(&self, model: &str) -> Result<(), Error> {
        if self.allows(model) {
            return Ok(());
        }
        let name = self.key().map_or("", |k| k.name.as_str());
        Err(ErrorKind::Permission {
            message: format!("the key `{name}` may not use the model `{model}`"),
        }
        .into())
    }
}

/// A cached lookup: the key (`None`: no key has this hash) and when it was read.
type Entry = (Option<Arc<KeyRecord>>, Instant);

/// Virtual keys by the hash of their secret.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl KeyCache {
    fn get(&self, hash: &str, ttl: Duration, now: Instant) -> Option<Option<Arc<KeyRecord>>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (key, at) = entries.get(hash)?;
        let ttl = if key.is_some() { ttl } else { NEGATIVE_TTL };
        (now.duration_since(*at) < ttl).then(|| key.clone())
    }

    fn put(&self, hash: String, key: Option<Arc<KeyRecord>>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (key, now));
    }

    /// Replaces what the cache knows of a key (after an admin change), so this replica
    /// sees the change at once.
    pub fn update(&self, key: &KeyRecord) {
        self.put(
            key.hash.clone(),
            Some(Arc::new(key.clone())),
            Instant::now(),
        );
    }
}

/// The bearer token of a request: `Authorization: Bearer …`, else `x-api-key`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

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
