//! A forwarded batch's results, collected when the upstream batch has ended: its output and
//! error files read as they stream in, each line rewritten as sluice's own (its `id` and
//! `custom_id` sluice's, the answer's `model` the one the client asked for) and recorded
//! once in the batch's results. A line without a result yet that the upstream answered is
//! charged first, at the batch price, with one spend record carrying the batch's id. The
//! lines are taken in groups ([`Pending`]: [`GROUP_LINES`] lines, fewer when their results
//! reach [`GROUP_BYTES`], and what is left at the end of a file): the group's records are
//! queued, made durable by one flush of the ledger, and only then are the group's results
//! recorded. A restart in the middle collects again: recorded lines are skipped, and a
//! line charged whose result a crash kept from being recorded is charged again under the
//! same request id, sluice's line id (`batch_req_<batch>_<line>`, never the upstream's,
//! which need not be unique), which the ledger keeps once (one record per batch line).

use super::super::line::request_id;
use super::super::runner::{record, Run};
use super::input::{self, Asked};
use super::upstream::{self, Failure, UpstreamBatch};
use crate::endpoint::Endpoint;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_providers::{Provider, UpstreamBody};
use sluice_store::batches::{LineResult, Outcome};
use sluice_store::{KeyRecord, SpendRecord};
use sluice_types::Usage;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A line of the upstream's output or error file.
#[derive(Deserialize)]
struct Upstream<'a> {
    custom_id: Option<String>,
    #[serde(borrow)]
    response: Option<UpstreamResponse<'a>>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UpstreamResponse<'a> {
    status_code: u16,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

/// The line as sluice writes it.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    custom_id: &'a str,
    response: Option<Answered<'a>>,
    error: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Answered<'a> {
    status_code: u16,
    request_id: &'a str,
    body: &'a RawValue,
}

/// What collecting a batch needs.
pub struct Collector<'a> {
    /// The batch.
    pub run: &'a Run,
    /// The gateway's state.
    pub state: Arc<AppState>,
    /// The provider it was forwarded to.
    pub provider: &'a Provider,
    /// The key that owns the batch, if any (and if it still exists).
    pub key: Option<Arc<KeyRecord>>,
    /// Its lines by `custom_id`.
    pub asked: HashMap<String, Asked>,
}

