//! Guardrails as configured, compiled, and what they decide about a body: pass, block
//! (naming the guardrail and the detector, never the value), or redact (each value replaced
//! by a typed placeholder such as `[EMAIL_1]`, the same value by the same placeholder), with
//! every finding counted for metrics and the spend log.

use crate::detect::{self, Builtin, Builtins, Hit};
use crate::json;
use regex::Regex;
use std::collections::HashMap;

/// What a guardrail does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Replace each value with a placeholder before the body goes on.
    Redact,
    /// Refuse the request (400 `guardrail_blocked`); nothing is sent upstream.
    Block,
    /// Count and record only.
    Log,
    /// An answer that did not match the request's JSON schema was asked for again
    /// (`validate_json`; not a configurable action).
    Retry,
    /// An answer that did not match the request's JSON schema was refused.
    Error,
    /// An answer that did not match the request's JSON schema was passed, flagged.
    Pass,
    /// A streamed answer, already sent, that a webhook denied or would have rewritten
    /// (not a configurable action: the answer cannot be taken back, only recorded).
    Flag,
}

impl Action {
    /// Its name in config and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redact => "redact",
            Self::Block => "block",
            Self::Log => "log",
            Self::Retry => "retry",
            Self::Error => "error",
            Self::Pass => "pass",
            Self::Flag => "flag",
        }
    }

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Redact, Self::Block, Self::Log]
            .into_iter()
            .find(|a| a.as_str() == name)
    }
}

/// A custom detector: a name and a regular expression.
#[derive(Debug, Clone)]
struct Custom {
    name: String,
    label: String,
    pattern: Regex,
}

/// One compiled guardrail.
#[derive(Debug, Clone)]
pub struct Guardrail {
    /// Its name.
    pub name: String,
    builtins: Builtins,
    custom: Vec<Custom>,
    /// What it does.
    pub action: Action,
}

impl Guardrail {
    /// Compiles a guardrail: built-in detectors by name, custom ones as `(name, regex)`.
    pub fn new(
        name: &str,
        detectors: &[String],
        custom: &[(String, String)],
        action: Action,
    ) -> Result<Self, String> {
        let mut builtins = Builtins::default();
        for d in detectors {
            let b = Builtin::parse(d).ok_or_else(|| {
                let all: Vec<_> = Builtin::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "unknown detector `{d}`; built-in ones are {}",
                    all.join(", ")
                )
            })?;
            builtins.insert(b);
        }
        let custom = custom
            .iter()
            .map(|(n, p)| {
                let pattern =
                    Regex::new(p).map_err(|e| format!("detector `{n}`: invalid pattern: {e}"))?;
                Ok(Custom {
                    name: n.clone(),
                    label: n
                        .to_ascii_uppercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
                    pattern,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if builtins.is_empty() && custom.is_empty() {
            return Err("a guardrail needs at least one detector".into());
        }
        Ok(Self {
            name: name.to_string(),
            builtins,
            custom,
            action,
        })
    }

    /// What it finds in `text`: (start, end, detector name, placeholder label).
    pub(crate) fn find<'s>(&'s self, text: &str, hits: &mut Vec<Hit>, out: &mut Vec<Found<'s>>) {
        hits.clear();
        detect::scan(text, self.builtins, hits);
        out.extend(hits.iter().map(|h| Found {
            start: h.start,
            end: h.end,
            detector: h.kind.name(),
            label: h.kind.label(),
            guardrail: self,
        }));
        for c in &self.custom {
            out.extend(c.pattern.find_iter(text).map(|m| Found {
                start: m.start(),
                end: m.end(),
                detector: &c.name,
                label: &c.label,
                guardrail: self,
            }));
        }
    }
}

pub(crate) struct Found<'s> {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) detector: &'s str,
    label: &'s str,
    pub(crate) guardrail: &'s Guardrail,
}

/// One value a guardrail found (the value itself is never kept here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The guardrail's name.
    pub guardrail: String,
    /// The detector's name.
    pub detector: String,
    /// What was done.
    pub action: Action,
}

