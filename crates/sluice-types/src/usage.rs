//! Usage as OpenAI reports it, normalised into the kinds that cost money: tokens (chat's
//! `prompt_tokens`/`completion_tokens` and the newer APIs' `input_tokens`/`output_tokens`),
//! and for media the seconds of audio (`{"type": "duration", "seconds": N}`, or
//! `verbose_json`'s top-level `duration`) and the images made (`data`).

use serde::Deserialize;

/// Normalised token usage of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Completion tokens, reasoning ones included.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_prompt_tokens: u64,
    /// Completion tokens spent on hidden reasoning.
    pub reasoning_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`), included in `prompt_tokens`.
    pub cache_write_tokens: u64,
    /// Characters of text spoken (text to speech, counted from the request).
    pub characters: u64,
    /// Milliseconds of audio heard (speech to text).
    pub audio_ms: u64,
    /// Images made.
    pub images: u64,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// OpenAI's `usage` object; every field optional because OpenAI-compatible servers differ.
#[derive(Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    output_tokens_details: Option<CompletionDetails>,
    /// Prompt tokens written to the prompt cache, as Anthropic names them (sluice's own
    /// chat answers from an Anthropic upstream carry it, as LiteLLM's do).
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    /// `{"type": "duration", "seconds": N}` (speech to text).
    #[serde(default)]
    seconds: Option<f64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Self {
        Self {
            prompt_tokens: w.prompt_tokens.or(w.input_tokens).unwrap_or(0),
            completion_tokens: w.completion_tokens.or(w.output_tokens).unwrap_or(0),
            cached_prompt_tokens: w
                .prompt_tokens_details
                .or(w.input_tokens_details)
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            reasoning_tokens: w
                .completion_tokens_details
                .or(w.output_tokens_details)
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            cache_write_tokens: w.cache_creation_input_tokens.unwrap_or(0),
            audio_ms: w.seconds.map_or(0, seconds_to_ms),
            ..Self::default()
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

fn seconds_to_ms(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1000.0).round() as u64
    } else {
        0
    }
}

/// A media answer's billable parts: `usage`, `duration` and `data`.
#[derive(Deserialize)]
struct MediaAnswer<'a> {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(borrow, default)]
    data: Option<Vec<&'a serde_json::value::RawValue>>,
}

impl Usage {
    /// Reads the top-level `usage` of a `chat.completion`, `chat.completion.chunk` or
    /// embeddings response, skipping everything else without allocating.
    /// `None` when the body has no usage or is not a JSON object.
    pub fn from_response(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<WithUsage>(body)
            .ok()
            .and_then(|w| w.usage)
            .map(Self::from)
    }

    /// Reads a media endpoint's JSON answer: its `usage` (tokens or audio seconds),
    /// `verbose_json`'s `duration`, and the number of images in `data` (for images
    /// endpoints, `images` says so). `None` when the body has none of them (or is not JSON:
    /// audio bytes, text transcripts).
    pub fn from_media_response(body: &[u8], images: bool) -> Option<Self> {
        let a: MediaAnswer<'_> = serde_json::from_slice(body).ok()?;
        let mut usage = a.usage.map(Self::from);
        if let Some(d) = a.duration.map(seconds_to_ms).filter(|&ms| ms > 0) {
            usage.get_or_insert_with(Self::default).audio_ms = d;
        }
        if let (true, Some(data)) = (images, &a.data) {
            usage.get_or_insert_with(Self::default).images = data.len() as u64;
        }
        usage
    }

    /// Total tokens.
    pub const fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_details() {
        let u = Usage::from_response(br#"{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#).unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_prompt_tokens: 4,
                reasoning_tokens: 2,
                ..Usage::default()
            }
        );
        assert_eq!(u.total(), 15);
    }

    #[test]
    fn media_usage_tokens_seconds_and_images() {
        let t = Usage::from_media_response(br#"{"text":"hi","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"audio_tokens":14},"output_tokens":45,"total_tokens":59}}"#, false).unwrap();
        assert_eq!((t.prompt_tokens, t.completion_tokens), (14, 45));
        let d = Usage::from_media_response(
            br#"{"text":"hi","usage":{"type":"duration","seconds":9}}"#,
            false,
        )
        .unwrap();
        assert_eq!(d.audio_ms, 9_000);
        let v = Usage::from_media_response(
            br#"{"task":"transcribe","duration":8.47,"text":"x","segments":[]}"#,
            false,
        )
        .unwrap();
        assert_eq!(v.audio_ms, 8_470);
        let i = Usage::from_media_response(br#"{"created":1,"data":[{"url":"u"},{"b64_json":"x"}],"usage":{"input_tokens":50,"output_tokens":4160,"total_tokens":4210}}"#, true).unwrap();
        assert_eq!(
            (i.images, i.prompt_tokens, i.completion_tokens),
            (2, 50, 4160)
        );
        assert_eq!(
            Usage::from_media_response(b"1\n00:00:00,000 --> 00:00:01,000\nhi", false),
            None
        );
        assert_eq!(
            Usage::from_media_response(br#"{"results":[]}"#, false),
            None
        );
    }

    #[test]
    fn reads_cache_writes_under_anthropics_name() {
        let u = Usage::from_response(
            br#"{"usage":{"prompt_tokens":30,"completion_tokens":5,"cache_creation_input_tokens":5,"prompt_tokens_details":{"cached_tokens":10}}}"#,
        )
        .unwrap();
        assert_eq!((u.cache_write_tokens, u.cached_prompt_tokens), (5, 10));
    }

    #[test]
    fn null_or_missing_usage() {
        assert_eq!(Usage::from_response(br#"{"usage":null}"#), None);
        assert_eq!(Usage::from_response(br#"{"choices":[]}"#), None);
        assert_eq!(Usage::from_response(b"not json"), None);
        let u = Usage::from_response(br#"{"usage":{"prompt_tokens":3}}"#).unwrap();
        assert_eq!(u.prompt_tokens, 3);
        assert_eq!(u.completion_tokens, 0);
    }
}