impl Collector<'_> {
    /// Reads the upstream batch's output and error files into the batch's results.
    pub async fn collect(&self, b: &UpstreamBatch) -> Result<(), Failure> {
        let Some(api) = self.provider.batch_api() else {
            return Err(Failure::Refused("the provider has no batch API".into()));
        };
        let store = &self.run.batches.store;
        let mut done: HashSet<u64> = store
            .done_lines(&self.run.batch.id)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?
            .into_iter()
            .collect();
        let mut pending = Pending::default();
        for file in [&b.output_file_id, &b.error_file_id].into_iter().flatten() {
            let read = self.read(api.content(file), &mut done, &mut pending).await;
            // What was charged before a failure is recorded too: collected again, it would
            // count twice in the live budget counter (the ledger keeps one record).
            self.settle(&mut pending).await?;
            read?;
        }
        Ok(())
    }

    /// Reads one of the upstream's files, charging its lines and settling them in groups.
    async fn read(
        &self,
        content: Result<http::Request<UpstreamBody>, sluice_core::Error>,
        done: &mut HashSet<u64>,
        pending: &mut Pending,
    ) -> Result<(), Failure> {
        let mut body = upstream::send(self.provider, content).await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(data) = upstream::next_frame(self.provider, &mut body).await? {
            buf.extend_from_slice(&data);
            let mut from = 0;
            while let Some(n) = buf[from..].iter().position(|&c| c == b'\n') {
                let line = &buf[from..=from + n];
                from += n + 1;
                if let Some(result) = self.line(line, done).await? {
                    if pending.push(result) {
                        self.settle(pending).await?;
                    }
                }
            }
            buf.drain(..from);
        }
        if let Some(result) = self.line(&buf, done).await? {
            pending.push(result);
        }
        Ok(())
    }

    /// Makes the spend records of the lines in `pending` durable (one flush of the ledger,
    /// those records queued before it), then records their results.
    async fn settle(&self, pending: &mut Pending) -> Result<(), Failure> {
        let group = pending.take();
        if group.is_empty() {
            return Ok(());
        }
        if let Some(ledger) = &self.state.ledger {
            ledger.flush().await;
            self.run.batches.metrics.spend_flushes.fetch_add(1, Relaxed);
        }
        // Every line of the group is tried, a failed record or not: a line charged and not
        // recorded is charged again when collected again (the ledger drops the second
        // record, but the live budget counts it twice), so no more of them than failed.
        let mut failed = None;
        for result in group {
            super::super::fault::after_charge(result.line);
            if let Err(e) = record(&self.run.batches, &self.run.batch.id, result).await {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) => Err(Failure::Transient(e)),
            None => Ok(()),
        }
    }

    /// Charges one upstream line (its spend record queued) and returns its result, to be
    /// recorded once the record is durable (blank and unknown lines, and lines in `done`,
    /// those with a result, skipped).
    async fn line(
        &self,
        text: &[u8],
        done: &mut HashSet<u64>,
    ) -> Result<Option<LineResult>, Failure> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let up: Upstream<'_> = serde_json::from_slice(text).map_err(|e| {
            Failure::Refused(format!(
                "the provider's batch output has a line that is not OpenAI's format: {e}"
            ))
        })?;
        let custom_id = up.custom_id.unwrap_or_default();
        let Some(asked) = self.asked.get(&custom_id) else {
            tracing::warn!(batch = %self.run.batch.id, custom_id, "the upstream answered a line the batch does not have");
            return Ok(None);
        };
        if !done.insert(asked.line) {
            return Ok(None);
        }
        let id = request_id(&self.run.batch.id, asked.line);
        let response = up.response.as_ref();
        let request_id = response
            .and_then(|r| r.request_id.clone())
            .unwrap_or_else(|| id.clone());
        let body = response
            .and_then(|r| r.body)
            .map(|b| restore_model(b, &asked.model));
        let answered = match (response, &body) {
            (Some(r), Some(body)) => Some(Answered {
                status_code: r.status_code,
                request_id: &request_id,
                body,
            }),
            _ => None,
        };
        let status = answered.as_ref().map(|a| a.status_code);
        let completed = status.is_some_and(|s| (200..300).contains(&s)) && up.error.is_none();
        let line = Line {
            id: &id,
            custom_id: &custom_id,
            response: answered,
            error: up.error,
        };
        let result = LineResult {
            line: asked.line,
            outcome: if completed {
                Outcome::Completed
            } else {
                Outcome::Failed
            },
            text: serde_json::to_string(&line).unwrap_or_default(),
        };
        if let (Some(status), Some(body)) = (status, &body) {
            // Charged under sluice's line id: the upstream's `request_id` (kept in the
            // result line) may be empty or the same on every line, and the ledger keeps one
            // record per (batch, request id).
            self.charge(asked, status, body.get().as_bytes(), id.clone())
                .await;
        }
        Ok(Some(result))
    }

    /// Writes the spend record of a line the upstream answered, at the batch price.
    async fn charge(&self, asked: &Asked, status: u16, body: &[u8], request_id: String) {
        let state = &self.state;
        let endpoint = Endpoint::at(&self.run.batch.endpoint).unwrap_or(Endpoint::Chat);
        let target = input::target(state, &asked.model, endpoint);
        let deployment = target.as_ref().map(|t| &state.deployments[t.deployment]);
        let usage = Usage::from_response(body);
        let price = deployment
            .and_then(|d| d.price.as_ref())
            .map(sluice_core::config::Price::batch);
        let u = usage.unwrap_or_default();
        let cost = price.map_or(0, |p| crate::money::cost_nano_usd(&p, &u));
        let key = self.key.as_deref();
        let record = SpendRecord {
            ts_ms: sluice_store::unix_now_ms(),
            request_id,
            key_id: key.map(|k| k.id.clone()),
            key_name: key.map(|k| k.name.clone()),
            endpoint: endpoint.label().to_string(),
            // A configured model by its name; a passthrough one as the client named it.
            model: Some(
                deployment
                    .filter(|d| !d.upstream.is_empty())
                    .map_or_else(|| asked.model.clone(), |d| d.name.to_string()),
            ),
            provider: Some(self.provider.name().to_string()),
            status,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u.cached_prompt_tokens,
            cache_write_tokens: u.cache_write_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cost_nano_usd: cost,
            cache: "bypass".into(),
            attempts: 1,
            usage_estimated: false,
            batch_id: Some(self.run.batch.id.clone()),
            ..SpendRecord::default()
        };
        crate::pipeline::tab::charge_upstream_line(state, key, record).await;
    }
}

/// The most lines charged together before their records are flushed and their results
/// recorded.
const GROUP_LINES: usize = 256;

/// The most bytes of results held waiting for their records' flush.
const GROUP_BYTES: usize = 4 << 20;

/// The results of lines charged and not yet recorded: recorded only once their spend
/// records are durable.
#[derive(Default)]
struct Pending {
    results: Vec<LineResult>,
    bytes: usize,
}

impl Pending {
    /// Adds a line's result; whether the group is full (to be settled now).
    fn push(&mut self, result: LineResult) -> bool {
        self.bytes += result.text.len();
        self.results.push(result);
        self.results.len() >= GROUP_LINES || self.bytes >= GROUP_BYTES
    }

    /// The results held, leaving none.
    fn take(&mut self) -> Vec<LineResult> {
        self.bytes = 0;
        std::mem::take(&mut self.results)
    }
}

/// `body` (an answer) with its `model` the one the client asked for, when it names one.
fn restore_model(body: &RawValue, model: &str) -> Box<RawValue> {
    let text = body.get().as_bytes();
    let rewritten = match input::model_of(text) {
        Some((_, span)) if !model.is_empty() => input::with_model(text, &span, model),
        _ => text.to_vec(),
    };
    String::from_utf8(rewritten)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
        .unwrap_or_else(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(line: u64, len: usize) -> LineResult {
        LineResult {
            line,
            outcome: Outcome::Completed,
            text: "x".repeat(len),
        }
    }

    #[test]
    fn a_group_fills_at_its_line_count_or_its_bytes() {
        let mut p = Pending::default();
        for line in 0..GROUP_LINES as u64 - 1 {
            assert!(!p.push(result(line, 10)));
        }
        assert!(p.push(result(999, 10)));
        assert_eq!(p.take().len(), GROUP_LINES);
        assert!(p.take().is_empty());
        // Large answers fill a group sooner.
        assert!(!p.push(result(0, GROUP_BYTES / 2)));
        assert!(p.push(result(1, GROUP_BYTES / 2)));
        assert_eq!(p.take().len(), 2);
        assert!(!p.push(result(2, 1)));
    }
}
