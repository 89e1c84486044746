//! One batch from where it is to its end: `validating` (the input read, malformed lines
//! recorded, the lines counted), `in_progress` (the lines not yet ended dispatched at the
//! batch's concurrency, yielding to interactive traffic), then the output written as
//! `completed`, `cancelled` or `expired`; or, when the gateway stops, the lines in flight
//! finished and recorded and the batch left `in_progress` for the next start.
//!
//! The yield rule: before a line starts, while more than `[batches] yield_above`
//! interactive requests (the gateway's requests in flight, batch lines not counted) are in
//! flight, it waits (polling every 10 ms), so a batch only takes what clients leave.

use super::handle::{Batches, Signal};
use super::input::{self, Lines, Read};
use super::line::{self, Line};
use super::output;
use crate::endpoint::Endpoint;
use crate::keys::Identity;
use crate::live::Live;
use crate::pipeline::Caller;
use sluice_store::batches::{Batch, BatchStatus, LineResult, Outcome};
use sluice_store::files::{unix_now_s, Owner};
use sluice_store::StoreError;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How often a line waiting for interactive traffic looks again.
const YIELD_POLL: Duration = Duration::from_millis(10);

/// How a batch's dispatching ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every line has a result.
    Done,
    /// Its cancel was asked.
    Cancelled,
    /// Its completion window passed.
    Expired,
    /// The gateway is stopping (or another gateway took the batch over).
    Stopped,
    /// Its key was revoked, expired or deleted.
    KeyStopped,
}

/// How often a running batch looks whether its key still works.
const KEY_CHECK: Duration = Duration::from_secs(1);

/// A batch being run.
pub struct Run {
    /// The gateway's state, current at each line.
    pub live: Arc<Live>,
    /// The batches.
    pub batches: Arc<Batches>,
    /// The batch as it was claimed.
    pub batch: Batch,
}

fn internal(e: StoreError) -> String {
    e.to_string()
}

// === impl Run ===

impl Run {
    /// Runs the batch until it ends or the gateway stops; failures of the stores are
    /// logged, and the batch is left for the next attempt.
    pub async fn go(self) {
        let id = self.batch.id.clone();
        if let Err(e) = self.steps().await {
            tracing::warn!(batch = %id, error = %e, "batch stopped by a store failure");
        }
    }

    async fn steps(self) -> Result<(), String> {
        let store = &self.batches.store;
        let mut status = self.batch.status;
        if status == BatchStatus::Validating {
            match self.validate().await? {
                Some(total) => {
                    status = BatchStatus::InProgress;
                    if !store.start(&self.batch.id, total).await.map_err(internal)? {
                        // Cancelled meanwhile.
                        let now = store.get_any(&self.batch.id).await.map_err(internal)?;
                        status = now.map_or(BatchStatus::Failed, |b| b.status);
                    }
                }
                None => return Ok(()),
            }
        }
        let end = match status {
            BatchStatus::InProgress => self.dispatch().await?,
            BatchStatus::Cancelling => End::Cancelled,
            BatchStatus::Finalizing => End::Done,
            _ => return Ok(()),
        };
        let to = match end {
            End::Stopped => return Ok(()),
            End::Done => {
                let from = BatchStatus::InProgress;
                store
                    .transition(&self.batch.id, from, BatchStatus::Finalizing)
                    .await
                    .map_err(internal)?;
                BatchStatus::Completed
            }
            End::Cancelled => BatchStatus::Cancelled,
            End::Expired => BatchStatus::Expired,
            End::KeyStopped => {
                let errors = key_stopped_errors(&self.batch);
                store
                    .set_errors(&self.batch.id, errors)
                    .await
                    .map_err(internal)?;
                BatchStatus::Failed
            }
        };
        output::finish(&self.batches, &self.batch, to).await?;
        tracing::info!(batch = %self.batch.id, status = to.as_str(), "batch ended");
        Ok(())
    }

    /// Who its lines run as: the key that created it, looked up again.
    pub(super) async fn identity(&self) -> Result<Identity, String> {
        let state = self.live.get();
        Ok(match &self.batch.owner {
            Owner::Master if state.master_key.is_some() => Identity::Master,
            Owner::Master => Identity::Open,
            Owner::Key(id) => {
                let ledger = state.ledger.as_ref().ok_or("no key store")?;
                let key = ledger.key(id).await.map_err(internal)?;
                let key = key.ok_or_else(|| format!("the key `{id}` is gone"))?;
                Identity::Key(Arc::new(key))
            }
        })
    }