/// What the guardrails decided about a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to change (findings of `log` guardrails, if any, are listed).
    Pass(Vec<Finding>),
    /// Refused: the first blocking finding.
    Blocked(Finding),
    /// Values replaced.
    Redacted {
        /// The body with placeholders.
        body: String,
        /// Every finding.
        findings: Vec<Finding>,
        /// Each placeholder and the value it stands for (to put back in the answer, where
        /// configured).
        placeholders: Vec<(String, String)>,
    },
}

/// Runs `guardrails` over the string values of the JSON document `body`.
pub fn check(guardrails: &[&Guardrail], body: &str) -> Verdict {
    let mut findings = Vec::new();
    let mut edits = Vec::new();
    let mut numbering = Numbering::default();
    let mut blocked = None;
    let mut hits = Vec::new();
    let mut found = Vec::new();
    json::for_each_value(body, |value| {
        if blocked.is_some() || value.text.len() < 5 {
            return;
        }
        found.clear();
        for g in guardrails {
            g.find(&value.text, &mut hits, &mut found);
        }
        if found.is_empty() {
            return;
        }
        for f in &found {
            findings.push(Finding {
                guardrail: f.guardrail.name.clone(),
                detector: f.detector.to_string(),
                action: f.guardrail.action,
            });
            if f.guardrail.action == Action::Block && blocked.is_none() {
                blocked = findings.last().cloned();
            }
        }
        if let Some(text) = redact(&value.text, &mut found, &mut numbering) {
            edits.push((value.span, text));
        }
    });
    if let Some(b) = blocked {
        return Verdict::Blocked(b);
    }
    if edits.is_empty() {
        return Verdict::Pass(findings);
    }
    Verdict::Redacted {
        body: json::apply_edits(body, edits),
        findings,
        placeholders: numbering.into_pairs(),
    }
}

/// Placeholders by value: the same value gets the same one.
#[derive(Default)]
pub(crate) struct Numbering {
    by_value: HashMap<String, String>,
    counts: HashMap<String, usize>,
    order: Vec<(String, String)>,
}

impl Numbering {
    fn placeholder(&mut self, label: &str, value: &str) -> String {
        if let Some(p) = self.by_value.get(value) {
            return p.clone();
        }
        let n = self.counts.entry(label.to_string()).or_insert(0);
        *n += 1;
        let p = format!("[{label}_{n}]");
        self.by_value.insert(value.to_string(), p.clone());
        self.order.push((p.clone(), value.to_string()));
        p
    }

    fn into_pairs(self) -> Vec<(String, String)> {
        self.order
    }
}

