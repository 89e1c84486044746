//! Batches forwarded to a provider's own Batch API (OpenAI's), when every line's model is
//! a model of one `openai` provider with `batch = "native"` (see [`input::plan`]).
//!
//! A forwarded batch goes step by step, each step a short run of the batch under its lease,
//! its upstream state kept in the store (`batch_upstreams`) after each: its input lines
//! that can run written with the upstream's model names and uploaded (`POST /files`,
//! purpose `batch`), the upstream batch made (`POST /batches`, its `metadata` naming
//! sluice's batch, so a create whose answer was lost is found again rather than sent
//! twice), then polled (`GET /batches/{id}`) every `[batches] poll_interval_ms`, the batch
//! parked between two polls (not running, its lease let go until the next). Its status and
//! counts follow the upstream's; a cancel is passed on (`POST /batches/{id}/cancel`). When
//! the upstream batch ends, its output and error files are collected into the batch's
//! results (`collect`: sluice's ids, the client's model names, one spend record per answered
//! line at the batch price) and written out as any batch's. A provider that cannot be
//! reached, or is busy, is asked again at the next poll; one that refuses fails the batch.
//!
//! The files: this one (the steps), `input` (the plan and the lines sent), `upstream` (the
//! calls), `collect` (the results).

mod collect;
mod input;
mod upstream;

pub use input::plan;

use super::output;
use super::runner::Run;
use collect::Collector;
use serde_json::json;
use sluice_providers::Provider;
use sluice_store::batches::{BatchStatus, Forward};
use sluice_store::KeyRecord;
use std::sync::Arc;
use upstream::{Failure, FileObject, UpstreamBatch};

/// What follows a step of a forwarded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next poll.
    Park,
    /// The batch has ended.
    Done,
}

fn text(e: sluice_store::StoreError) -> String {
    e.to_string()
}

/// Runs the next step of the forwarded batch `run`, whose upstream state is `fwd`.
pub async fn step(run: &Run, fwd: Forward) -> Result<Next, String> {
    let state = run.live.get();
    let provider = state
        .providers
        .iter()
        .find(|p| p.name() == fwd.provider && p.batch_api().is_some())
        .cloned();
    let Some(provider) = provider else {
        let m = format!(
            "the provider `{}` the batch was forwarded to is no longer configured with `batch = \"native\"`",
            fwd.provider
        );
        return fail(run, "provider_not_found", m, None).await;
    };
    let now = run
        .batches
        .store
        .get_any(&run.batch.id)
        .await
        .map_err(text)?;
    let Some(status) = now.map(|b| b.status) else {
        return Ok(Next::Done);
    };
    let key_stopped = run.key_stopped().await;
    let result = match &fwd.upstream_id {
        None if key_stopped => {
            let errors = super::runner::key_stopped_errors(&run.batch);
            return fail(run, "key_revoked", String::new(), Some(errors)).await;
        }
        None => make(run, &provider, &fwd, status).await,
        Some(upstream_id) => {
            let polling = Polling {
                upstream_id,
                status,
                key_stopped,
            };
            poll(run, &provider, &fwd, polling).await
        }
    };
    match result {
        Ok(next) => Ok(next),
        Err(Failure::Transient(m)) => {
            tracing::warn!(batch = %run.batch.id, provider = %fwd.provider, error = %m, "forwarded batch: trying again at the next poll");
            Ok(Next::Park)
        }
        Err(Failure::Refused(m)) => fail(run, "upstream_error", m, None).await,
    }
}

/// Uploads the input and makes the upstream batch.
async fn make(
    run: &Run,
    provider: &Arc<Provider>,
    fwd: &Forward,
    status: BatchStatus,
) -> Result<Next, Failure> {
    let (store, id) = (&run.batches.store, &run.batch.id);
    let transient = |e: sluice_store::StoreError| Failure::Transient(e.to_string());
    if status == BatchStatus::Cancelling {
        // Nothing runs upstream yet: cancelled here.
        output::finish(&run.batches, &run.batch, BatchStatus::Cancelled)
            .await
            .map_err(Failure::Transient)?;
        return Ok(Next::Done);
    }
    let Some(total) = run.validate().await.map_err(Failure::Transient)? else {
        return Ok(Next::Done);
    };
    let api = provider
        .batch_api()
        .ok_or_else(|| Failure::Refused("no batch API".into()))?;
    let file_id = match &fwd.file_id {
        Some(f) => f.clone(),
        None => {
            let index = run
                .live
                .get()
                .providers
                .iter()
                .position(|p| Arc::ptr_eq(p, provider))
                .unwrap_or_default();
            let spooled = input::spool(run, index).await?;
            let file: FileObject = upstream::json(provider, api.upload(spooled)).await?;
            store.forward_file(id, &file.id).await.map_err(transient)?;
            file.id
        }
    };
    let found = if fwd.create_sent {
        find(run, provider).await?
    } else {
        None
    };
    let made = match found {
        Some(b) => b,
        None => {
            store.forward_create_sent(id).await.map_err(transient)?;
            let body = json!({"input_file_id": file_id, "endpoint": run.batch.endpoint,
                "completion_window": "24h", "metadata": {"sluice_batch_id": id}});
            let body = bytes::Bytes::from(body.to_string());
            upstream::json::<UpstreamBatch>(provider, api.create(body)).await?
        }
    };
    store.forward_made(id, &made.id).await.map_err(transient)?;
    tracing::info!(batch = %id, provider = provider.name(), upstream = %made.id, "batch forwarded");
    // `false`: cancelled meanwhile; the next poll passes the cancel on.
    store.start(id, total).await.map_err(transient)?;
    Ok(Next::Park)
}

