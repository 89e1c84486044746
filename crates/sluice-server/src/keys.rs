//! Who a caller is ([`Identity`]) and the in-process cache of virtual keys in front of the
//! ledger ([`KeyCache`]: entries trusted for `keys.cache_ttl_ms`, unknown hashes for one
//! second, so a client retrying with a bad key does not reach the database on every
//! request). The stage that authenticates a request is `pipeline::auth`.

use http::HeaderMap;
use sluice_core::{Error, ErrorKind};
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
    /// The cached lookup of `hash`, while fresh (`ttl` for a key, a second for no key).
    pub fn get(&self, hash: &str, ttl: Duration, now: Instant) -> Option<Option<Arc<KeyRecord>>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (key, at) = entries.get(hash)?;
        let ttl = if key.is_some() { ttl } else { NEGATIVE_TTL };
        (now.duration_since(*at) < ttl).then(|| key.clone())
    }

    /// Remembers the lookup of `hash`.
    pub fn put(&self, hash: String, key: Option<Arc<KeyRecord>>, now: Instant) {
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
