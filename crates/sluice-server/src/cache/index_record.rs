//! A question of the semantic index as the cache store keeps it beside its entry (see
//! `sluice_store::IndexRecord`), so that a restarted gateway, or another replica on the same
//! Redis, rebuilds the index from the store.
//!
//! Layout: the version byte `1`; the context key (32 bytes); the vector's dimension (`u32`,
//! little-endian) and its normalised components (`f32`, little-endian); the question's UTF-8
//! text to the end. A record of another version or shape decodes to nothing (skipped).

use bytes::Bytes;
use sluice_store::Key;

const VERSION: u8 = 1;

/// A question answered by an entry: what the index holds of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Its context: the request without the question, as a key.
    pub context: Key,
    /// The question's normalised embedding.
    pub vector: Vec<f32>,
    /// Its text, for the wording checks.
    pub text: String,
}

impl Question {
    /// The record's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(1 + 32 + 4 + 4 * self.vector.len() + self.text.len());
        out.push(VERSION);
        out.extend_from_slice(&self.context);
        out.extend_from_slice(&(self.vector.len() as u32).to_le_bytes());
        for x in &self.vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(self.text.as_bytes());
        Bytes::from(out)
    }

    /// The question in `raw`, or `None` when it is not a record this version wrote.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let (&version, rest) = raw.split_first()?;
        if version != VERSION || rest.len() < 36 {
            return None;
        }
        let (context, rest) = rest.split_at(32);
        let (dim, rest) = rest.split_at(4);
        let dim = u32::from_le_bytes(dim.try_into().ok()?) as usize;
        let bytes = dim.checked_mul(4).filter(|n| *n <= rest.len())?;
        let (vector, text) = rest.split_at(bytes);
        Some(Self {
            context: context.try_into().ok()?,
            vector: vector
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            text: String::from_utf8(text.to_vec()).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let q = Question {
            context: [7; 32],
            vector: vec![0.6, -0.8, 0.0],
            text: "Où est la gare ?".into(),
        };
        let raw = q.encode();
        assert_eq!(Question::decode(&raw), Some(q.clone()));
        let empty = Question {
            vector: Vec::new(),
            text: String::new(),
            ..q
        };
        assert_eq!(Question::decode(&empty.encode()), Some(empty));
        // Another version, a cut vector, a dimension past the end, invalid UTF-8, nothing.
        let mut other = raw.to_vec();
        other[0] = 2;
        assert_eq!(Question::decode(&other), None);
        assert_eq!(Question::decode(&raw[..40]), None);
        let mut huge = raw.to_vec();
        huge[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Question::decode(&huge), None);
        let mut bad = raw.to_vec();
        bad.push(0xff);
        assert_eq!(Question::decode(&bad), None);
        assert_eq!(Question::decode(&[]), None);
    }
}