/// The upstream batch made for this one by a create whose answer was lost, if any.
async fn find(run: &Run, provider: &Provider) -> Result<Option<UpstreamBatch>, Failure> {
    let api = provider
        .batch_api()
        .ok_or_else(|| Failure::Refused("no batch API".into()))?;
    let list: upstream::BatchList = upstream::json(provider, api.list()).await?;
    Ok(list.data.into_iter().find(|b| {
        b.metadata
            .as_ref()
            .and_then(|m| m.get("sluice_batch_id"))
            .and_then(serde_json::Value::as_str)
            == Some(run.batch.id.as_str())
    }))
}

/// What a poll knows of the batch.
struct Polling<'a> {
    /// The upstream's batch.
    upstream_id: &'a str,
    /// This batch's status now.
    status: BatchStatus,
    /// Its key was revoked, expired or deleted.
    key_stopped: bool,
}

/// Polls the upstream batch (passing a cancel on first: asked, or the key stopped); when it
/// has ended, collects its results and ends this one (`failed` when its key stopped).
async fn poll(
    run: &Run,
    provider: &Arc<Provider>,
    fwd: &Forward,
    polling: Polling<'_>,
) -> Result<Next, Failure> {
    let Polling {
        upstream_id,
        status,
        key_stopped,
    } = polling;
    let (store, id) = (&run.batches.store, &run.batch.id);
    let transient = |e: sluice_store::StoreError| Failure::Transient(e.to_string());
    let api = provider
        .batch_api()
        .ok_or_else(|| Failure::Refused("no batch API".into()))?;
    if (status == BatchStatus::Cancelling || key_stopped) && !fwd.cancel_sent {
        match upstream::json::<UpstreamBatch>(provider, api.cancel(upstream_id)).await {
            // Refused: it ended meanwhile, as the poll says.
            Ok(_) | Err(Failure::Refused(_)) => {}
            Err(e) => return Err(e),
        }
        store.forward_cancel_sent(id).await.map_err(transient)?;
    }
    let b: UpstreamBatch = upstream::json(provider, api.retrieve(upstream_id)).await?;
    if let Some(c) = b.request_counts {
        store
            .forward_counts(id, c.completed, c.failed)
            .await
            .map_err(transient)?;
    }
    let to = match b.status.as_str() {
        "completed" => BatchStatus::Completed,
        "expired" => BatchStatus::Expired,
        "cancelled" => BatchStatus::Cancelled,
        "failed" => BatchStatus::Failed,
        _ => return Ok(Next::Park),
    };
    if to == BatchStatus::Completed {
        let from = BatchStatus::InProgress;
        store
            .transition(id, from, BatchStatus::Finalizing)
            .await
            .map_err(transient)?;
    }
    store.forward_counts(id, 0, 0).await.map_err(transient)?;
    let collector = Collector {
        run,
        state: run.live.get(),
        provider,
        key: owner_key(run).await,
        asked: input::asked(run).await.map_err(Failure::Transient)?,
    };
    collector.collect(&b).await?;
    if key_stopped {
        let errors = super::runner::key_stopped_errors(&run.batch);
        fail(run, "key_revoked", String::new(), Some(errors))
            .await
            .map_err(Failure::Transient)?;
    } else if to == BatchStatus::Failed {
        let errors = b.errors.as_ref().map(|e| e.get().to_string());
        let m = format!("the provider `{}` failed the batch", provider.name());
        fail(run, "upstream_failed", m, errors)
            .await
            .map_err(Failure::Transient)?;
    } else {
        output::finish(&run.batches, &run.batch, to)
            .await
            .map_err(Failure::Transient)?;
    }
    remove_files(provider, fwd, &b).await;
    tracing::info!(batch = %id, upstream = %upstream_id, status = to.as_str(), "forwarded batch ended");
    Ok(Next::Done)
}

/// The key that owns the batch, if it still exists (its spend records name it).
async fn owner_key(run: &Run) -> Option<Arc<KeyRecord>> {
    let sluice_store::files::Owner::Key(key_id) = &run.batch.owner else {
        return None;
    };
    let ledger = run.live.get().ledger.clone()?;
    ledger.key(key_id).await.ok().flatten().map(Arc::new)
}

/// Removes the batch's files from the upstream once collected (best effort: they would
/// otherwise stay in the provider's storage).
async fn remove_files(provider: &Provider, fwd: &Forward, b: &UpstreamBatch) {
    let Some(api) = provider.batch_api() else {
        return;
    };
    let files = [&fwd.file_id, &b.output_file_id, &b.error_file_id];
    for file in files.into_iter().flatten() {
        if let Err(e) = upstream::send(provider, api.delete_file(file)).await {
            tracing::debug!(file = %file, error = e.message(), "cannot remove an upstream batch file");
        }
    }
}

/// Ends the batch as `failed`: `errors` (OpenAI's object, as JSON text) or one error of
/// `code` and `message`; its error file reports the malformed lines and the lines not run
/// (`batch_failed`).
async fn fail(
    run: &Run,
    code: &str,
    message: String,
    errors: Option<String>,
) -> Result<Next, String> {
    let errors = errors.unwrap_or_else(|| {
        json!({"object": "list", "data": [{"code": code, "message": message, "param": null, "line": null}]})
            .to_string()
    });
    let store = &run.batches.store;
    store
        .set_errors(&run.batch.id, errors)
        .await
        .map_err(text)?;
    output::finish(&run.batches, &run.batch, BatchStatus::Failed).await?;
    tracing::info!(batch = %run.batch.id, code, "forwarded batch failed");
    Ok(Next::Done)
}
