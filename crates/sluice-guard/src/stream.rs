//! Guardrails over an answer that arrives in pieces (a streamed chat answer's content
//! deltas): the text is held back by a window, so that a value split across pieces is seen
//! whole before any of it is released, and a placeholder to restore is put back whole.
//! A block ends the stream (the caller sends an error event); nothing of the value leaves.

use crate::policy::{redact, Finding, Found, Guardrail, Numbering};
use std::sync::Arc;

/// Bytes of text held back (longer values than this can be cut by a release).
pub const WINDOW: usize = 256;

/// The held-back text of one streamed answer.
pub struct Holdback {
    guards: Vec<Arc<Guardrail>>,
    restore: Vec<(String, String)>,
    buffer: String,
    numbering: Numbering,
    findings: Vec<Finding>,
}

impl Holdback {
    /// Holds back text for `guards` (answer guardrails) and puts `restore`'s placeholders back.
    pub fn new(guards: Vec<Arc<Guardrail>>, restore: Vec<(String, String)>) -> Self {
        Self {
            guards,
            restore,
            buffer: String::new(),
            numbering: Numbering::default(),
            findings: Vec::new(),
        }
    }

    /// A hold-back of its own for another text of the same answer (a tool call's arguments),
    /// with the same guardrails and placeholders to put back.
    pub fn sibling(&self) -> Self {
        Self::new(self.guards.clone(), self.restore.clone())
    }

    /// Adds a piece; returns the text that may be released now, or the finding that blocks.
    pub fn push(&mut self, piece: &str) -> Result<String, Finding> {
        self.buffer.push_str(piece);
        if self.buffer.len() <= WINDOW {
            return Ok(String::new());
        }
        let mut cut = self.buffer.len() - WINDOW;
        while !self.buffer.is_char_boundary(cut) {
            cut -= 1;
        }
        self.release(cut)
    }

    /// The stream ended: everything left.
    pub fn finish(&mut self) -> Result<String, Finding> {
        self.release(self.buffer.len())
    }

    /// What the guardrails found so far (taken).
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// Releases the buffer up to `cut` (moved back so that no value or placeholder is cut).
    fn release(&mut self, mut cut: usize) -> Result<String, Finding> {
        let mut hits = Vec::new();
        let mut found: Vec<Found<'_>> = Vec::new();
        for g in &self.guards {
            g.find(&self.buffer, &mut hits, &mut found);
        }
        if let Some(b) = found
            .iter()
            .find(|f| f.guardrail.action == crate::Action::Block)
        {
            return Err(Finding {
                guardrail: b.guardrail.name.clone(),
                detector: b.detector.to_string(),
                action: crate::Action::Block,
            });
        }
        for f in &found {
            if f.start < cut && cut < f.end {
                cut = f.start;
            }
        }
        cut = self.before_open_placeholder(cut);
        found.retain(|f| f.end <= cut);
        for f in &found {
            self.findings.push(Finding {
                guardrail: f.guardrail.name.clone(),
                detector: f.detector.to_string(),
                action: f.guardrail.action,
            });
        }
        let head = &self.buffer[..cut];
        let mut text =
            redact(head, &mut found, &mut self.numbering).unwrap_or_else(|| head.to_string());
        for (p, v) in &self.restore {
            if text.contains(p.as_str()) {
                text = text.replace(p.as_str(), v);
            }
        }
        self.buffer.drain(..cut);
        Ok(text)
    }

    /// `cut`, moved before a `[` that may open a placeholder not closed before it.
    fn before_open_placeholder(&self, cut: usize) -> usize {
        if self.restore.is_empty() {
            return cut;
        }
        let head = &self.buffer.as_bytes()[..cut];
        match memchr::memrchr(b'[', head) {
            Some(open) if cut - open < 32 && !head[open..].contains(&b']') => open,
            _ => cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Action;

    fn pii(action: Action) -> Arc<Guardrail> {
        Arc::new(Guardrail::new("pii", &["email".into(), "card".into()], &[], action).unwrap())
    }

    /// Feeds `text` in pieces of `size` bytes; returns all released text.
    fn feed(h: &mut Holdback, text: &str, size: usize) -> Result<String, Finding> {
        let mut out = String::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(size) {
            out.push_str(&h.push(&piece.iter().collect::<String>())?);
        }
        out.push_str(&h.finish()?);
        Ok(out)
    }

    #[test]
    fn a_value_split_across_pieces_is_still_redacted() {
        let filler = "lorem ipsum dolor sit amet ".repeat(30);
        let text =
            format!("{filler}write to ann@example.com or pay with 4111 1111 1111 1111. {filler}");
        for size in [1, 3, 7, 50, 400] {
            let mut h = Holdback::new(vec![pii(Action::Redact)], vec![]);
            let out = feed(&mut h, &text, size).unwrap();
            assert_eq!(
                out,
                format!("{filler}write to [EMAIL_1] or pay with [CARD_1]. {filler}"),
                "pieces of {size}"
            );
            assert_eq!(h.take_findings().len(), 2);
        }
    }

    #[test]
    fn a_block_ends_before_the_value_leaves() {
        let text = format!("{} the card is 4111 1111 1111 1111", "x ".repeat(300));
        let mut h = Holdback::new(vec![pii(Action::Block)], vec![]);
        let mut released = String::new();
        let mut blocked = None;
        for c in text.chars() {
            match h.push(&c.to_string()) {
                Ok(t) => released.push_str(&t),
                Err(f) => {
                    blocked = Some(f);
                    break;
                }
            }
        }
        let f = blocked.or_else(|| h.finish().err()).expect("blocked");
        assert_eq!(f.detector, "card");
        assert!(!released.contains("4111"), "{released}");
    }

    #[test]
    fn placeholders_split_across_pieces_are_restored() {
        let restore = vec![("[EMAIL_1]".to_string(), "ann@example.com".to_string())];
        let text = format!("{}Hello [EMAIL_1], and again [EMAIL_1].", "y".repeat(500));
        for size in [1, 2, 5, 9] {
            let mut h = Holdback::new(vec![], restore.clone());
            let out = feed(&mut h, &text, size).unwrap();
            assert_eq!(
                out,
                format!(
                    "{}Hello ann@example.com, and again ann@example.com.",
                    "y".repeat(500)
                )
            );
        }
    }
}
