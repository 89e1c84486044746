//! What is kept of a sampled body: the same body with every secret and redacted value
//! replaced by a placeholder, or a note of its size.

use bytes::Bytes;
use sluice_guard::{Guardrail, Verdict};
use std::sync::Arc;

/// The guardrails that clean a sample: the secret detector, then every `redact` one.
pub type Cleaners = Arc<[Arc<Guardrail>]>;

/// A note of a body's size, kept instead of the body.
pub(super) fn omitted(len: usize) -> Bytes {
    Bytes::from(format!("{{\"sluice_omitted_bytes\":{len}}}"))
}

/// `body` with every value `cleaners` find replaced by a placeholder; a body that is not
/// JSON is kept only as its size (the detectors read JSON's strings: what they cannot read
/// is not kept).
pub(super) fn clean(cleaners: &[Arc<Guardrail>], body: Bytes) -> Bytes {
    let json = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
    let text = match std::str::from_utf8(&body) {
        Ok(t) if json => t,
        _ => return omitted(body.len()),
    };
    let guards: Vec<&Guardrail> = cleaners.iter().map(|g| &**g).collect();
    match sluice_guard::check(&guards, text) {
        Verdict::Redacted { body, .. } => Bytes::from(body),
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guard::Action;

    #[test]
    fn secrets_and_redacted_values_are_replaced_and_other_bodies_omitted() {
        let secret = Guardrail::new("s", &["secret".into()], &[], Action::Redact).unwrap();
        let email = Guardrail::new("e", &["email".into()], &[], Action::Redact).unwrap();
        let cleaners = [Arc::new(secret), Arc::new(email)];
        let body = r#"{"messages":[{"content":"key sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789ABCD to bob@example.com"}]}"#;
        let cleaned = clean(&cleaners, Bytes::from(body));
        let text = std::str::from_utf8(&cleaned).unwrap();
        assert!(
            !text.contains("sk-proj-") && !text.contains("bob@"),
            "{text}"
        );
        assert!(
            text.contains("[SECRET_1]") && text.contains("[EMAIL_1]"),
            "{text}"
        );
        let plain = Bytes::from_static(br#"{"a":"nothing to see"}"#);
        assert_eq!(clean(&cleaners, plain.clone()), plain);
        assert_eq!(
            clean(&cleaners, Bytes::from_static(b"\xff\xfeaudio")),
            omitted(7)
        );
    }
}
