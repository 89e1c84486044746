//! The tokenizer of a GGUF chat model, built from its metadata (`tokenizer.ggml.*`).
//!
//! Two kinds: byte-level BPE (`tokenizer.ggml.model = "gpt2"`: Llama 3, Qwen2, …) and
//! SentencePiece (`"llama"`: Llama 2, Mistral, TinyLlama, …, see [`spm`]); others are rejected
//! with [`ErrorKind::UnsupportedTokenizer`]. For byte-level BPE the pre-tokenizer follows
//! `tokenizer.ggml.pre` like mistral.rs does (llama.cpp's names): `llama3`/`llama-bpe`/… → the
//! Llama-3 split regex with `ignore_merges`, `qwen2`/… → NFC + the Qwen2 regex, `gpt-2`/`default`
//! (or absent) → the GPT-2 regex, `starcoder`/`smollm` → digits then GPT-2. An unknown name is an
//! error rather than a guess: a wrong split silently changes every token count.
//!
//! BPE encoding uses `tokenizers`; decoding is our own: every ordinary token maps to its bytes
//! (through the inverse GPT-2 byte table; for SentencePiece `▁` is a space and `<0xXX>` a byte),
//! control tokens decode to nothing, and [`Utf8Stream`]
//! releases text only once it is valid UTF-8, so streamed deltas concatenate to exactly the
//! final text.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, ErrorKind, Result};
use crate::gguf::metadata::{lenient_u64, string};

mod spm;

const REGEX_GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Template end-of-turn markers that also end generation when present in the vocabulary.
const ALTERNATE_STOP_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|end|>",
    "<|eom_id|>",
];

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// GPT-2's `bytes_to_unicode`: the printable stand-in character of every byte.
pub(crate) fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(byte)
        } else {
            let code = next;
            next += 1;
            code
        };
        table[usize::from(byte)] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// The encoder of either kind.
enum Encoder {
    Bpe(Box<Tokenizer>),
    Spm(Box<spm::Spm>),
}

/// A GGUF model's tokenizer with the special tokens a chat model needs.
pub(crate) struct GgufTokenizer {
    encoder: Encoder,
    /// SentencePiece with a space prefix: the first generated token's leading space is not
    /// part of the answer (as Hugging Face's decoder strips it).
    pub(crate) strip_first_space: bool,
    /// Bytes of every id; `None` for control tokens (decode to nothing).
    token_bytes: Vec<Option<Vec<u8>>>,
    pub(crate) tokens: Vec<String>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) add_bos: bool,
    /// Token ids that end generation (EOS, EOT and end-of-turn markers).
    pub(crate) stop_ids: Vec<u32>,
}

// === impl GgufTokenizer ===

impl GgufTokenizer {
    pub(crate) fn from_metadata(md: &HashMap<String, Value>) -> Result<Self> {
        let model = string(md, "tokenizer.ggml.model")?;
        if model != "gpt2" && model != "llama" {
            return Err(ErrorKind::UnsupportedTokenizer(format!(
                "`tokenizer.ggml.model = {model:?}` (supported: byte-level BPE, \"gpt2\", and \
                 SentencePiece, \"llama\")"
            ))
            .into());
        }
        let tokens = string_array(md, "tokenizer.ggml.tokens")?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| match *v {
                    Value::I32(t) => Ok(t),
                    Value::U32(t) => i32::try_from(t).map_err(|_| ()),
                    _ => Err(()),
                })
                .collect::<Result<_, ()>>()
                .map_err(|()| {
                    Error::invalid_metadata("tokenizer.ggml.token_type", "expected integers")
                })?,
            Some(_) => {
                return Err(Error::invalid_metadata(
                    "tokenizer.ggml.token_type",
                    "expected an array",
                ))
            }
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::invalid_metadata(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let id = |key: &str| -> Result<Option<u32>> {
            match md.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = lenient_u64(v)
                        .and_then(|v| u32::try_from(v).ok())
                        .filter(|&id| (id as usize) < tokens.len())
                        .ok_or_else(|| {
                            Error::invalid_metadata(key, "not a token id of the vocabulary")
                        })?;
                    Ok(Some(id))
                }
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let add_bos = match md.get("tokenizer.ggml.add_bos_token") {
            Some(Value::Bool(b)) => *b,
            // SentencePiece models start with BOS unless they say otherwise (llama.cpp).
            _ => model == "llama",
        };
        let markers = [bos, eos, eot];
        let (encoder, token_bytes, strip_first_space) = if model == "llama" {
            sentencepiece(md, &tokens, &types, markers)?
        } else {
            byte_level_bpe(md, &tokens, &types, markers)?
        };
        let stop_ids = stop_ids_of(&tokens, eos, eot);
        Ok(Self {
            encoder,
            strip_first_space,
            token_bytes,
            tokens,
            bos,
            eos,
            add_bos,
            stop_ids,
        })
    }
}
/// What each kind builds: the encoder, the bytes of every id, and whether the answer's first
/// space is the encoder's prefix (see [`GgufTokenizer::strip_first_space`]).
type Parts = (Encoder, Vec<Option<Vec<u8>>>, bool);

