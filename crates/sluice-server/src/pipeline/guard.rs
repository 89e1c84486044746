//! The guardrails stage: the `[[guardrails]]` of the model or route asked for (a route's
//! own and every target's) and of the caller's virtual key, each once, run over the request's text before it goes anywhere (cache,
//! coalescing, upstream) and, for those that apply to answers, over the answer before it
//! reaches the client (streams through [`super::guard_stream`]). A block is a 400
//! `guardrail_blocked`; a redaction replaces each value with a typed placeholder (and, with
//! `restore`, puts it back in the answer); a webhook allows, denies or rewrites
//! ([`super::guard_hook`]; a streamed answer's after it has gone, [`super::guard_late`]).
//! What they find is counted by guardrail, detector and action;
//! the values are never logged.

use super::answer::Answer;
use super::guard_gather::Pieces;
use super::guard_hook;
use super::guard_json::{self, Validation};
use super::guard_late::{Late, LateVerdict};
use super::guard_stream::EventFilter;
use crate::state::{AppState, Resolved};
use bytes::Bytes;
use sluice_core::{Error, ErrorKind, Operation};
use sluice_guard::webhook::Phase;
use sluice_guard::{Action, Finding, Guardrail, Verdict};
use sluice_store::KeyRecord;
use sluice_types::Usage;
use std::sync::Arc;

/// What the request stage leaves for the answer.
#[derive(Default)]
pub struct Guarded {
    /// The guardrails that apply to answers.
    answers: Vec<usize>,
    /// Placeholders to put back in the answer.
    restore: Vec<(String, String)>,
    /// What was found, for the spend record.
    found: Vec<Finding>,
    /// The check of the answer against the request's schemas (`response_format`, tools).
    validation: Option<Validation>,
    /// The usage of answers asked for again, charged with the last.
    carried: Option<Usage>,
    /// Why a passed answer failed its schema (`on_failure = "pass"`).
    invalid: Option<String>,
    /// The last whole answer was checked and found valid (it is not checked again).
    valid: bool,
    /// Where a streamed answer's webhooks send what they flag (see [`Self::defer_verdict`]).
    late: Option<tokio::sync::oneshot::Sender<Option<String>>>,
}

