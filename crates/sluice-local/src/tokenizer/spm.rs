//! SentencePiece encoding of GGUF files with `tokenizer.ggml.model = "llama"` (Llama 2,
//! Mistral, TinyLlama, …), as llama.cpp's `llm_tokenizer_spm` does it, from the vocabulary and
//! the scores in the metadata:
//!
//! 1. The text is split on special tokens (control and user-defined tokens, matched verbatim,
//!    longest first); special tokens become their ids.
//! 2. Each other fragment gets a leading space when it starts the text or follows a special
//!    token (`tokenizer.ggml.add_space_prefix`, default on), and its spaces become `▁`.
//! 3. Starting from single characters, the adjacent pair whose concatenation is a token with the
//!    highest score is merged (the leftmost among equal scores), until no pair is a token.
//! 4. A piece that is not a token (a character outside the vocabulary) becomes its UTF-8 bytes
//!    as `<0xXX>` tokens, or the unknown token where those are missing.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A SentencePiece vocabulary ready to encode.
pub(crate) struct Spm {
    vocab: HashMap<String, u32>,
    scores: Vec<f32>,
    /// `<0xXX>` token of every byte.
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
    /// Tokens matched verbatim, by first byte, longest first.
    specials: HashMap<u8, Vec<(String, u32)>>,
}

/// The escaped space of SentencePiece pieces.
pub(crate) const SPACE: char = '\u{2581}';

/// `<0xXX>` → the byte.
pub(crate) fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

impl Spm {
    /// `tokens[i]` with `scores[i]`; `specials` are the ids matched verbatim in text.
    pub(crate) fn new(
        tokens: &[String],
        scores: Vec<f32>,
        specials: &[u32],
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Self {
        let mut vocab = HashMap::with_capacity(tokens.len());
        let mut bytes = [None; 256];
        for (id, token) in tokens.iter().enumerate() {
            let id = id as u32;
            vocab.entry(token.clone()).or_insert(id);
            if let Some(b) = byte_token(token) {
                bytes[usize::from(b)].get_or_insert(id);
            }
        }
        let mut by_first: HashMap<u8, Vec<(String, u32)>> = HashMap::new();
        for &id in specials {
            let text = &tokens[id as usize];
            if let Some(&first) = text.as_bytes().first() {
                by_first.entry(first).or_default().push((text.clone(), id));
            }
        }
        for list in by_first.values_mut() {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        Self {
            vocab,
            scores,
            bytes,
            unk,
            add_space_prefix,
            specials: by_first,
        }
    }

    /// Encodes `text`, special tokens included, with nothing added.
    pub(crate) fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut prev_special = true;
        let mut plain_start = 0;
        let mut at = 0;
        let bytes = text.as_bytes();
        while at < bytes.len() {
            let special = self.specials.get(&bytes[at]).and_then(|list| {
                list.iter()
                    .find(|(s, _)| text[at..].starts_with(s.as_str()))
            });
            match special {
                Some((s, id)) => {
                    if plain_start < at {
                        self.fragment(&text[plain_start..at], prev_special, &mut out);
                    }
                    out.push(*id);
                    prev_special = true;
                    at += s.len();
                    plain_start = at;
                }
                // Special tokens start at character boundaries: step over a whole character.
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if plain_start < bytes.len() {
            self.fragment(&text[plain_start..], prev_special, &mut out);
        }
        out
    }

    /// One fragment of plain text.
    fn fragment(&self, fragment: &str, prev_special: bool, out: &mut Vec<u32>) {
        let mut text = String::with_capacity(fragment.len() + 3);
        if self.add_space_prefix && prev_special {
            text.push(SPACE);
        }
        for c in fragment.chars() {
            text.push(if c == ' ' { SPACE } else { c });
        }
        self.pieces(&text, out);
    }

    /// Step 3 and 4 over escaped text.
    fn pieces(&self, text: &str, out: &mut Vec<u32>) {
        // Symbols: byte offset and length, linked to their neighbours (`usize::MAX`: none).
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.wrapping_sub(1),
                next: i + 1,
            });
        }
        let Some(last) = syms.last_mut() else { return };
        last.next = NONE;
        let mut queue = BinaryHeap::new();
        let bigram =
            |syms: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<Bigram>| {
                if left == NONE || right == NONE {
                    return;
                }
                let len = syms[left].len + syms[right].len;
                let piece = &text[syms[left].start..syms[left].start + len];
                if let Some(&id) = self.vocab.get(piece) {
                    let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
                    queue.push(Bigram {
                        score,
                        left,
                        right,
                        len,
                    });
                }
            };
        for i in 1..syms.len() {
            bigram(&syms, i - 1, i, &mut queue);
        }
        while let Some(top) = queue.pop() {
            let (l, r) = (top.left, top.right);
            // Stale: one side was merged into something else since.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != top.len {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if syms[r].next != NONE {
                let next = syms[r].next;
                syms[next].prev = l;
            }
            let (prev, next) = (syms[l].prev, syms[l].next);
            bigram(&syms, prev, l, &mut queue);
            bigram(&syms, l, next, &mut queue);
        }
        let mut i = 0;
        while i != NONE {
            let sym = &syms[i];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.vocab.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.bytes[usize::from(b)].or(self.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            i = sym.next;
        }
    }
}