/// The byte-level BPE side of [`GgufTokenizer::from_metadata`].
fn byte_level_bpe(
    md: &HashMap<String, Value>,
    tokens: &[String],
    types: &[i32],
    [bos, eos, eot]: [Option<u32>; 3],
) -> Result<Parts> {
    let merges = string_array(md, "tokenizer.ggml.merges")?;

    let pre = match md.get("tokenizer.ggml.pre") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(Error::invalid_metadata(
                "tokenizer.ggml.pre",
                "expected a string",
            ))
        }
        None => "default",
    };
    let (regexes, ignore_merges, nfc): (&[&str], bool, bool) = match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "lfm2" | "pixtral" | "smaug-bpe" => {
            (&[REGEX_LLAMA3], true, false)
        }
        "qwen2" | "deepseek-r1-qwen" | "hunyuan" => (&[REGEX_QWEN2], false, true),
        "gpt-2" | "gpt2" | "phi-2" | "default" => (&[REGEX_GPT2], false, false),
        "starcoder" | "smollm" => (&[r"\p{N}", REGEX_GPT2], false, false),
        other => {
            return Err(ErrorKind::UnsupportedTokenizer(format!(
                "pre-tokenizer `tokenizer.ggml.pre = {other:?}`"
            ))
            .into())
        }
    };

    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (i, token) in tokens.iter().enumerate() {
        let id = u32::try_from(i)
            .map_err(|_| Error::invalid_metadata("tokenizer.ggml.tokens", "too many tokens"))?;
        vocab.entry(token.clone()).or_insert(id);
    }
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| {
                    Error::invalid_metadata(
                        "tokenizer.ggml.merges",
                        format!("merge {m:?} has no space"),
                    )
                })
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(Error::tokenizer)?;
    let mut tokenizer = Tokenizer::new(bpe);
    if nfc {
        tokenizer
            .with_normalizer(Some(NFC))
            .map_err(Error::tokenizer)?;
    }
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for regex in regexes {
        let split = Split::new(
            SplitPattern::Regex((*regex).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(Error::tokenizer)?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));

    let mut control = vec![false; tokens.len()];
    let mut specials = Vec::new();
    let mut user_defined = Vec::new();
    for (i, (token, kind)) in tokens.iter().zip(types).enumerate() {
        let is_marker = [bos, eos, eot].contains(&u32::try_from(i).ok());
        if *kind == TOKEN_TYPE_CONTROL || is_marker {
            control[i] = true;
            specials.push(AddedToken::from(token.clone(), true));
        } else if *kind == TOKEN_TYPE_USER_DEFINED {
            user_defined.push(AddedToken::from(token.clone(), false).normalized(false));
        }
    }
    tokenizer
        .add_special_tokens(specials)
        .map_err(Error::tokenizer)?;
    tokenizer
        .add_tokens(user_defined)
        .map_err(Error::tokenizer)?;

    let chars = byte_chars();
    let inverse: HashMap<char, u8> = (0..=255u8).map(|b| (chars[usize::from(b)], b)).collect();
    let token_bytes = tokens
        .iter()
        .zip(&control)
        .map(|(token, &is_control)| {
            if is_control {
                return None;
            }
            let bytes: Option<Vec<u8>> = token.chars().map(|c| inverse.get(&c).copied()).collect();
            // Tokens outside the byte alphabet (user-defined text) decode as their UTF-8.
            Some(bytes.unwrap_or_else(|| token.as_bytes().to_vec()))
        })
        .collect();
    Ok((Encoder::Bpe(Box::new(tokenizer)), token_bytes, false))
}