/// `text` with the values of redacting guardrails replaced (overlaps: the earliest, then
/// the longest, wins); `None` when nothing is redacted.
pub(crate) fn redact(
    text: &str,
    found: &mut [Found<'_>],
    numbering: &mut Numbering,
) -> Option<String> {
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut any = false;
    for f in found.iter() {
        if f.guardrail.action != Action::Redact || f.start < at {
            continue;
        }
        out.push_str(&text[at..f.start]);
        out.push_str(&numbering.placeholder(f.label, &text[f.start..f.end]));
        at = f.end;
        any = true;
    }
    if !any {
        return None;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// `body` (a JSON answer) with each placeholder put back as its value.
pub fn restore(body: &str, placeholders: &[(String, String)]) -> String {
    let mut out = body.to_string();
    for (p, v) in placeholders {
        if out.contains(p.as_str()) {
            let quoted = serde_json::to_string(v).unwrap_or_default();
            out = out.replace(p.as_str(), &quoted[1..quoted.len() - 1]);
        }
    }
    out
}

/// `body` (a JSON answer) with each value put back as its placeholder: what
/// [`restore`] undid, so that an answer that had its values restored is shown to others
/// (a webhook) as the upstream wrote it.
pub fn conceal(body: &str, placeholders: &[(String, String)]) -> String {
    let mut out = body.to_string();
    for (p, v) in placeholders {
        let quoted = serde_json::to_string(v).unwrap_or_default();
        let escaped = &quoted[1..quoted.len() - 1];
        if !escaped.is_empty() && out.contains(escaped) {
            out = out.replace(escaped, p);
        }
    }
    out
}

/// What guardrails found, for the spend record: `guardrail:detector:action=count`, joined
/// by `,`; `None` when nothing was.
pub fn summarize(found: &[Finding]) -> Option<String> {
    if found.is_empty() {
        return None;
    }
    let mut counts: std::collections::BTreeMap<(&str, &str, &str), u32> = Default::default();
    for f in found {
        *counts
            .entry((&f.guardrail, &f.detector, f.action.as_str()))
            .or_insert(0) += 1;
    }
    let parts: Vec<String> = counts
        .into_iter()
        .map(|((g, d, a), n)| format!("{g}:{d}:{a}={n}"))
        .collect();
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pii(action: Action) -> Guardrail {
        let names: Vec<String> = ["email", "phone", "card"].map(String::from).to_vec();
        Guardrail::new("pii", &names, &[], action).unwrap()
    }

    const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"I am ann@example.com, call +1 415-555-0132; card 4111 1111 1111 1111. Again: ann@example.com"}]}"#;

    #[test]
    fn redacts_with_typed_placeholders_and_restores() {
        let g = pii(Action::Redact);
        let Verdict::Redacted {
            body,
            findings,
            placeholders,
        } = check(&[&g], BODY)
        else {
            panic!("not redacted")
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["messages"][0]["content"],
            "I am [EMAIL_1], call [PHONE_1]; card [CARD_1]. Again: [EMAIL_1]"
        );
        assert_eq!(findings.len(), 4);
        assert!(!body.contains("ann@") && !body.contains("4111") && !body.contains("555"));
        let answer = r#"{"choices":[{"message":{"content":"Hello [EMAIL_1]!"}}]}"#;
        assert_eq!(
            restore(answer, &placeholders),
            r#"{"choices":[{"message":{"content":"Hello ann@example.com!"}}]}"#
        );
        // What `restore` put back, `conceal` takes out again.
        assert_eq!(
            conceal(&restore(answer, &placeholders), &placeholders),
            answer
        );
    }

    #[test]
    fn blocks_naming_the_detector_and_logs_without_changing() {
        let Verdict::Blocked(f) = check(&[&pii(Action::Block)], BODY) else {
            panic!("not blocked")
        };
        assert_eq!(
            (f.guardrail.as_str(), f.detector.as_str()),
            ("pii", "email")
        );
        let Verdict::Pass(findings) = check(&[&pii(Action::Log)], BODY) else {
            panic!("not passed")
        };
        assert_eq!(findings.len(), 4);
        assert!(findings.iter().all(|f| f.action == Action::Log));
        assert_eq!(
            check(
                &[&pii(Action::Block)],
                r#"{"messages":[{"content":"nothing here"}]}"#
            ),
            Verdict::Pass(vec![])
        );
    }

    #[test]
    fn custom_patterns_and_config_errors() {
        let g = Guardrail::new(
            "ids",
            &[],
            &[("employee-id".into(), r"EMP-\d{6}".into())],
            Action::Redact,
        )
        .unwrap();
        let Verdict::Redacted { body, .. } = check(&[&g], r#"{"input":"badge EMP-123456"}"#) else {
            panic!("not redacted")
        };
        assert_eq!(body, r#"{"input":"badge [EMPLOYEE_ID_1]"}"#);
        assert!(Guardrail::new("x", &["mail".into()], &[], Action::Log)
            .unwrap_err()
            .contains("unknown detector `mail`"));
        assert!(
            Guardrail::new("x", &[], &[("y".into(), "(".into())], Action::Log)
                .unwrap_err()
                .contains("invalid pattern")
        );
        assert!(Guardrail::new("x", &[], &[], Action::Log).is_err());
    }
}
