//! The webhook guardrail's protocol (sluice's own, documented in the README): sluice POSTs
//! `{"guardrail", "phase": "request" | "answer", "model", "body"}` (the body as JSON) and
//! the webhook answers `{"action": "allow"}`, `{"action": "deny", "reason": "..."}` or
//! `{"action": "rewrite", "body": {...}}`. No I/O here: the server makes the call.

use serde_json::Value;

/// What a webhook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A request, before it goes anywhere.
    Request,
    /// A whole answer, before it reaches the client.
    Answer,
}

impl Phase {
    /// Its name in the payload.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Answer => "answer",
        }
    }
}

/// The webhook's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    /// Go on as it is.
    Allow,
    /// Refuse, with the webhook's reason if it gave one.
    Deny(Option<String>),
    /// Go on with this body instead (a JSON object, serialised).
    Rewrite(String),
}

/// The payload of a call: `body` must be a JSON document.
pub fn payload(guardrail: &str, phase: Phase, model: &str, body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    serde_json::json!({
        "guardrail": guardrail,
        "phase": phase.as_str(),
        "model": model,
        "body": body,
    })
    .to_string()
}

/// Reads the webhook's answer; `Err` says why it is not a verdict.
pub fn verdict(answer: &[u8]) -> Result<HookVerdict, String> {
    let v: Value =
        serde_json::from_slice(answer).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match v["action"].as_str() {
        Some("allow") => Ok(HookVerdict::Allow),
        Some("deny") => Ok(HookVerdict::Deny(v["reason"].as_str().map(str::to_string))),
        Some("rewrite") => match &v["body"] {
            Value::Object(_) => Ok(HookVerdict::Rewrite(v["body"].to_string())),
            _ => Err("`rewrite` needs a `body` object".into()),
        },
        _ => Err("`action` must be `allow`, `deny` or `rewrite`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(br#"{"action":"allow"}"#), Ok(HookVerdict::Allow));
        assert_eq!(
            verdict(br#"{"action":"deny","reason":"off topic"}"#),
            Ok(HookVerdict::Deny(Some("off topic".into())))
        );
        assert_eq!(
            verdict(br#"{"action":"rewrite","body":{"a":1}}"#),
            Ok(HookVerdict::Rewrite(r#"{"a":1}"#.into()))
        );
        assert!(verdict(br#"{"action":"rewrite","body":"x"}"#).is_err());
        assert!(verdict(b"ok").is_err());
        assert!(verdict(br#"{"action":"maybe"}"#).is_err());
        let p: Value =
            serde_json::from_str(&payload("g", Phase::Answer, "m", r#"{"x":1}"#)).unwrap();
        assert_eq!(p["body"]["x"], 1);
        assert_eq!(p["phase"], "answer");
    }
}
