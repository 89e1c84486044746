//! A forwarded batch's input: the provider that can take every line ([`plan`]), the lines
//! rewritten for it ([`spool`]: each line's `model` the upstream's name), and what each
//! `custom_id` was ([`asked`]: its line and the model the client named).

use super::super::input::{self, Lines, Read, Request};
use super::super::runner::Run;
use super::upstream::Failure;
use crate::endpoint::Endpoint;
use crate::keys::Identity;
use crate::state::{AppState, Resolved};
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_providers::SpooledFile;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use tokio::io::AsyncWriteExt;

/// Where a line's model is served upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of its provider.
    pub provider: usize,
    /// Its deployment.
    pub deployment: usize,
    /// The name sent upstream.
    pub upstream: String,
}

/// What a `custom_id` was: its line, and the model the client named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The line's number in the input file.
    pub line: u64,
    /// The `model` of its body.
    pub model: String,
}

/// A request body's `model` and where its value sits in the body.
pub fn model_of(body: &[u8]) -> Option<(String, Range<usize>)> {
    #[derive(Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
    }
    let m: Model<'_> = serde_json::from_slice(body).ok()?;
    let raw = m.model?;
    let name: String = serde_json::from_str(raw.get()).ok()?;
    // The raw value borrows from `body`: its offset there is where it sits.
    let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let span = start..start + raw.get().len();
    (span.end <= body.len()).then_some((name, span))
}

/// `body` with its `model` (at `span`) replaced by `model`.
pub fn with_model(body: &[u8], span: &Range<usize>, model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + model.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(&serde_json::to_vec(model).unwrap_or_default());
    out.extend_from_slice(&body[span.end..]);
    out
}

/// Where `model` goes when a batch of `endpoint` is forwarded: a model (not a route) of a
/// provider with `batch = "native"` that serves the endpoint, with no guardrail (they run
/// in sluice's pipeline only).
pub fn target(state: &AppState, model: &str, endpoint: Endpoint) -> Option<Target> {
    let (deployment, upstream) = match state.resolve(model).ok()? {
        Resolved::Model(d) => (d, state.deployments[d].upstream.to_string()),
        Resolved::Passthrough {
            deployment,
            upstream,
        } => (deployment, upstream.to_string()),
        Resolved::Route(_) => return None,
    };
    let d = &state.deployments[deployment];
    let provider = &state.providers[d.provider];
    provider.batch_api()?;
    let serves = match endpoint {
        Endpoint::Responses => provider.responses_native(),
        // Not among the endpoints OpenAI's Batch API is documented to take.
        Endpoint::Moderations => false,
        e => provider.serves(e.operation()),
    };
    (serves && d.guardrails.is_empty()).then_some(Target {
        provider: d.provider,
        deployment,
        upstream,
    })
}

/// The batch's lines that can run (the malformed ones skipped), one at a time.
struct Valid {
    lines: Lines,
    seen: HashSet<String>,
    endpoint: String,
}

impl Valid {
    async fn open(run: &Run) -> Result<Option<Self>, String> {
        let opened = run
            .batches
            .files
            .open(&run.batch.input_file_id, &run.batch.owner)
            .await
            .map_err(|e| e.to_string())?;
        Ok(opened.map(|(_, file)| Self {
            lines: Lines::new(file),
            seen: HashSet::new(),
            endpoint: run.batch.endpoint.clone(),
        }))
    }

    async fn next(&mut self) -> Result<Option<(u64, Request)>, String> {
        loop {
            let Some(read) = self
                .lines
                .next(usize::MAX)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let Read::Text(number, text) = read else {
                continue;
            };
            if let Ok(r) = input::parse(text, number, &self.endpoint, &mut self.seen) {
                return Ok(Some((number, r)));
            }
        }
    }
}

fn endpoint_of(run: &Run) -> Endpoint {
    Endpoint::at(&run.batch.endpoint).unwrap_or(Endpoint::Chat)
}

