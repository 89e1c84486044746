//! The guardrails stage: the `[[guardrails]]` of the model or route asked for (a route's
//! own and every target's) run over the request's text before it goes anywhere (cache,
//! coalescing, upstream) and, for those that apply to answers, over a whole answer before
//! it reaches the client. A block is a 400 `guardrail_blocked`; a redaction replaces each
//! value with a typed placeholder (and, with `restore`, puts it back in the answer). What
//! they find is counted by guardrail, detector and action; the values are never logged.

use super::guard_stream::EventFilter;
use crate::state::{AppState, Resolved};
use bytes::Bytes;
use sluice_core::{Error, ErrorKind};
use sluice_guard::stream::Holdback;
use sluice_guard::{Finding, Guardrail, Verdict};
use std::sync::Arc;

/// What the request stage leaves for the answer.
#[derive(Default)]
pub struct Guarded {
    /// The guardrails that apply to answers.
    answers: Vec<usize>,
    /// Placeholders to put back in the answer.
    restore: Vec<(String, String)>,
}

/// The guardrails of what `resolved` names, as indexes into the config's.
fn applying(state: &AppState, resolved: Resolved<'_>) -> Vec<usize> {
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
    out.sort_unstable();
    out.dedup();
    out
}

fn blocked(f: Finding, answer: bool) -> Error {
    ErrorKind::GuardrailBlocked {
        guardrail: f.guardrail,
        detector: f.detector,
        answer,
    }
    .into()
}

/// Runs the request guardrails over `body`: `Ok(Some(body))` when values were redacted.
pub fn request(
    state: &AppState,
    resolved: Resolved<'_>,
    body: &Bytes,
    guarded: &mut Guarded,
) -> Result<Option<Bytes>, Error> {
    let all = applying(state, resolved);
    if all.is_empty() {
        return Ok(None);
    }
    let configs = &state.guardrails;
    guarded.answers = all
        .iter()
        .copied()
        .filter(|&g| configs[g].answers)
        .collect();
    let on_requests: Vec<&Guardrail> = all
        .iter()
        .filter(|&&g| configs[g].requests)
        .map(|&g| &*configs[g].guard)
        .collect();
    if on_requests.is_empty() {
        return Ok(None);
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(None);
    };
    match sluice_guard::check(&on_requests, text) {
        Verdict::Pass(findings) => {
            state.tab_metrics.guarded(&findings);
            Ok(None)
        }
        Verdict::Blocked(f) => {
            state.tab_metrics.guarded(std::slice::from_ref(&f));
            Err(blocked(f, false))
        }
        Verdict::Redacted {
            body,
            findings,
            placeholders,
        } => {
            state.tab_metrics.guarded(&findings);
            if all.iter().any(|&g| configs[g].restore) {
                guarded.restore = placeholders;
            }
            Ok(Some(Bytes::from(body)))
        }
    }
}

impl Guarded {
    /// The filter of a streamed (or replayed) answer's events.
    pub fn filter(&self, state: &Arc<AppState>) -> EventFilter {
        let guards = self
            .answers
            .iter()
            .map(|&g| Arc::clone(&state.guardrails[g].guard))
            .collect();
        EventFilter::new(
            Holdback::new(guards, self.restore.clone()),
            Arc::clone(state),
        )
    }

    /// Whether a whole answer needs this stage.
    pub fn touches_answers(&self) -> bool {
        !self.answers.is_empty() || !self.restore.is_empty()
    }

    /// Runs the answer guardrails over a whole answer, then puts redacted values back.
    pub fn answer(&self, state: &AppState, body: Bytes) -> Result<Bytes, Error> {
        let Ok(text) = std::str::from_utf8(&body) else {
            return Ok(body);
        };
        let guards: Vec<&Guardrail> = self
            .answers
            .iter()
            .map(|&g| &*state.guardrails[g].guard)
            .collect();
        let mut out = match sluice_guard::check(&guards, text) {
            Verdict::Pass(findings) => {
                state.tab_metrics.guarded(&findings);
                None
            }
            Verdict::Blocked(f) => {
                state.tab_metrics.guarded(std::slice::from_ref(&f));
                return Err(blocked(f, true));
            }
            Verdict::Redacted { body, findings, .. } => {
                state.tab_metrics.guarded(&findings);
                Some(body)
            }
        };
        if !self.restore.is_empty() {
            let current = out.as_deref().unwrap_or(text);
            out = Some(sluice_guard::restore(current, &self.restore));
        }
        Ok(out.map_or(body, Bytes::from))
    }
}
