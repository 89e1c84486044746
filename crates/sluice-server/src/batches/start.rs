//! Which way a claimed batch goes: forwarded to its provider's own Batch API (already, or
//! now, when [`forward::plan`] finds one provider for every line at its start), or run by
//! sluice ([`Run::go`]). The choice is made once, at the batch's start, and kept in the
//! store (a forwarded batch has its upstream state there).

use super::forward::{self, Next};
use super::runner::Run;
use sluice_store::batches::{BatchStatus, Forward};

/// Takes the batch one run further; `true`: it is forwarded and waits for its next poll.
pub async fn go(run: Run) -> bool {
    match forwarding(&run).await {
        Ok(Some(fwd)) => match forward::step(&run, fwd).await {
            Ok(next) => next == Next::Park,
            Err(e) => {
                tracing::warn!(batch = %run.batch.id, error = %e, "forwarded batch stopped by a store failure");
                false
            }
        },
        Ok(None) => {
            run.go().await;
            false
        }
        Err(e) => {
            tracing::warn!(batch = %run.batch.id, error = %e, "cannot tell whether a batch is forwarded");
            false
        }
    }
}

/// The batch's upstream state when it is forwarded: it was, or it starts now and can be
/// (its key still works and [`forward::plan`] finds a provider).
async fn forwarding(run: &Run) -> Result<Option<Forward>, String> {
    let store = &run.batches.store;
    let id = &run.batch.id;
    if let Some(fwd) = store.forwarded(id).await.map_err(|e| e.to_string())? {
        return Ok(Some(fwd));
    }
    if run.batch.status != BatchStatus::Validating || run.key_stopped().await {
        return Ok(None);
    }
    let identity = run.identity().await?;
    let Some(provider) = forward::plan(run, &identity).await? else {
        return Ok(None);
    };
    let name = run.live.get().providers[provider].name().to_string();
    store
        .forward_to(id, &name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(Forward {
        provider: name,
        ..Forward::default()
    }))
}