/// The guardrails of what `resolved` names and of the caller's key, as indexes into the
/// config's. A key's guardrail that the config no longer has refuses the request (503,
/// fail closed): what it kept from the upstream would otherwise go out.
fn applying(
    state: &AppState,
    resolved: Resolved<'_>,
    key: Option<&KeyRecord>,
) -> Result<Vec<usize>, Error> {
    let mut out: Vec<usize> = match resolved {
        Resolved::Model(d) => state.deployments[d].guardrails.clone(),
        Resolved::Route(r) => {
            let route = &state.routes[r].config;
            let targets = route
                .targets
                .iter()
                .flat_map(|&d| state.deployments[d].guardrails.iter().copied());
            route.guardrails.iter().copied().chain(targets).collect()
        }
        Resolved::Passthrough { .. } => Vec::new(),
    };
    for name in key.map(|k| k.guardrails.as_slice()).unwrap_or_default() {
        let g = state.guardrail(name).ok_or_else(|| -> Error {
            ErrorKind::Unavailable {
                message: format!(
                    "the key's guardrail `{name}` is not configured: its requests are refused until it is, or it is removed from the key"
                ),
            }
            .into()
        })?;
        out.push(g);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn blocked(f: Finding, answer: bool) -> Error {
    ErrorKind::GuardrailBlocked {
        guardrail: f.guardrail,
        detector: f.detector,
        answer,
    }
    .into()
}

/// The detectors of the guardrails `indexes` (those that have detectors).
fn detectors(state: &AppState, indexes: &[usize]) -> Vec<Arc<Guardrail>> {
    indexes
        .iter()
        .filter_map(|&g| state.guardrails[g].guard.clone())
        .collect()
}

/// The guardrails' detectors over `text`, counted (in metrics and in `found`).
fn detect(
    state: &AppState,
    guards: &[Arc<Guardrail>],
    text: &str,
    found: &mut Vec<Finding>,
) -> Verdict {
    let refs: Vec<&Guardrail> = guards.iter().map(|g| &**g).collect();
    let verdict = sluice_guard::check(&refs, text);
    let findings = match &verdict {
        Verdict::Pass(findings) | Verdict::Redacted { findings, .. } => findings.as_slice(),
        Verdict::Blocked(f) => std::slice::from_ref(f),
    };
    state.tab_metrics.guarded(findings);
    found.extend_from_slice(findings);
    verdict
}

/// Runs the request guardrails over `body` (detectors, then webhooks): `Ok(Some(body))`
/// when it was redacted or rewritten.
pub async fn request(
    state: &AppState,
    resolved: Resolved<'_>,
    key: Option<&KeyRecord>,
    model: &str,
    body: &Bytes,
    guarded: &mut Guarded,
) -> Result<Option<Bytes>, Error> {
    let all = applying(state, resolved, key)?;
    if all.is_empty() {
        return Ok(None);
    }
    let configs = &state.guardrails;
    guarded.validation = Validation::of(state, &all, body)?;
    guarded.answers = all
        .iter()
        .copied()
        .filter(|&g| configs[g].answers)
        .collect();
    let on_requests: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&g| configs[g].requests)
        .collect();
    let guards = detectors(state, &on_requests);
    let detected = match std::str::from_utf8(body) {
        Ok(text) if !guards.is_empty() => match detect(state, &guards, text, &mut guarded.found) {
            Verdict::Pass(_) => None,
            Verdict::Blocked(f) => return Err(blocked(f, false)),
            Verdict::Redacted {
                body, placeholders, ..
            } => {
                if on_requests.iter().any(|&g| configs[g].restore) {
                    guarded.restore = placeholders;
                }
                Some(Bytes::from(body))
            }
        },
        _ => None,
    };
    let current = detected.as_ref().unwrap_or(body);
    let hooked = guard_hook::run(
        state,
        &on_requests,
        Phase::Request,
        model,
        current,
        &mut guarded.found,
    )
    .await?;
    Ok(hooked.or(detected))
}

impl Guarded {
    /// The filter of a streamed (or replayed) answer's events, of an `op` request for
    /// `model`.
    pub fn filter(&mut self, state: &Arc<AppState>, (op, model): (Operation, &str)) -> EventFilter {
        let hooks = self.hooks(state);
        let late = (!hooks.is_empty()).then(|| {
            let text = Pieces::of(op) == Pieces::Text;
            Late::new(
                Arc::clone(state),
                (hooks, model),
                self.restore.clone(),
                text,
                self.late.take(),
            )
        });
        EventFilter::new(
            (detectors(state, &self.answers), self.restore.clone()),
            Arc::clone(state),
            Pieces::of(op),
        )
        .validating(self.validation.clone())
        .after(self.found.clone())
        .late(late)
    }

    /// The answer guardrails with a webhook.
    fn hooks(&self, state: &AppState) -> Vec<usize> {
        self.answers
            .iter()
            .copied()
            .filter(|&g| state.guardrails[g].webhook.is_some())
            .collect()
    }

    /// For a streamed request whose answer goes to webhooks: the verdict its spend record
    /// waits for (`None`: no webhook reads the answer).
    pub fn defer_verdict(&mut self, state: &AppState) -> Option<LateVerdict> {
        if self.hooks(state).is_empty() {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.late = Some(tx);
        Some(rx)
    }

    /// What was found, for the spend record (see [`sluice_guard::summarize`]).
    pub fn summary(&self) -> Option<String> {
        sluice_guard::summarize(&self.found)
    }

    /// Whether an answer needs this stage.
    pub fn touches_answers(&self) -> bool {
        !self.answers.is_empty() || !self.restore.is_empty() || self.validation.is_some()
    }

    /// Whether answers are validated against a JSON schema (such requests bypass the
    /// cache: an answer asked for again must not be replayed).
    pub fn validating(&self) -> bool {
        self.validation.is_some()
    }

    /// Whether `answer` (a whole answer) fails its schema with tries left: the retry is
    /// counted and the answer's usage carried to the next.
    pub fn retry(&mut self, state: &AppState, answer: &Result<Answer, Error>) -> bool {
        let Some(v) = self.validation.as_mut().filter(|v| v.retries > 0) else {
            return false;
        };
        let Ok(Answer::Whole {
            status,
            body,
            usage,
            ..
        }) = answer
        else {
            return false;
        };
        if !status.is_success() {
            return false;
        }
        let Err(failure) = v.check_answer(body) else {
            self.valid = true;
            return false;
        };
        v.retries -= 1;
        let f = v.finding(failure.check, Action::Retry);
        state.tab_metrics.guarded(std::slice::from_ref(&f));
        self.found.push(f);
        if let Some(u) = usage {
            self.carried = Some(guard_json::add(self.carried.unwrap_or_default(), *u));
        }
        true
    }

    /// The usage to charge: `usage` and that of the answers asked for again.
    pub fn charged(&self, usage: Option<Usage>) -> Option<Usage> {
        match (usage, self.carried) {
            (Some(u), Some(c)) => Some(guard_json::add(u, c)),
            (u, c) => u.or(c),
        }
    }

    /// The last whole answer's check: `Err` (502) when it fails and is refused; when it
    /// fails and is passed, the reason is kept for [`Self::flag`].
    pub fn validate(
        &mut self,
        state: &AppState,
        status: http::StatusCode,
        body: &[u8],
    ) -> Result<(), Error> {
        let Some(v) = &self.validation else {
            return Ok(());
        };
        if !status.is_success() || self.valid {
            return Ok(());
        }
        let Err(failure) = v.check_answer(body) else {
            return Ok(());
        };
        let action = if v.pass { Action::Pass } else { Action::Error };
        let f = v.finding(failure.check, action);
        state.tab_metrics.guarded(std::slice::from_ref(&f));
        self.found.push(f);
        if v.pass {
            self.invalid = Some(failure.reason);
            Ok(())
        } else {
            Err(v.error(failure.reason))
        }
    }

    /// Marks a passed answer that failed its schema: `x-sluice-output-valid: false` and
    /// the reason in `x-sluice-output-invalid`.
    pub fn flag<B>(&self, response: &mut http::Response<B>) {
        let Some(reason) = &self.invalid else {
            return;
        };
        let printable: String = reason
            .chars()
            .map(|c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .take(300)
            .collect();
        let headers = response.headers_mut();
        headers.insert(
            crate::headers::X_SLUICE_OUTPUT_VALID,
            http::HeaderValue::from_static("false"),
        );
        if let Ok(v) = http::HeaderValue::from_str(&printable) {
            headers.insert(crate::headers::X_SLUICE_OUTPUT_INVALID, v);
        }
    }

    /// Runs the answer guardrails over a whole answer (detectors, then webhooks), then
    /// puts redacted values back.
    pub async fn answer(
        &mut self,
        state: &AppState,
        model: &str,
        body: Bytes,
    ) -> Result<Bytes, Error> {
        let Ok(text) = std::str::from_utf8(&body) else {
            return Ok(body);
        };
        let guards = detectors(state, &self.answers);
        let mut out = match detect(state, &guards, text, &mut self.found) {
            Verdict::Pass(_) => None,
            Verdict::Blocked(f) => return Err(blocked(f, true)),
            Verdict::Redacted { body, .. } => Some(Bytes::from(body)),
        };
        let current = out.clone().unwrap_or_else(|| body.clone());
        let answers = self.answers.clone();
        if let Some(rewritten) = guard_hook::run(
            state,
            &answers,
            Phase::Answer,
            model,
            &current,
            &mut self.found,
        )
        .await?
        {
            out = Some(rewritten);
        }
        if !self.restore.is_empty() {
            let current = out.as_ref().unwrap_or(&body);
            let text = std::str::from_utf8(current).unwrap_or_default();
            out = Some(Bytes::from(sluice_guard::restore(text, &self.restore)));
        }
        Ok(out.unwrap_or(body))
    }
}
