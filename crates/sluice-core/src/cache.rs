//! Response cache logic that needs no I/O: the key of a request, the per-request
//! `x-sluice-cache` directives, and the decision whether to look up, store and coalesce.
//!
//! # The key
//! A BLAKE3 hash of a canonical form of what the request means, under a versioned
//! namespace (`sluice.cache.v1`) and the endpoint:
//! - the caller's scope: the virtual key's id under the `key` scope (the default), so one
//!   tenant's entries are never another's; nothing under `global`;
//! - `model` is replaced by the resolved target (the route or model name as configured),
//!   so aliases of one target share entries and two routes never do;
//! - fields that do not change the answer are left out: `stream`, `stream_options`, `user`,
//!   `metadata`, `store`, `service_tier`, `safety_identifier`, `prompt_cache_key`,
//!   `keep_alive`; a streaming and a non-streaming request share one entry;
//! - objects are written with their keys sorted (key order is irrelevant), numbers in one
//!   form (`0`, `0.0` and `-0.0` are the same temperature), and everything else (messages,
//!   tools, sampling parameters, `seed`, `n`, `response_format`, fields sluice does not
//!   know) is kept, so two requests share an entry only when they ask the same thing.
//!
//! The lookup is one exact stage; a semantic stage (nearest cached prompt by embedding)
//! would run after it on a miss, on the same [`RequestKey::canonical`] text.

use crate::config::CachePolicy;
use crate::operation::Operation;
use serde_json::{Map, Number, Value};
use std::time::Duration;

/// Namespace of every key: bump it when the canonical form or the entry format changes.
pub const NAMESPACE: &str = "sluice.cache.v1";

/// Request fields that never change the answer, left out of the key.
const IGNORED: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "keep_alive",
];

/// A request's cache key and what the key's computation learned about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// BLAKE3 of the namespace, endpoint, target and canonical body.
    pub key: [u8; 32],
    /// Whether the request asks for a repeatable answer (temperature 0, or a seed;
    /// embeddings always).
    pub deterministic: bool,
    /// The canonical body that was hashed (for a later semantic stage and for tests).
    pub canonical: String,
}

/// Why a body has no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnObject;

/// The key of a request to `target` (route or model name) on `endpoint`, in the cache
/// `scope` of its caller: `Some(key id)` for a virtual key under the `key` scope (entries of
/// two scopes never mix), `None` for the scope shared by callers without a virtual key, or
/// by everyone under the `global` scope.
pub fn request_key(
    endpoint: Operation,
    target: &str,
    scope: Option<&str>,
    body: &[u8],
) -> Result<RequestKey, NotAnObject> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return Err(NotAnObject);
    };
    let deterministic = match endpoint {
        // The same text, voice, format and speed is the same audio; rankings and
        // classifications are functions of their input.
        Operation::Embeddings | Operation::Speech | Operation::Rerank | Operation::Moderation => {
            true
        }
        // Sampled images, and uploads (never cached: their bodies are not JSON).
        Operation::ImageGeneration
        | Operation::ImageEdit
        | Operation::ImageVariation
        | Operation::Transcription
        | Operation::Translation => false,
        Operation::Chat | Operation::Completion => {
            let zero_temperature = map
                .get("temperature")
                .and_then(Value::as_f64)
                .is_some_and(|t| t == 0.0);
            let seeded = map.get("seed").is_some_and(|s| !s.is_null());
            zero_temperature || seeded
        }
    };
    for k in IGNORED {
        map.remove(*k);
    }
    let canonical = Value::Object(canonical_map(map)).to_string();
    let mut hasher = blake3::Hasher::new();
    for part in [NAMESPACE, endpoint.as_str(), target] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    if let Some(id) = scope {
        hasher.update(b"key\0");
        hasher.update(id.as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(canonical.as_bytes());
    Ok(RequestKey {
        key: *hasher.finalize().as_bytes(),
        deterministic,
        canonical,
    })
}

/// Sorted keys (serde_json's map is a `BTreeMap`), numbers in one form.
fn canonical_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter().map(|(k, v)| (k, canonical(v))).collect()
}

fn canonical(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(canonical_map(m)),
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        Value::Number(n) => Value::Number(canonical_number(n)),
        other => other,
    }
}

/// Integral floats within f64's exact range become integers; `-0.0` becomes `0`.
fn canonical_number(n: Number) -> Number {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Number::from(f as i64)
        }
        _ => n,
    }
}

/// What a client asked of the cache with `x-sluice-cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-cache`: do not look up (nor wait for an identical request); still store.
    pub no_cache: bool,
    /// `no-store`: do not store this answer.
    pub no_store: bool,
    /// `ttl=SECONDS`: store with this lifetime instead of the policy's.
    pub ttl: Option<Duration>,
}

impl Directives {
    /// Parses a comma-separated `x-sluice-cache` value, e.g. `no-cache, ttl=60`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut d = Self::default();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                p => match p.strip_prefix("ttl=").map(str::parse::<u64>) {
                    Some(Ok(s)) if s > 0 => d.ttl = Some(Duration::from_secs(s)),
                    _ => {
                        return Err(format!(
                            "invalid `x-sluice-cache` directive `{part}`: expected `no-cache`, `no-store` or `ttl=SECONDS` (SECONDS > 0)"
                        ))
                    }
                },
            }
        }
        Ok(d)
    }
}

/// Why a request does not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The target's policy has the cache off.
    Disabled,
    /// The request may answer differently each time and the policy does not cache such.
    Nondeterministic,
    /// `no-cache` and `no-store` together.
    Directives,
}

/// What to do with the cache for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Leave the cache out.
    Bypass(Bypass),
    /// Use it.
    Use {
        /// Look the key up first.
        lookup: bool,
        /// Store a successful, complete answer.
        store: bool,
        /// Wait for an identical request already upstream instead of calling again.
        coalesce: bool,
        /// Lifetime of a stored answer.
        ttl: Duration,
    },
}

/// Decides for a request under `policy` with the client's `directives`; `chat` says it is a
/// chat request (whose sampled requests `sampled_chat` covers).
pub fn decide(
    policy: &CachePolicy,
    directives: &Directives,
    (deterministic, chat): (bool, bool),
) -> Decision {
    if !policy.enabled {
        return Decision::Bypass(Bypass::Disabled);
    }
    let sampled_ok = policy.nondeterministic || (chat && policy.sampled_chat);
    if !deterministic && !sampled_ok {
        return Decision::Bypass(Bypass::Nondeterministic);
    }
    if directives.no_cache && directives.no_store {
        return Decision::Bypass(Bypass::Directives);
    }
    Decision::Use {
        lookup: !directives.no_cache,
        store: !directives.no_store,
        coalesce: policy.coalesce && !directives.no_cache,
        ttl: directives.ttl.unwrap_or(policy.ttl),
    }
}

#[cfg(test)]
mod tests;