    /// Whether the key that owns the batch was revoked, has expired or is gone (read from
    /// the key store: a revocation through any replica counts). A store that cannot be
    /// read stops nothing.
    pub(super) async fn key_stopped(&self) -> bool {
        let Owner::Key(id) = &self.batch.owner else {
            return false;
        };
        let Some(ledger) = self.live.get().ledger.clone() else {
            return false;
        };
        match ledger.key(id).await {
            Ok(Some(k)) => {
                k.revoked_ms.is_some()
                    || k.expires_ms
                        .is_some_and(|e| e <= sluice_store::unix_now_ms())
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(batch = %self.batch.id, error = %e, "cannot read the batch's key");
                false
            }
        }
    }

    /// The caller its lines run as: the key that created it (looked up again, so a key
    /// revoked since fails its lines).
    async fn caller(&self) -> Result<Caller, String> {
        Ok(Caller::BatchLine {
            identity: self.identity().await?,
            batch_id: Arc::from(self.batch.id.as_str()),
        })
    }

    /// The input file's lines, opened; `None` when it is gone (the batch fails).
    async fn lines(&self) -> Result<Option<Lines>, String> {
        let files = &self.batches.files;
        let opened = files
            .open(&self.batch.input_file_id, &self.batch.owner)
            .await
            .map_err(internal)?;
        Ok(opened.map(|(_, file)| Lines::new(file)))
    }

    fn max_line(&self) -> usize {
        usize::try_from(self.live.get().server.max_body_bytes).unwrap_or(usize::MAX)
    }

    async fn fail(&self, code: &str, message: String) -> Result<Option<u64>, String> {
        let errors = serde_json::json!({
            "object": "list",
            "data": [{"code": code, "message": message, "param": "input_file_id", "line": null}],
        });
        let store = &self.batches.store;
        store
            .fail(&self.batch.id, errors.to_string())
            .await
            .map_err(internal)?;
        tracing::info!(batch = %self.batch.id, code, "batch failed");
        Ok(None)
    }

    /// Reads the whole input: counts its lines and records the malformed ones (once, so
    /// again after a restart). `None`: the batch failed (no input file, no lines, too many).
    pub(super) async fn validate(&self) -> Result<Option<u64>, String> {
        let Some(mut lines) = self.lines().await? else {
            let m = format!("the input file `{}` is gone", self.batch.input_file_id);
            return self.fail("input_file_not_found", m).await;
        };
        let (max, mut total, mut seen) = (self.max_line(), 0u64, HashSet::new());
        let mut bad = Vec::new();
        while let Some(read) = lines.next(max).await.map_err(|e| e.to_string())? {
            total += 1;
            let (number, failed) = match read {
                Read::TooLong(n) => (n, Some(input::too_long(n, max))),
                Read::Text(n, text) => (
                    n,
                    input::parse(text, n, &self.batch.endpoint, &mut seen).err(),
                ),
            };
            if let Some(m) = failed {
                bad.push(line::malformed(&self.batch.id, number, &m));
            }
        }
        let limit = self.batches.config.max_lines;
        if total == 0 {
            return self
                .fail("empty_file", "the input file has no lines".into())
                .await;
        }
        if total > limit {
            let m = format!("the input file has {total} lines; a batch takes at most {limit} (`batches.max_lines`)");
            return self.fail("too_many_requests", m).await;
        }
        for result in bad {
            self.record(result).await?;
        }
        Ok(Some(total))
    }

    /// Records a line's result (once) and counts it.
    async fn record(&self, result: LineResult) -> Result<(), String> {
        record(&self.batches, &self.batch.id, result)
            .await
            .map(drop)
    }

