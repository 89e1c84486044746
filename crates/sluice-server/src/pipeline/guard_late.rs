//! Webhooks on a streamed answer. The answer guardrails' webhooks are sent a whole answer
//! before the client gets it ([`super::guard_hook`]); a stream goes out as it comes, so
//! its events are assembled as they leave into the whole answer's shape (a
//! `chat.completion` or `text_completion`: each choice's text, tool calls and finish
//! reason, and the usage) and, once the stream has ended cleanly, posted to each webhook
//! in the background: the client's stream is not held for them.
//!
//! A verdict cannot take back what was sent. `allow` does nothing; `deny` (or a failed
//! webhook that fails closed) and `rewrite` flag the answer: counted in
//! `sluice_guardrail_findings_total` with `action="flag"`, logged (without the answer), and
//! written into the request's spend record, which waits for the verdicts (see
//! `Tab::close`). Values the request's redaction put back in the answer are shown to the
//! webhook as their placeholders, as a whole answer's webhook sees them.

use super::guard_hook;
use crate::cache::entry::Assembler;
use crate::cache::text::TextAssembler;
use crate::state::AppState;
use sluice_guard::webhook::{HookVerdict, Phase};
use sluice_guard::{Action, Finding};
use sluice_types::Usage;
use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::Instrument;

/// What the spend record gets once a streamed answer's webhooks have answered: the
/// summary of what they flagged (`None`: nothing).
pub type LateVerdict = oneshot::Receiver<Option<String>>;

/// A streamed answer on its way to the webhooks of its answer guardrails.
pub struct Late {
    state: Arc<AppState>,
    /// The answer guardrails with a webhook.
    hooks: Vec<usize>,
    model: String,
    /// The request's redaction's placeholders, put back in the answer.
    restore: Vec<(String, String)>,
    assembling: Assembling,
    /// Where the verdicts' summary goes (the request's spend record).
    verdict: Option<oneshot::Sender<Option<String>>>,
    /// The request's span, for the verdicts' log lines.
    span: tracing::Span,
}

enum Assembling {
    Chat(Assembler),
    Text(TextAssembler),
}

impl Late {
    /// The webhooks of `hooks` on a stream of `op` (`pieces`), for a request for `model`;
    /// `verdict` takes what they flag.
    pub fn new(
        state: Arc<AppState>,
        (hooks, model): (Vec<usize>, &str),
        restore: Vec<(String, String)>,
        text: bool,
        verdict: Option<oneshot::Sender<Option<String>>>,
    ) -> Self {
        Self {
            state,
            hooks,
            model: model.to_string(),
            restore,
            assembling: if text {
                Assembling::Text(TextAssembler::default())
            } else {
                Assembling::Chat(Assembler::default())
            },
            verdict,
            span: tracing::Span::current(),
        }
    }

    /// Takes one event as the client gets it.
    pub fn event(&mut self, event: &[u8]) {
        match &mut self.assembling {
            Assembling::Chat(a) => a.event(event),
            Assembling::Text(a) => a.event(event),
        }
    }

    /// The stream has ended cleanly: its answer goes to the webhooks, with `usage` (else
    /// the usage its events carried).
    pub fn send(self, usage: Option<&Usage>) {
        let answer = match self.assembling {
            Assembling::Chat(a) => a.completion(usage),
            Assembling::Text(a) => a.completion(usage),
        };
        let Some(answer) = answer else {
            return;
        };
        let body = sluice_guard::conceal(&String::from_utf8_lossy(&answer), &self.restore);
        let (state, hooks, model, verdict) = (self.state, self.hooks, self.model, self.verdict);
        let linger = state.lingering.hold();
        let judged = async move {
            let flagged = judge(&state, &hooks, &model, &body).await;
            if let Some(tx) = verdict {
                let _ = tx.send(sluice_guard::summarize(&flagged));
            }
            drop(linger);
        };
        tokio::spawn(judged.instrument(self.span));
    }
}

/// Each webhook's verdict on `body`, a whole answer already sent: what they flag.
async fn judge(state: &AppState, hooks: &[usize], model: &str, body: &str) -> Vec<Finding> {
    let mut flagged = Vec::new();
    for &g in hooks {
        let Some(verdict) = guard_hook::ask(state, g, Phase::Answer, model, body).await else {
            continue;
        };
        let guardrail = state.guardrails[g].name();
        match verdict {
            HookVerdict::Allow => continue,
            HookVerdict::Deny(reason) => tracing::warn!(
                guardrail,
                reason = reason.as_deref().unwrap_or_default(),
                "a webhook denied a streamed answer already sent: flagged"
            ),
            HookVerdict::Rewrite(_) => tracing::warn!(
                guardrail,
                "a webhook rewrote a streamed answer already sent: flagged, not rewritten"
            ),
        }
        flagged.push(Finding {
            guardrail: guardrail.to_string(),
            detector: "webhook".into(),
            action: Action::Flag,
        });
    }
    state.tab_metrics.guarded(&flagged);
    flagged
}