/// The SentencePiece side of [`GgufTokenizer::from_metadata`].
fn sentencepiece(
    md: &HashMap<String, Value>,
    tokens: &[String],
    types: &[i32],
    [bos, eos, eot]: [Option<u32>; 3],
) -> Result<Parts> {
    let scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| match *v {
                Value::F32(s) => Ok(s),
                Value::F64(s) => Ok(s as f32),
                _ => Err(()),
            })
            .collect::<Result<_, ()>>()
            .map_err(|()| Error::invalid_metadata("tokenizer.ggml.scores", "expected floats"))?,
        _ => {
            return Err(Error::invalid_metadata(
                "tokenizer.ggml.scores",
                "SentencePiece needs the scores of its tokens",
            ))
        }
    };
    if scores.len() != tokens.len() {
        return Err(Error::invalid_metadata(
            "tokenizer.ggml.scores",
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let unk = match md
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(lenient_u64)
    {
        Some(id) => u32::try_from(id)
            .ok()
            .filter(|&id| (id as usize) < tokens.len()),
        None => None,
    };
    let add_space_prefix = match md.get("tokenizer.ggml.add_space_prefix") {
        Some(Value::Bool(b)) => *b,
        _ => true,
    };
    let markers = [bos, eos, eot];
    let mut specials = Vec::new();
    let token_bytes = tokens
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (token, &kind))| {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            let marker = markers.contains(&Some(id));
            if kind == TOKEN_TYPE_CONTROL || kind == TOKEN_TYPE_USER_DEFINED || marker {
                specials.push(id);
            }
            if kind == TOKEN_TYPE_CONTROL || kind == TOKEN_TYPE_UNKNOWN || marker {
                return None;
            }
            if kind == TOKEN_TYPE_BYTE {
                if let Some(b) = spm::byte_token(token) {
                    return Some(vec![b]);
                }
            }
            if kind == TOKEN_TYPE_USER_DEFINED {
                return Some(token.as_bytes().to_vec());
            }
            Some(token.replace(spm::SPACE, " ").into_bytes())
        })
        .collect();
    let encoder = spm::Spm::new(tokens, scores, &specials, unk, add_space_prefix);
    Ok((
        Encoder::Spm(Box::new(encoder)),
        token_bytes,
        add_space_prefix,
    ))
}

impl GgufTokenizer {
    /// Encodes text with special tokens matched (`<|im_start|>` becomes one id) and nothing added.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.encoder {
            Encoder::Bpe(tokenizer) => {
                let encoding = tokenizer.encode(text, false).map_err(Error::tokenizer)?;
                Ok(encoding.get_ids().to_vec())
            }
            Encoder::Spm(spm) => Ok(spm.encode(text)),
        }
    }

    /// Encodes a rendered prompt, prepending BOS when the model asks for it
    /// (`tokenizer.ggml.add_bos_token`) and the template did not already emit it.
    pub(crate) fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(prompt)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The bytes a token decodes to (empty for control tokens and unknown ids).
    pub(crate) fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .and_then(|b| b.as_deref())
            .unwrap_or(&[])
    }

    /// Decodes ids to text (control tokens skipped, invalid UTF-8 replaced).
    pub(crate) fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The text of a token id, for `bos_token`/`eos_token` in templates.
    pub(crate) fn token_text(&self, id: Option<u32>) -> String {
        id.and_then(|id| self.tokens.get(id as usize))
            .cloned()
            .unwrap_or_default()
    }
}

/// EOS, EOT and the end-of-turn markers of the vocabulary.
fn stop_ids_of(tokens: &[String], eos: Option<u32>, eot: Option<u32>) -> Vec<u32> {
    let mut stop_ids: Vec<u32> = [eos, eot].into_iter().flatten().collect();
    for marker in ALTERNATE_STOP_TOKENS {
        if let Some(id) = tokens.iter().position(|t| t == marker) {
            if let Ok(id) = u32::try_from(id) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
    }
    stop_ids
}

fn string_array(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    match md.get(key) {
        None => Err(ErrorKind::MissingMetadata(key.to_owned()).into()),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(Error::invalid_metadata(key, "expected an array of strings")),
            })
            .collect(),
        Some(_) => Err(Error::invalid_metadata(key, "expected an array of strings")),
    }
}

