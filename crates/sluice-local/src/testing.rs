//! Writes small GGUF chat models with random weights, for tests and benchmarks.
//!
//! The weights come from a seeded SplitMix64 generator (candle's CPU device cannot be seeded),
//! so the same [`TestModel`] always writes the same file. The metadata is real: llama.cpp's keys
//! for `llama`/`qwen2`, a byte-level BPE vocabulary (the 256 GPT-2 byte tokens, a few merges and
//! the template's control tokens) or a SentencePiece one ([`TestModel::sentencepiece`]),
//! `tokenizer.ggml.pre`, BOS/EOS ids and a Jinja
//! `tokenizer.chat_template`. Output rows of control tokens and of non-printable bytes are damped
//! so random models mostly generate printable ASCII and rarely end early.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{Error, ErrorKind, Result};
use crate::tokenizer::byte_chars;

pub mod json_schema;

/// Llama-3-style chat template of the llama test model.
pub const LLAMA_TEMPLATE: &str = "{{- bos_token }}\n{%- for message in messages %}\n    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";

/// ChatML template (Qwen2.5-style default system prompt) of the qwen2 test model.
pub const QWEN2_TEMPLATE: &str = "{%- for message in messages %}\n    {%- if loop.first and message['role'] != 'system' %}\n        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";

/// A ChatML template with Qwen2.5's (Hermes) tool format, written for the tests from its
/// documented shape: the tools as JSON lines in `<tools>` in the system turn, an assistant's
/// calls as `<tool_call>` JSON, tool results as a user turn of `<tool_response>` blocks.
pub const HERMES_TEMPLATE: &str = concat!(
    "{% if tools %}{{ '<|im_start|>system\\n' }}",
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}",
    "{{ '# Tools\\n\\nYou may call one or more functions. Function signatures within <tools></tools>:\\n<tools>' }}",
    "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}",
    "{{ '\\n</tools>\\n\\nFor each call, return a JSON object with the function name and arguments within <tool_call></tool_call>:\\n' }}",
    "{{ '<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}",
    "{% elif messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{% endif %}",
    "{% for message in messages %}",
    "{% if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}",
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
    "{% elif message.role == 'assistant' %}{{ '<|im_start|>assistant' }}",
    "{% if message.content %}{{ '\\n' + message.content }}{% endif %}",
    "{% for call in message.tool_calls %}{{ '\\n<tool_call>\\n{\"name\": \"' + call.function.name + '\", \"arguments\": ' + (call.function.arguments | tojson) + '}\\n</tool_call>' }}{% endfor %}",
    "{{ '<|im_end|>\\n' }}",
    "{% elif message.role == 'tool' %}",
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{% endif %}",
    "{{ '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}",
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\\n' }}{% endif %}",
    "{% endif %}{% endfor %}",
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
);

const LLAMA_SPECIALS: &[&str] = &[
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];
const QWEN2_SPECIALS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// Phi-3's: SentencePiece's `<unk> <s> </s>`, then its added chat tokens (a subset).
const PHI3_SPECIALS: &[&str] = &[
    "<unk>",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
    "<|user|>",
];

/// Gemma's (SentencePiece): `<unk>`, BOS, EOS and the turn markers.
const GEMMA_SPECIALS: &[&str] = &[
    "<unk>",
    "<bos>",
    "<eos>",
    "<start_of_turn>",
    "<end_of_turn>",
];

/// Gemma 2's chat template (text only): no system role, which it refuses.
pub const GEMMA2_TEMPLATE: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

/// Gemma 3's chat template (text only): a system message becomes the first user turn's
/// opening paragraph.
pub const GEMMA3_TEMPLATE: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}";

/// Phi-3.5-mini-instruct's chat template.
pub const PHI3_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";
/// `<unk>` (type unknown), then BOS and EOS (control).
const SPM_SPECIALS: &[&str] = &["<unk>", "<s>", "</s>"];

/// Mistral-style template of the SentencePiece llama test model (`[INST]` is plain text).
pub const SPM_TEMPLATE: &str = "{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}{%- endfor %}";

