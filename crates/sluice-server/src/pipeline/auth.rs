//! Who is calling: with `server.master_key` set, every `/v1` request carries
//! `Authorization: Bearer <key>` (or Anthropic's `x-api-key`), and the key is the master key
//! or a virtual key, looked up by the hash of its secret through the [`KeyCache`] in front of
//! the ledger. Without a master key, sluice is open and nobody is asked.
//!
//! A request sluice makes itself, a batch's line, comes as a [`Caller::BatchLine`]: already
//! authenticated as the key that created the batch; one of the gateway's own stages (the
//! semantic cache's embedding by a remote model) as [`Caller::Gateway`]. Only code in this
//! process can make either (no header, nothing on the wire says it), so a client cannot claim
//! them.
//!
//! [`KeyCache`]: crate::keys::KeyCache

use crate::keys::{bearer, Identity};
use crate::state::AppState;
use http::HeaderMap;
use sluice_core::{keys, Error, ErrorKind};
use std::sync::Arc;
use std::time::Instant;

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client: authenticated from its request's headers.
    Client,
    /// A line of a batch, run in process as the key that created the batch.
    BatchLine {
        /// The batch's creator, as it was authenticated when the batch was made.
        identity: Identity,
        /// The batch (`batch_…`): its lines' spend records carry it.
        batch_id: Arc<str>,
    },
    /// A request the gateway makes for one of its own stages (the semantic cache's embedding
    /// by a remote model): run as the master key would be (no key's limits), its spend
    /// recorded without a key.
    Gateway,
}

impl Caller {
    /// The batch whose line this is.
    pub fn batch_id(&self) -> Option<&str> {
        match self {
            Self::BatchLine { batch_id, .. } => Some(batch_id),
            Self::Client | Self::Gateway => None,
        }
    }

    /// Who the caller is: a client authenticated now, a batch line as its batch's key.
    pub async fn identity(&self, state: &AppState, headers: &HeaderMap) -> Result<Identity, Error> {
        match self {
            Self::Client => authenticate(state, headers).await,
            Self::BatchLine { identity, .. } => Ok(identity.clone()),
            Self::Gateway => Ok(Identity::Master),
        }
    }
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