    /// Runs every line without a result; how it ended.
    async fn dispatch(&self) -> Result<End, String> {
        if self.key_stopped().await {
            return Ok(End::KeyStopped);
        }
        let caller = Arc::new(self.caller().await?);
        let done: HashSet<u64> = self
            .batches
            .store
            .done_lines(&self.batch.id)
            .await
            .map_err(internal)?
            .into_iter()
            .collect();
        let Some(mut lines) = self.lines().await? else {
            return Ok(End::Done);
        };
        let (max, mut seen) = (self.max_line(), HashSet::new());
        let slots = Arc::new(Semaphore::new(self.batches.config.concurrency));
        let mut running = JoinSet::new();
        let mut key_checked: Option<std::time::Instant> = None;
        let end = loop {
            if let Some(end) = self.interrupted() {
                break end;
            }
            if key_checked.is_none_or(|t| t.elapsed() >= KEY_CHECK) {
                key_checked = Some(std::time::Instant::now());
                if self.key_stopped().await {
                    break End::KeyStopped;
                }
            }
            let Some(read) = lines.next(max).await.map_err(|e| e.to_string())? else {
                break End::Done;
            };
            let Read::Text(number, text) = read else {
                continue;
            };
            // Parsed even when done, so a later repeat of its `custom_id` is still one.
            let parsed = input::parse(text, number, &self.batch.endpoint, &mut seen);
            if done.contains(&number) {
                continue;
            }
            let request = match parsed {
                Ok(r) => r,
                Err(m) => {
                    self.record(line::malformed(&self.batch.id, number, &m))
                        .await?;
                    continue;
                }
            };
            self.yield_to_clients().await;
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => p.map_err(|e| e.to_string())?,
                () = self.batches.stopped() => break End::Stopped,
            };
            while running.try_join_next().is_some() {}
            let (live, batches, caller) = (
                Arc::clone(&self.live),
                Arc::clone(&self.batches),
                Arc::clone(&caller),
            );
            let (batch_id, path) = (self.batch.id.clone(), endpoint_path(&self.batch.endpoint));
            running.spawn(async move {
                let state = live.get();
                let line = Line {
                    caller: &caller,
                    endpoint: Endpoint::at(path).unwrap_or(Endpoint::Chat),
                    path,
                    number,
                    custom_id: &request.custom_id,
                    body: request.body,
                };
                let result = line::run(&state, &batches, line).await;
                // The line's spend record is made durable before its result is written: a
                // gateway killed between the two runs the line again rather than keep a
                // result never charged, and the ledger keeps one record per batch line
                // (request id), so the run again is not charged twice (docs/batches.md).
                if let Some(ledger) = &state.ledger {
                    ledger.flush().await;
                    batches.metrics.spend_flushes.fetch_add(1, Relaxed);
                }
                super::fault::after_charge(number);
                if let Err(e) = record(&batches, &batch_id, result).await {
                    tracing::warn!(batch = %batch_id, line = number, error = %e, "cannot record a batch line");
                }
                drop(permit);
            });
        };
        // The lines in flight finish and are recorded, whatever ended the dispatching.
        while running.join_next().await.is_some() {}
        Ok(end)
    }

    /// Why dispatching must stop now, if it must.
    fn interrupted(&self) -> Option<End> {
        if self.batches.is_stopping() {
            Some(End::Stopped)
        } else if let Some(signal) = self.batches.signalled(&self.batch.id) {
            Some(match signal {
                Signal::Cancel => End::Cancelled,
                Signal::Lost => End::Stopped,
            })
        } else if unix_now_s() >= self.batch.times.expires_at {
            Some(End::Expired)
        } else {
            None
        }
    }

    /// Waits while interactive traffic is above `yield_above` (see the module docs).
    async fn yield_to_clients(&self) {
        let limit = i64::try_from(self.batches.config.yield_above).unwrap_or(i64::MAX);
        let mut counted = false;
        loop {
            let state = self.live.get();
            let all = state.metrics.in_flight.load(Relaxed);
            let interactive = all - self.batches.metrics.lines_in_flight.load(Relaxed);
            if interactive <= limit || self.batches.is_stopping() {
                return;
            }
            if !counted {
                self.batches.metrics.yields.fetch_add(1, Relaxed);
                counted = true;
            }
            tokio::time::sleep(YIELD_POLL).await;
        }
    }
}

/// The `errors` of a batch stopped because its key no longer works.
pub(super) fn key_stopped_errors(batch: &Batch) -> String {
    let key = match &batch.owner {
        Owner::Key(id) => id.as_str(),
        Owner::Master => "",
    };
    serde_json::json!({"object": "list", "data": [{"code": "key_revoked",
        "message": format!("the key `{key}` that owns the batch was revoked, expired or deleted: no line starts any more"),
        "param": null, "line": null}]})
    .to_string()
}

/// OpenAI's name of a batch's endpoint, as a static path.
fn endpoint_path(endpoint: &str) -> &'static str {
    super::wire::ENDPOINTS
        .into_iter()
        .find(|e| *e == endpoint)
        .unwrap_or(super::wire::ENDPOINTS[0])
}

/// Records `result` of batch `batch_id` (once) and counts it; whether it was recorded now
/// (`false`: the line had a result already).
pub(super) async fn record(
    batches: &Batches,
    batch_id: &str,
    result: LineResult,
) -> Result<bool, String> {
    let outcome = result.outcome;
    let fresh = batches
        .store
        .record(batch_id, result)
        .await
        .map_err(internal)?;
    if fresh {
        let m = &batches.metrics;
        let c = match outcome {
            Outcome::Completed => &m.lines_completed,
            Outcome::Failed => &m.lines_failed,
        };
        c.fetch_add(1, Relaxed);
    }
    Ok(fresh)
}
