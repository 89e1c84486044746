//! Presets for OpenAI-compatible upstreams: base URL, the environment variable that holds
//! the key, whether the upstream accepts `stream_options.include_usage`, and which of
//! OpenAI's operations it serves.

use crate::operation::Operation;

/// One OpenAI-compatible upstream that sluice knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name used in config (`preset = "groq"`).
    pub name: &'static str,
    /// API root, including the version path.
    pub base_url: &'static str,
    /// The environment variable that conventionally holds its key (`""` for local servers).
    pub key_env: &'static str,
    /// Accepts `stream_options: {"include_usage": true}` (sluice adds it to count tokens).
    pub stream_usage: bool,
}

const fn p(
    name: &'static str,
    base_url: &'static str,
    key_env: &'static str,
    stream_usage: bool,
) -> Preset {
    Preset {
        name,
        base_url,
        key_env,
        stream_usage,
    }
}

/// Every preset, in the order `sluice serve` without a config looks for keys.
pub const PRESETS: &[Preset] = &[
    p(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        true,
    ),
    // Anthropic's and Google's own OpenAI-compatible endpoints.
    p(
        "anthropic",
        "https://api.anthropic.com/v1",
        "ANTHROPIC_API_KEY",
        true,
    ),
    p(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "GEMINI_API_KEY",
        true,
    ),
    p(
        "groq",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        true,
    ),
    p(
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
        true,
    ),
    // Mistral rejects request fields it does not know and sends usage unasked.
    p(
        "mistral",
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        false,
    ),
    p(
        "together",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
        true,
    ),
    p(
        "openrouter",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
        true,
    ),
    p(
        "fireworks",
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_API_KEY",
        true,
    ),
    p("xai", "https://api.x.ai/v1", "XAI_API_KEY", true),
    // Rerank (and Jina's embeddings) only: `{base_url}/rerank` takes the shape sluice sends
    // (`query`, `documents` as strings or objects with `text`, `top_n`, `return_documents`)
    // and answers `results` of `index`, `relevance_score` and `document`. Cohere's is its v1
    // API, whose rerank has that shape; it reports `meta.billed_units`, not `usage`.
    p("jina", "https://api.jina.ai/v1", "JINA_API_KEY", false),
    p(
        "cohere",
        "https://api.cohere.com/v1",
        "COHERE_API_KEY",
        false,
    ),
    p("vllm", "http://127.0.0.1:8000/v1", "", true),
    p("llamacpp", "http://127.0.0.1:8080/v1", "", true),
    p("ollama", "http://127.0.0.1:11434/v1", "", true),
    p("lmstudio", "http://127.0.0.1:1234/v1", "", true),
];

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Preset names, for error messages.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operations a preset's upstream serves, where it serves fewer than OpenAI's whole
/// API (`None`: every one). A provider's `endpoints` key overrides it.
pub fn serves(name: &str) -> Option<&'static [Operation]> {
    use Operation::{
        Chat, Completion, Embeddings, ImageEdit, ImageGeneration, ImageVariation, Moderation,
        Rerank, Speech, Transcription, Translation,
    };
    Some(match name {
        // OpenAI has no rerank.
        "openai" => &[
            Chat,
            Embeddings,
            Speech,
            Transcription,
            Translation,
            ImageGeneration,
            ImageEdit,
            ImageVariation,
            Moderation,
            Completion,
        ],
        // DeepSeek's legacy completions (FIM) answer only under its `/beta` base URL: a
        // provider with that `base_url` lists `completion` in its `endpoints`.
        "anthropic" | "deepseek" => &[Chat],
        "openrouter" | "xai" | "lmstudio" | "ollama" => &[Chat, Completion],
        "gemini" => &[Chat, Embeddings, ImageGeneration],
        "groq" => &[Chat, Speech, Transcription, Translation],
        "mistral" => &[Chat, Embeddings, Moderation],
        "together" | "fireworks" => &[
            Chat,
            Completion,
            Embeddings,
            ImageGeneration,
            Transcription,
            Rerank,
        ],
        "vllm" => &[
            Chat,
            Completion,
            Embeddings,
            Rerank,
            Transcription,
            Translation,
        ],
        "llamacpp" => &[Chat, Completion, Embeddings, Rerank],
        "jina" => &[Embeddings, Rerank],
        "cohere" => &[Rerank],
        _ => return None,
    })
}
