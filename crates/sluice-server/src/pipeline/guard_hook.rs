//! Webhook guardrails: each configured webhook of the guardrails that apply is POSTed the
//! request (or whole answer) and answers allow, deny or rewrite, within its timeout; a
//! webhook that fails (unreachable, slow, a non-2xx status, not a verdict) allows or
//! denies as its `on_error` says. Denials are 400 `guardrail_blocked` naming the guardrail.

use crate::state::AppState;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http_body_util::BodyExt;
use sluice_core::config::WebhookConfig;
use sluice_core::{Error, ErrorKind};
use sluice_guard::webhook::{self, HookVerdict, Phase};
use sluice_guard::{Action, Finding};
use sluice_providers::UpstreamBody;

/// Runs the webhooks of `indexes` in order over `body`: `Ok(Some(body))` when one rewrote
/// it (later webhooks see the rewrite).
pub async fn run(
    state: &AppState,
    indexes: &[usize],
    phase: Phase,
    model: &str,
    body: &Bytes,
    found: &mut Vec<Finding>,
) -> Result<Option<Bytes>, Error> {
    let mut rewritten: Option<Bytes> = None;
    for &g in indexes {
        let config = &state.guardrails[g];
        let current = rewritten.as_ref().unwrap_or(body);
        let text = std::str::from_utf8(current).unwrap_or_default();
        let Some(answer) = ask(state, g, phase, model, text).await else {
            continue;
        };
        let finding = |action| Finding {
            guardrail: config.name().to_string(),
            detector: "webhook".into(),
            action,
        };
        match answer {
            HookVerdict::Allow => {}
            HookVerdict::Deny(reason) => {
                state.tab_metrics.guarded(&[finding(Action::Block)]);
                found.push(finding(Action::Block));
                return Err(denied(config.name(), reason, phase));
            }
            HookVerdict::Rewrite(new) => {
                state.tab_metrics.guarded(&[finding(Action::Redact)]);
                found.push(finding(Action::Redact));
                rewritten = Some(Bytes::from(new));
            }
        }
    }
    Ok(rewritten)
}

/// Guardrail `g`'s webhook's verdict on `body` (a JSON document), its failure turned into
/// one as its `on_error` says; `None` when the guardrail has no webhook.
pub async fn ask(
    state: &AppState,
    g: usize,
    phase: Phase,
    model: &str,
    body: &str,
) -> Option<HookVerdict> {
    let config = &state.guardrails[g];
    let hook = config.webhook.as_ref()?;
    let payload = webhook::payload(config.name(), phase, model, body);
    Some(match call(state, hook, payload).await {
        Ok(v) => v,
        Err(why) if hook.fail_open => {
            tracing::warn!(guardrail = config.name(), error = %why, "guardrail webhook failed; allowed (on_error = allow)");
            HookVerdict::Allow
        }
        Err(why) => {
            tracing::warn!(guardrail = config.name(), error = %why, "guardrail webhook failed; denied");
            HookVerdict::Deny(Some(format!("the guardrail's webhook failed: {why}")))
        }
    })
}

fn denied(guardrail: &str, reason: Option<String>, phase: Phase) -> Error {
    ErrorKind::GuardrailBlocked {
        guardrail: guardrail.to_string(),
        detector: match reason {
            Some(r) => format!("webhook ({r})"),
            None => "webhook".into(),
        },
        answer: phase == Phase::Answer,
    }
    .into()
}

/// One call: the verdict, or why there is none.
async fn call(
    state: &AppState,
    hook: &WebhookConfig,
    payload: String,
) -> Result<HookVerdict, String> {
    let client = state.webhook_client.as_ref().ok_or("no webhook client")?;
    let mut req = http::Request::post(hook.url.as_str())
        .body(UpstreamBody::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &hook.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.expose()),
        ) {
            h.insert(n, v);
        }
    }
    let exchange = async {
        let response = client.request(req).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        webhook::verdict(&body)
    };
    tokio::time::timeout(hook.timeout, exchange)
        .await
        .map_err(|_| format!("no verdict within {} ms", hook.timeout.as_millis()))?
}