/// Turns a stream of token bytes into text deltas that are always valid UTF-8.
///
/// Bytes of an incomplete character wait for the next token; a byte sequence that can never be
/// valid becomes U+FFFD (as `String::from_utf8_lossy` would), so the deltas concatenate to the
/// lossy decoding of all bytes.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

// === impl Utf8Stream ===

impl Utf8Stream {
    /// Adds bytes; returns the text that became complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match error.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes an incomplete trailing character as U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let chars = byte_chars();
        assert_eq!(chars[usize::from(b' ')], 'Ġ');
        assert_eq!(chars[usize::from(b'\n')], 'Ċ');
        assert_eq!(chars[usize::from(b'a')], 'a');
        let unique: std::collections::HashSet<char> = chars.iter().copied().collect();
        assert_eq!(unique.len(), 256);
    }

    #[test]
    fn utf8_stream_waits_for_complete_characters() {
        let mut stream = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(stream.push(&euro[..1]), "");
        assert_eq!(stream.push(&euro[1..2]), "");
        assert_eq!(stream.push(&[euro[2], b'a']), "€a");
        assert_eq!(stream.push(&[0xFF, b'b']), "\u{FFFD}b");
        assert_eq!(stream.push(&[0xE2]), "");
        assert_eq!(stream.finish(), "\u{FFFD}");
    }

    /// A Mistral-like SentencePiece vocabulary as GGUF metadata: `<unk> <s> </s>`, the byte
    /// tokens, pieces with scores, and one user-defined token.
    fn spm_metadata() -> HashMap<String, Value> {
        let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
        let mut types = vec![TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
        let mut scores = vec![0.0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TOKEN_TYPE_BYTE);
            scores.push(0.0);
        }
        for (i, piece) in ["▁", "h", "i", "▁h", "▁hi", "!", "[INST]"]
            .iter()
            .enumerate()
        {
            tokens.push((*piece).to_owned());
            types.push(if *piece == "[INST]" {
                TOKEN_TYPE_USER_DEFINED
            } else {
                1
            });
            scores.push(-(i as f32));
        }
        let array = |values: Vec<Value>| Value::Array(values);
        HashMap::from([
            (
                "tokenizer.ggml.model".to_owned(),
                Value::String("llama".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_owned(),
                array(tokens.into_iter().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type".to_owned(),
                array(types.into_iter().map(Value::I32).collect()),
            ),
            (
                "tokenizer.ggml.scores".to_owned(),
                array(scores.into_iter().map(Value::F32).collect()),
            ),
            ("tokenizer.ggml.bos_token_id".to_owned(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".to_owned(), Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id".to_owned(), Value::U32(0)),
        ])
    }

    #[test]
    fn sentencepiece_gguf_encodes_and_decodes() {
        let tokenizer = GgufTokenizer::from_metadata(&spm_metadata()).unwrap();
        let pieces = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&i| tokenizer.tokens[i as usize].clone())
                .collect()
        };
        // BOS by default; the user-defined token is matched verbatim; "é" falls back to bytes.
        let ids = tokenizer.encode_prompt("[INST]hi hé!").unwrap();
        assert_eq!(
            pieces(&ids),
            ["<s>", "[INST]", "▁hi", "▁h", "<0xC3>", "<0xA9>", "!"]
        );
        assert_eq!(tokenizer.decode(&ids), "[INST] hi hé!");
        assert_eq!(tokenizer.stop_ids, vec![2]);
        assert_eq!(tokenizer.token_text(tokenizer.bos), "<s>");
        assert!(tokenizer.strip_first_space);
        assert_eq!(tokenizer.token_bytes(0), b"", "<unk> decodes to nothing");
    }

    #[test]
    fn sentencepiece_without_scores_is_refused() {
        let mut md = spm_metadata();
        md.remove("tokenizer.ggml.scores");
        let error = GgufTokenizer::from_metadata(&md).err().unwrap();
        assert!(
            error.to_string().contains("tokenizer.ggml.scores"),
            "{error}"
        );
        md.insert(
            "tokenizer.ggml.model".to_owned(),
            Value::String("bert".into()),
        );
        let error = GgufTokenizer::from_metadata(&md).err().unwrap();
        assert!(error.to_string().contains("\"bert\""), "{error}");
    }
}