/// The provider every line of the batch can be forwarded to, if there is one: each line's
/// model is one the key may use, on that one provider (see [`target`]), the key has no
/// guardrail of its own and its budget is not spent, and some line can run.
pub async fn plan(run: &Run, identity: &Identity) -> Result<Option<usize>, String> {
    let state = run.live.get();
    let key = identity.key();
    if key.is_some_and(|k| !k.guardrails.is_empty()) {
        return Ok(None);
    }
    let Some(mut valid) = Valid::open(run).await? else {
        return Ok(None);
    };
    let endpoint = endpoint_of(run);
    let mut provider = None;
    while let Some((_, request)) = valid.next().await? {
        let Some((model, _)) = model_of(&request.body) else {
            return Ok(None);
        };
        let Some(t) = target(&state, &model, endpoint).filter(|_| identity.allows(&model)) else {
            return Ok(None);
        };
        if provider.is_some_and(|p| p != t.provider) {
            return Ok(None);
        }
        provider = Some(t.provider);
    }
    if let Some(k) = key {
        if crate::pipeline::tab::budget_spent(&state, k).await {
            return Ok(None);
        }
    }
    Ok(provider)
}

/// Writes the lines that can run, each `model` the upstream's name on `provider`, as a
/// JSONL file in `server.upload_dir`.
pub async fn spool(run: &Run, provider: usize) -> Result<SpooledFile, Failure> {
    let transient =
        |e: std::io::Error| Failure::Transient(format!("cannot spool the batch's input: {e}"));
    let state = run.live.get();
    let suffix = sluice_store::files::id::random_id("").unwrap_or_default();
    let path = state
        .server
        .upload_dir
        .join(format!("sluice-{}-{suffix}.jsonl", run.batch.id));
    let mut spooled = SpooledFile {
        field: "file".into(),
        filename: format!("{}.jsonl", run.batch.id),
        content_type: Some("application/jsonl".into()),
        path,
        len: 0,
    };
    let file = tokio::fs::File::create(&spooled.path)
        .await
        .map_err(transient)?;
    let mut out = tokio::io::BufWriter::new(file);
    let mut valid = Valid::open(run)
        .await
        .map_err(Failure::Transient)?
        .ok_or_else(|| {
            Failure::Refused(format!(
                "the input file `{}` is gone",
                run.batch.input_file_id
            ))
        })?;
    let endpoint = endpoint_of(run);
    while let Some((number, request)) = valid.next().await.map_err(Failure::Transient)? {
        let moved = || {
            Failure::Refused(format!(
                "line {}: its model is no longer served by the provider the batch was forwarded to",
                number + 1
            ))
        };
        let (model, span) = model_of(&request.body).ok_or_else(moved)?;
        let t = target(&state, &model, endpoint).filter(|t| t.provider == provider);
        let t = t.ok_or_else(moved)?;
        let body = with_model(&request.body, &span, &t.upstream);
        let mut line = format!(
            "{{\"custom_id\":{},\"method\":\"POST\",\"url\":{},\"body\":",
            serde_json::to_string(&request.custom_id).unwrap_or_default(),
            serde_json::to_string(&run.batch.endpoint).unwrap_or_default()
        )
        .into_bytes();
        line.extend_from_slice(&body);
        line.extend_from_slice(b"}\n");
        out.write_all(&line).await.map_err(transient)?;
        spooled.len += line.len() as u64;
    }
    out.flush().await.map_err(transient)?;
    Ok(spooled)
}

/// Every `custom_id` of the lines that can run: its line and the model the client named.
pub async fn asked(run: &Run) -> Result<HashMap<String, Asked>, String> {
    let mut out = HashMap::new();
    let Some(mut valid) = Valid::open(run).await? else {
        return Ok(out);
    };
    while let Some((line, request)) = valid.next().await? {
        let model = model_of(&request.body).map(|(m, _)| m).unwrap_or_default();
        out.insert(request.custom_id, Asked { line, model });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_replaced_where_it_stands() {
        let body = br#"{"messages":[{"role":"user","content":"\"model\": \"x\""}], "model" : "mine","n":1}"#;
        let (model, span) = model_of(body).unwrap();
        assert_eq!(model, "mine");
        let out = with_model(body, &span, "gpt-4o-mini");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"messages":[{"role":"user","content":"\"model\": \"x\""}], "model" : "gpt-4o-mini","n":1}"#
        );
        assert!(model_of(br#"{"model":3}"#).is_none());
        assert!(model_of(br#"{"input":"x"}"#).is_none());
    }
}