const NONE: usize = usize::MAX;

struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge; the heap pops the highest score, then the leftmost.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<unk> <s> </s>`, the 256 byte tokens, then pieces with scores (higher merges first).
    fn vocab(pieces: &[(&str, f32)]) -> (Vec<String>, Vec<f32>) {
        let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
        let mut scores = vec![0.0; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
        }
        for (piece, score) in pieces {
            tokens.push((*piece).to_owned());
            scores.push(*score);
        }
        (tokens, scores)
    }

    fn id(tokens: &[String], piece: &str) -> u32 {
        tokens.iter().position(|t| t == piece).unwrap() as u32
    }

    const PIECES: &[(&str, f32)] = &[
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("▁h", -3.0),
        ("ll", -4.0),
        ("▁he", -5.0),
        ("llo", -6.0),
        ("▁hello", -7.0),
        ("▁w", -8.0),
        ("or", -9.0),
        ("▁wor", -10.0),
        ("ld", -11.0),
        ("▁world", -12.0),
        ("[INST]", 0.0),
    ];

    #[test]
    fn merges_by_score_with_a_space_prefix() {
        let (tokens, scores) = vocab(PIECES);
        let spm = Spm::new(&tokens, scores, &[1, 2], Some(0), true);
        let ids = spm.encode("hello world");
        assert_eq!(
            ids,
            vec![id(&tokens, "▁hello"), id(&tokens, "▁world")],
            "{:?}",
            ids.iter().map(|&i| &tokens[i as usize]).collect::<Vec<_>>()
        );
        // Without the prefix the first word cannot start with ▁.
        let (tokens, scores) = vocab(PIECES);
        let spm = Spm::new(&tokens, scores, &[1, 2], Some(0), false);
        let ids = spm.encode("hello");
        let pieces: Vec<&str> = ids.iter().map(|&i| tokens[i as usize].as_str()).collect();
        assert_eq!(pieces, ["h", "e", "llo"]);
    }

    /// The pieces `text` encodes to with `tokens` and `scores` (no specials, space prefix on).
    fn pieces_of(tokens: &[String], scores: Vec<f32>, text: &str) -> Vec<String> {
        let spm = Spm::new(tokens, scores, &[], Some(0), true);
        spm.encode(text)
            .iter()
            .map(|&i| tokens[i as usize].clone())
            .collect()
    }

    #[test]
    fn the_higher_score_wins_over_the_leftmost() {
        // "▁ab": "ab" (score -1) beats "▁a" (score -5), though "▁a" is further left.
        let (tokens, scores) = vocab(&[
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("▁a", -5.0),
            ("ab", -1.0),
        ]);
        let pieces = pieces_of(&tokens, scores, "ab");
        assert_eq!(pieces, ["▁", "ab"]);
        // Equal scores: the leftmost pair merges first ("▁a" then "b").
        let (tokens, scores) = vocab(&[
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("▁a", -1.0),
            ("ab", -1.0),
        ]);
        let pieces = pieces_of(&tokens, scores, "ab");
        assert_eq!(pieces, ["▁a", "b"]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let (tokens, scores) = vocab(PIECES);
        let spm = Spm::new(&tokens, scores, &[1, 2], Some(0), true);
        // "é" is not a piece: its two UTF-8 bytes.
        let ids = spm.encode("hé");
        let pieces: Vec<&str> = ids.iter().map(|&i| tokens[i as usize].as_str()).collect();
        assert_eq!(pieces, ["▁h", "<0xC3>", "<0xA9>"]);
    }

    #[test]
    fn special_tokens_split_the_text_and_reset_the_prefix() {
        let (tokens, scores) = vocab(PIECES);
        let inst = id(&tokens, "[INST]");
        let spm = Spm::new(&tokens, scores, &[1, 2, inst], Some(0), true);
        let ids = spm.encode("<s>[INST]hello</s>");
        let pieces: Vec<&str> = ids.iter().map(|&i| tokens[i as usize].as_str()).collect();
        assert_eq!(pieces, ["<s>", "[INST]", "▁hello", "</s>"]);
        // Text after ordinary text gets no prefix; spaces are kept as ▁.
        let ids = spm.encode("hello</s> world");
        let pieces: Vec<&str> = ids.iter().map(|&i| tokens[i as usize].as_str()).collect();
        assert_eq!(pieces, ["▁hello", "</s>", "▁", "▁world"]);
        assert!(spm.encode("").is_empty());
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(byte_token("<0x0A>"), Some(10));
        assert_eq!(byte_token("<0xff>"), Some(255));
        assert_eq!(byte_token("<0x1>"), None);
        assert_eq!(byte_token("hello"), None);
    }
}