const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("Ġ", "a"),
    ("o", "n"),
    ("r", "e"),
    ("a", "t"),
    ("e", "n"),
    ("Ġ", "s"),
    ("o", "r"),
    ("a", "n"),
    ("i", "s"),
    ("l", "l"),
    ("Ġ", "w"),
    ("Ġt", "he"),
    ("Ġ", "h"),
    ("l", "o"),
    ("Ġ", "H"),
    ("e", "l"),
    ("Ġ", "o"),
    ("Ġ", "c"),
    ("e", "s"),
    ("o", "u"),
    ("i", "t"),
    ("Ġw", "or"),
    ("l", "d"),
    ("Ġwor", "ld"),
    ("H", "el"),
    ("Hel", "lo"),
    ("Ġ", "i"),
    ("Ġ", "b"),
];

/// Which model family to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestArch {
    /// `llama`: Llama-3-style template, `pre = "llama-bpe"`, separate `output.weight`.
    Llama,
    /// `qwen2`: ChatML template, `pre = "qwen2"`, q/k/v biases, output tied to the embeddings.
    Qwen2,
    /// `phi3`: as llama.cpp's converter writes Phi-3 mini: fused `attn_qkv` (q, k, v rows) and
    /// `ffn_up` (gate rows, then up rows), no `ffn_gate`, separate `output.weight`, a
    /// SentencePiece vocabulary with Phi-3's chat tokens and [`PHI3_TEMPLATE`].
    Phi3,
    /// `gemma2`: as llama.cpp's converter writes Gemma 2: head size from
    /// `attention.key_length` (twice hidden / heads here), post-attention and post-FFN norms,
    /// soft-capping keys (attention 1.5, final 2.0: far below the real 50 and 30, so that the
    /// caps bend this model's small logits), `attention.sliding_window`, output tied to the embeddings, a
    /// SentencePiece vocabulary without space prefix and [`GEMMA2_TEMPLATE`].
    Gemma2,
    /// `gemma3`: as [`TestArch::Gemma2`] plus `attn_q_norm`/`attn_k_norm`, a global rope base of
    /// 1,000,000 (sliding layers: llama.cpp's default 10,000), no soft-capping,
    /// [`GEMMA3_TEMPLATE`].
    Gemma3,
}

// === impl TestArch ===

impl TestArch {
    /// `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Phi3 => "phi3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
        }
    }

    fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }
}

/// The tensor type of the weight matrices (norms and biases stay F32, as llama.cpp writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDType {
    /// `general.file_type = 0`.
    F32,
    /// `general.file_type = 1`.
    F16,
    /// `general.file_type = 7`; rows must be multiples of 32.
    Q8_0,
    /// `general.file_type = 2`; rows must be multiples of 32.
    Q4_0,
    /// `general.file_type = 15`: Q4K, with Q6K for `output` and for `attn_v`/`ffn_down` of the
    /// layers llama.cpp's `use_more_bits` picks; rows must be multiples of 32, and those that
    /// are not multiples of 256 take llama.cpp's fallbacks, Q5_0 and Q8_0.
    Q4KM,
    /// `general.file_type = 32`.
    BF16,
    /// `general.file_type = 3`; rows must be multiples of 32.
    Q4_1,
    /// `general.file_type = 8`; rows must be multiples of 32.
    Q5_0,
    /// `general.file_type = 9`; rows must be multiples of 32.
    Q5_1,
    /// `general.file_type = 10` (every matrix Q2_K); rows must be multiples of 256.
    Q2K,
    /// `general.file_type = 11` (every matrix Q3_K); rows must be multiples of 256.
    Q3K,
    /// `general.file_type = 16` (every matrix Q5_K); rows must be multiples of 32, and those that
    /// are not multiples of 256 take llama.cpp's fallback, Q5_1.
    Q5K,
}

// === impl TestDType ===

impl TestDType {
    /// Every dtype, for tests that loop over them.
    pub const ALL: [TestDType; 12] = [
        Self::F32,
        Self::F16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4KM,
        Self::BF16,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q2K,
        Self::Q3K,
        Self::Q5K,
    ];

    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q8_0 => 7,
            Self::Q4KM => 15,
            Self::BF16 => 32,
            Self::Q4_1 => 3,
            Self::Q5_0 => 8,
            Self::Q5_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q5K => 16,
        }
    }

    fn base(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4KM => GgmlDType::Q4K,
            Self::BF16 => GgmlDType::BF16,
            Self::Q4_1 => GgmlDType::Q4_1,
            Self::Q5_0 => GgmlDType::Q5_0,
            Self::Q5_1 => GgmlDType::Q5_1,
            Self::Q2K => GgmlDType::Q2K,
            Self::Q3K => GgmlDType::Q3K,
            Self::Q5K => GgmlDType::Q5K,
        }
    }

    /// The row multiple the type needs.
    pub fn block(self) -> usize {
        self.base().block_size()
    }
}

/// A test model description; [`TestModel::tiny`] gives one that loads and runs in milliseconds.
#[derive(Debug, Clone)]
pub struct TestModel {
    /// Model family.
    pub arch: TestArch,
    /// Weight type.
    pub dtype: TestDType,
    /// `general.architecture` override (for unsupported-architecture tests).
    pub architecture_name: Option<String>,
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden size (a multiple of the dtype's block).
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Feed-forward size (a multiple of the dtype's block).
    pub ffn: usize,
    /// `{arch}.context_length`.
    pub context_length: usize,
    /// PRNG seed of the weights.
    pub seed: u64,
    /// `tokenizer.chat_template`; `None` writes no template.
    pub chat_template: Option<String>,
    /// Filler tokens (lowercase word pieces, some with a leading space) appended to the
    /// vocabulary after the merges and before the control tokens, to reach a realistic vocabulary
    /// size (e.g. 32000) for benchmarks; `0` for tests. No merge produces them, so they only
    /// change what the model can generate, not how prompts tokenize.
    pub extra_tokens: usize,
    /// A SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`, as Llama 2 and Mistral
    /// files have) instead of byte-level BPE: the 256 `<0xXX>` byte tokens, `▁` and the
    /// printable ASCII characters, the merges' pieces with `▁` for `Ġ` and descending scores,
    /// the fillers, then `<unk> <s> </s>`. Set [`TestModel::chat_template`] to match (e.g.
    /// [`SPM_TEMPLATE`]).
    pub sentencepiece: bool,
    /// Phi-3's LongRoPE (the 128k-context files): `rope_factors_long`/`rope_factors_short`
    /// tensors and `phi3.rope.scaling.*` keys, as llama.cpp's converter writes them.
    pub long_rope: bool,
    /// `{arch}.attention.key_length` (Gemma: its own); `None`: hidden / heads.
    pub head_dim: Option<usize>,
    /// `{arch}.attention.sliding_window` (Gemma).
    pub sliding_window: Option<usize>,
    /// Qwen2.5's tool-call markers `<tool_call>` and `</tool_call>` as user-defined tokens
    /// (decoded as text, not damped: a random model writes them), before the control tokens;
    /// use with [`HERMES_TEMPLATE`].
    pub tool_tokens: bool,
}

// === impl TestModel ===

impl TestModel {
    /// 2 layers, 4 heads / 2 KV heads, hidden 64 (256 for K-quants), context 512.
    pub fn tiny(arch: TestArch, dtype: TestDType) -> Self {
        let hidden = if dtype.block() == 256 { 256 } else { 64 };
        Self {
            arch,
            dtype,
            architecture_name: None,
            layers: 2,
            hidden,
            heads: 4,
            kv_heads: 2,
            ffn: hidden * 2,
            context_length: 512,
            seed: 7,
            chat_template: Some(match arch {
                TestArch::Llama => LLAMA_TEMPLATE.to_owned(),
                TestArch::Qwen2 => QWEN2_TEMPLATE.to_owned(),
                TestArch::Phi3 => PHI3_TEMPLATE.to_owned(),
                TestArch::Gemma2 => GEMMA2_TEMPLATE.to_owned(),
                TestArch::Gemma3 => GEMMA3_TEMPLATE.to_owned(),
            }),
            extra_tokens: 0,
            sentencepiece: arch == TestArch::Phi3 || arch.is_gemma(),
            long_rope: false,
            head_dim: arch.is_gemma().then_some(2 * hidden / 4),
            sliding_window: arch.is_gemma().then_some(512),
            tool_tokens: false,
        }
    }

    /// [`TestModel::tiny`] for `llama` with a SentencePiece vocabulary and [`SPM_TEMPLATE`].
    pub fn tiny_sentencepiece(dtype: TestDType) -> Self {
        Self {
            sentencepiece: true,
            chat_template: Some(SPM_TEMPLATE.to_owned()),
            ..Self::tiny(TestArch::Llama, dtype)
        }
    }

    /// Pads the vocabulary with filler tokens to `vocab_size` tokens in all (see
    /// [`TestModel::extra_tokens`]); a size below the base vocabulary leaves it as it is.
    pub fn with_vocab_size(mut self, vocab_size: usize) -> Self {
        let base = self.vocabulary().0.len() - self.extra_tokens;
        self.extra_tokens = vocab_size.saturating_sub(base);
        self
    }

    /// The vocabulary: `(tokens, token types)`; ids 0..256 are the bytes.
    pub fn vocabulary(&self) -> (Vec<String>, Vec<i32>) {
        let chars = byte_chars();
        let spm = |t: String| {
            if self.sentencepiece {
                t.replace('Ġ', "▁")
            } else {
                t
            }
        };
        let (mut tokens, mut types): (Vec<String>, Vec<i32>) = if self.sentencepiece {
            let bytes = (0..=255u8).map(|b| format!("<0x{b:02X}>"));
            let chars = std::iter::once("▁".to_owned())
                .chain((0x21..=0x7Eu8).map(|b| char::from(b).to_string()));
            let tokens: Vec<String> = bytes.chain(chars).collect();
            let types = (0..tokens.len())
                .map(|i| if i < 256 { 6 } else { 1 })
                .collect();
            (tokens, types)
        } else {
            (chars.iter().map(|c| c.to_string()).collect(), vec![1; 256])
        };
        for (a, b) in MERGES {
            tokens.push(spm(format!("{a}{b}")));
            types.push(1);
        }
        if self.extra_tokens > 0 {
            let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();
            let (mut n, mut added) = (0usize, 0usize);
            while added < self.extra_tokens {
                let token = spm(filler_token(n));
                n += 1;
                if seen.insert(token.clone()) {
                    tokens.push(token);
                    types.push(1);
                    added += 1;
                }
            }
        }
        if self.tool_tokens {
            for marker in ["<tool_call>", "</tool_call>"] {
                tokens.push(marker.to_owned());
                types.push(4);
            }
        }
        for special in self.specials() {
            tokens.push((*special).to_owned());
            types.push(if *special == "<unk>" { 2 } else { 3 });
        }
        (tokens, types)
    }

    fn specials(&self) -> &'static [&'static str] {
        match self.arch {
            TestArch::Phi3 => PHI3_SPECIALS,
            TestArch::Gemma2 | TestArch::Gemma3 => GEMMA_SPECIALS,
            _ if self.sentencepiece => SPM_SPECIALS,
            TestArch::Llama => LLAMA_SPECIALS,
            TestArch::Qwen2 => QWEN2_SPECIALS,
        }
    }

    /// Writes the GGUF file.
    pub fn write(&self, path: &Path) -> Result<()> {
        // Q4_K and Q5_K rows of other lengths fall back to 32-value types (`quantize`).
        let block = match self.dtype {
            TestDType::Q4KM | TestDType::Q5K => 32,
            other => other.block(),
        };
        if !self.hidden.is_multiple_of(block)
            || !self.ffn.is_multiple_of(block)
            || !self.hidden.is_multiple_of(self.heads)
        {
            return Err(Error::invalid_request(format!(
                "hidden {} and ffn {} must be multiples of {block} and of the head count",
                self.hidden, self.ffn
            )));
        }
        let (tokens, types) = self.vocabulary();
        let vocab = tokens.len();
        let special_id = |name: &str| -> u32 {
            let at = tokens.iter().position(|t| t == name).unwrap_or(0);
            u32::try_from(at).unwrap_or(0)
        };
        let arch = self.arch.name();
        let head_dim = self.head_dim.unwrap_or(self.hidden / self.heads);
        let u32_of = |v: usize| Value::U32(u32::try_from(v).unwrap_or(u32::MAX));
        let (bos, eos, pre, add_bos) = match self.arch {
            TestArch::Phi3 => (special_id("<s>"), special_id("<|endoftext|>"), "", false),
            TestArch::Gemma2 | TestArch::Gemma3 => {
                (special_id("<bos>"), special_id("<eos>"), "", true)
            }
            _ if self.sentencepiece => (special_id("<s>"), special_id("</s>"), "", true),
            TestArch::Llama => (
                special_id("<|begin_of_text|>"),
                special_id("<|eot_id|>"),
                "llama-bpe",
                true,
            ),
            TestArch::Qwen2 => (
                special_id("<|endoftext|>"),
                special_id("<|im_end|>"),
                "qwen2",
                false,
            ),
        };
        let mut metadata: Vec<(String, Value)> = vec![
            (
                "general.architecture".into(),
                Value::String(
                    self.architecture_name
                        .clone()
                        .unwrap_or_else(|| arch.to_owned()),
                ),
            ),
            (
                "general.name".into(),
                Value::String(format!("sluice-test-{arch}-{:?}", self.dtype).to_lowercase()),
            ),
            (
                "general.file_type".into(),
                Value::U32(self.dtype.file_type()),
            ),
            (
                format!("{arch}.context_length"),
                u32_of(self.context_length),
            ),
            (format!("{arch}.embedding_length"), u32_of(self.hidden)),
            (format!("{arch}.block_count"), u32_of(self.layers)),
            (format!("{arch}.feed_forward_length"), u32_of(self.ffn)),
            (format!("{arch}.attention.head_count"), u32_of(self.heads)),
            (
                format!("{arch}.attention.head_count_kv"),
                u32_of(self.kv_heads),
            ),
            (
                format!("{arch}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-5),
            ),
            (
                format!("{arch}.rope.freq_base"),
                Value::F32(if self.arch == TestArch::Gemma3 {
                    1_000_000.0
                } else {
                    10_000.0
                }),
            ),
            (format!("{arch}.rope.dimension_count"), u32_of(head_dim)),
            (format!("{arch}.vocab_size"), u32_of(vocab)),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(tokens.iter().cloned().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
            ),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)),
        ];
        if self.sentencepiece {
            // Later pieces score lower: merges apply in vocabulary order, as in BPE.
            let scores = (0..vocab).map(|i| Value::F32(-(i as f32)));
            metadata.extend([
                ("tokenizer.ggml.model".into(), Value::String("llama".into())),
                (
                    "tokenizer.ggml.scores".into(),
                    Value::Array(scores.collect()),
                ),
                (
                    "tokenizer.ggml.unknown_token_id".into(),
                    Value::U32(special_id("<unk>")),
                ),
            ]);
        } else {
            let merges = MERGES
                .iter()
                .map(|(a, b)| Value::String(format!("{a} {b}")));
            metadata.extend([
                ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
                ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
                (
                    "tokenizer.ggml.merges".into(),
                    Value::Array(merges.collect()),
                ),
            ]);
        }
        if let Some(template) = &self.chat_template {
            metadata.push((
                "tokenizer.chat_template".into(),
                Value::String(template.clone()),
            ));
        }

        let mut rng = SplitMix64(self.seed);
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        // Damp rows of control tokens and non-printable bytes (see the module docs); the
        // specials come last in both vocabularies.
        let specials_from = vocab - self.specials().len();
        let row_scale = |row: usize| -> f32 {
            match row {
                0x20..=0x7E => 1.0,
                0..=255 => 0.05,
                r if r < specials_from => 1.0,
                _ => 0.05,
            }
        };
        // Logit scale: RMS-normed hidden states have unit elements, so rows of 2/sqrt(hidden)
        // give logits of about unit spread: varied samples, no collapse onto one token.
        let logit_scale = 2.0 / (self.hidden as f32).sqrt();
        let embd = random(&mut rng, vocab, self.hidden, logit_scale, Some(&row_scale));
        let embd_dtype = if self.dtype == TestDType::Q4KM {
            GgmlDType::Q4K
        } else {
            self.dtype.base()
        };
        tensors.push((
            "token_embd.weight".into(),
            quantize(embd, vocab, self.hidden, embd_dtype)?,
        ));
        tensors.push(("output_norm.weight".into(), ones(self.hidden)?));
        if matches!(self.arch, TestArch::Llama | TestArch::Phi3) {
            let output = random(&mut rng, vocab, self.hidden, logit_scale, Some(&row_scale));
            let dtype = if self.dtype == TestDType::Q4KM {
                GgmlDType::Q6K
            } else {
                self.dtype.base()
            };
            tensors.push((
                "output.weight".into(),
                quantize(output, vocab, self.hidden, dtype)?,
            ));
        }
        let q_dim = self.heads * head_dim;
        let kv_dim = self.kv_heads * head_dim;
        for layer in 0..self.layers {
            let more_bits = use_more_bits(layer, self.layers);
            // llama.cpp's Q4_K_M: Q6_K for `attn_v`/`ffn_down` of the `use_more_bits` layers,
            // Q5_K for a fused `attn_qkv`.
            let dtype_of = |name: &str| match self.dtype {
                TestDType::Q4KM if more_bits && (name == "attn_v" || name == "ffn_down") => {
                    GgmlDType::Q6K
                }
                TestDType::Q4KM if name == "attn_qkv" => GgmlDType::Q5K,
                other => other.base(),
            };
            let h = self.hidden;
            let matrices: Vec<(&str, usize, usize)> = match self.arch {
                TestArch::Phi3 => vec![
                    ("attn_qkv", q_dim + 2 * kv_dim, h),
                    ("attn_output", h, q_dim),
                    ("ffn_up", 2 * self.ffn, h),
                    ("ffn_down", h, self.ffn),
                ],
                _ => vec![
                    ("attn_q", q_dim, h),
                    ("attn_k", kv_dim, h),
                    ("attn_v", kv_dim, h),
                    ("attn_output", h, q_dim),
                    ("ffn_gate", self.ffn, h),
                    ("ffn_up", self.ffn, h),
                    ("ffn_down", h, self.ffn),
                ],
            };
            for (name, rows, cols) in matrices {
                let scale = (3.0 / cols as f32).sqrt();
                let data = random(&mut rng, rows, cols, scale, None);
                tensors.push((
                    format!("blk.{layer}.{name}.weight"),
                    quantize(data, rows, cols, dtype_of(name))?,
                ));
            }
            tensors.push((format!("blk.{layer}.attn_norm.weight"), ones(self.hidden)?));
            tensors.push((format!("blk.{layer}.ffn_norm.weight"), ones(self.hidden)?));
            if self.arch.is_gemma() {
                let mut norms = vec![
                    ("post_attention_norm", self.hidden),
                    ("post_ffw_norm", self.hidden),
                ];
                if self.arch == TestArch::Gemma3 {
                    norms.extend([("attn_q_norm", head_dim), ("attn_k_norm", head_dim)]);
                }
                for (name, len) in norms {
                    let data = random(&mut rng, 1, len, 0.5, None);
                    let data = data.iter().map(|v| 1.0 + v).collect::<Vec<f32>>();
                    let t = Tensor::from_vec(data, len, &Device::Cpu).map_err(Error::backend)?;
                    let t = QTensor::quantize(&t, GgmlDType::F32).map_err(Error::backend)?;
                    tensors.push((format!("blk.{layer}.{name}.weight"), t));
                }
            }
            if self.arch == TestArch::Qwen2 {
                for (name, len) in [("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)] {
                    let data = random(&mut rng, 1, len, 0.1, None);
                    let bias = Tensor::from_vec(data, len, &Device::Cpu).map_err(Error::backend)?;
                    let bias = QTensor::quantize(&bias, GgmlDType::F32).map_err(Error::backend)?;
                    tensors.push((format!("blk.{layer}.{name}.bias"), bias));
                }
            }
        }

        if self.arch.is_gemma() {
            metadata.extend([
                (format!("{arch}.attention.key_length"), u32_of(head_dim)),
                (format!("{arch}.attention.value_length"), u32_of(head_dim)),
                ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
            ]);
            if let Some(window) = self.sliding_window {
                metadata.push((format!("{arch}.attention.sliding_window"), u32_of(window)));
            }
        }
        if self.arch == TestArch::Gemma2 {
            metadata.extend([
                (format!("{arch}.attn_logit_softcapping"), Value::F32(1.5)),
                (format!("{arch}.final_logit_softcapping"), Value::F32(2.0)),
            ]);
        }
        if self.long_rope {
            metadata.extend([
                (format!("{arch}.rope.scaling.attn_factor"), Value::F32(1.19)),
                (
                    format!("{arch}.rope.scaling.original_context_length"),
                    u32_of(self.context_length / 32),
                ),
            ]);
            for name in ["rope_factors_long", "rope_factors_short"] {
                let data = random(&mut rng, 1, head_dim / 2, 0.5, None);
                let factors = data.iter().map(|v| 1.5 + v).collect::<Vec<f32>>();
                let t = Tensor::from_vec(factors, head_dim / 2, &Device::Cpu)
                    .map_err(Error::backend)?;
                let t = QTensor::quantize(&t, GgmlDType::F32).map_err(Error::backend)?;
                tensors.push((format!("{name}.weight"), t));
            }
        }
        let metadata_refs: Vec<(&str, &Value)> =
            metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::fs::File::create(path).map_err(|source| ErrorKind::Io {
            path: path.to_path_buf(),
            source,
        })?;
        gguf_file::write(&mut file, &metadata_refs, &tensor_refs).map_err(Error::backend)?;
        Ok(())
    }
}

/// The `n`th filler token: `n / 2` in base 26 as 3 or more lowercase letters, every other one
/// with the byte-level leading space `Ġ`.
fn filler_token(n: usize) -> String {
    let mut letters = String::new();
    let mut rest = n / 2 + 26 * 27; // from `bba`: 3 letters and more
    while rest > 0 {
        letters.insert(0, char::from(b'a' + (rest % 26) as u8));
        rest /= 26;
    }
    if n.is_multiple_of(2) {
        format!("Ġ{letters}")
    } else {
        letters
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third between.
fn use_more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// SplitMix64: small, seeded, good enough for weights.
struct SplitMix64(u64);

// === impl SplitMix64 ===

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn random(
    rng: &mut SplitMix64,
    rows: usize,
    cols: usize,
    scale: f32,
    row_scale: Option<&dyn Fn(usize) -> f32>,
) -> Vec<f32> {
    let mut data = Vec::with_capacity(rows * cols);
    for row in 0..rows {
        let factor = scale * row_scale.map_or(1.0, |f| f(row));
        for _ in 0..cols {
            data.push(rng.next_f32() * factor);
        }
    }
    data
}

/// `rows × cols` values in `dtype`, or, when rows of `cols` are not whole K-quant blocks, in
/// the 32-value type llama.cpp falls back to (`Q4_K` → `Q5_0`, `Q5_K` → `Q5_1`, `Q6_K` →
/// `Q8_0`, as its `Q4_K_M` files of Qwen2.5 0.5B, hidden size 896, have them).
fn quantize(data: Vec<f32>, rows: usize, cols: usize, dtype: GgmlDType) -> Result<QTensor> {
    let dtype = match dtype {
        _ if cols % dtype.block_size() == 0 => dtype,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    };
    let tensor = Tensor::from_vec(data, (rows, cols), &Device::Cpu).map_err(Error::backend)?;
    QTensor::quantize(&tensor, dtype).map_err(Error::backend)
}

/// Rewrites the type id of tensor `tensor` in the GGUF file at `path` to `type_id` (e.g. 20,
/// ggml's `IQ4_NL`), leaving its data as it is: a file whose tensor type no engine reads.
pub fn set_tensor_type(path: &Path, tensor: &str, type_id: u32) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |source| ErrorKind::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let entries =
        crate::gguf::raw::tensor_entries(&mut std::io::BufReader::new(&mut file)).map_err(io)?;
    let entry = entries
        .iter()
        .find(|t| t.name == tensor)
        .ok_or_else(|| Error::invalid_metadata(tensor, "tensor missing from the file"))?;
    file.seek(SeekFrom::Start(entry.type_offset))
        .and_then(|_| file.write_all(&type_id.to_le_bytes()))
        .map_err(io)?;
    Ok(())
}

fn ones(len: usize) -> Result<QTensor> {
    let tensor =
        Tensor::ones(len, candle_core::DType::F32, &Device::Cpu).map_err(Error::backend)?;
    QTensor::quantize(&tensor, GgmlDType::F32).map_err(Error::backend)
}

/// all-MiniLM-L6-v2 for tests, as an absolute path: `$SLUICE_MINILM_DIR`, else this
/// workspace's `target/models/all-MiniLM-L6-v2` (`scripts/install-minilm.sh target/models`, which
/// the test command runs).
///
/// # Panics
///
/// When the model is not there, saying how to install it.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_MINILM_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/models/all-MiniLM-L6-v2"),
        PathBuf::from,
    );
    assert!(
        crate::embed::is_embedding_model(&dir),
        "all-MiniLM-L6-v2 is not at {}: run `scripts/install-minilm.sh target/models` (the test \
         command does) or set SLUICE_MINILM_DIR",
        dir.display()
    );
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// Cosine similarity of two vectors, computed in `f64`.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}
