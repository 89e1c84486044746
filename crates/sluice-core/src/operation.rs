//! What an upstream is asked to do: the operation a client endpoint maps to. Providers
//! dispatch on it, metrics count by it, and cache entries of different operations never mix.

/// One upstream operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Chat completions (`/v1/chat/completions`, and `/v1/messages`, translated into it).
    Chat,
    /// Embeddings (`/v1/embeddings`).
    Embeddings,
    /// Text to speech (`/v1/audio/speech`): the answer is audio bytes.
    Speech,
    /// Speech to text (`/v1/audio/transcriptions`, a multipart upload).
    Transcription,
    /// Speech to English text (`/v1/audio/translations`, a multipart upload).
    Translation,
    /// Images from a prompt (`/v1/images/generations`).
    ImageGeneration,
    /// Images edited (`/v1/images/edits`, a multipart upload).
    ImageEdit,
    /// Variations of an image (`/v1/images/variations`, a multipart upload).
    ImageVariation,
    /// Documents ranked against a query (`/v1/rerank`).
    Rerank,
    /// Content classified (`/v1/moderations`).
    Moderation,
    /// Legacy text completions (`/v1/completions`): a prompt continued, no chat template.
    Completion,
}

impl Operation {
    /// Every operation, in the order of [`Self::index`].
    pub const ALL: [Self; 11] = [
        Self::Chat,
        Self::Embeddings,
        Self::Speech,
        Self::Transcription,
        Self::Translation,
        Self::ImageGeneration,
        Self::ImageEdit,
        Self::ImageVariation,
        Self::Rerank,
        Self::Moderation,
        Self::Completion,
    ];

    /// The label in metrics and cache keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Speech => "speech",
            Self::Transcription => "transcription",
            Self::Translation => "translation",
            Self::ImageGeneration => "image_generation",
            Self::ImageEdit => "image_edit",
            Self::ImageVariation => "image_variation",
            Self::Rerank => "rerank",
            Self::Moderation => "moderation",
            Self::Completion => "completion",
        }
    }

    /// The path of its OpenAI-compatible API, after `base_url`.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Embeddings => "/embeddings",
            Self::Speech => "/audio/speech",
            Self::Transcription => "/audio/transcriptions",
            Self::Translation => "/audio/translations",
            Self::ImageGeneration => "/images/generations",
            Self::ImageEdit => "/images/edits",
            Self::ImageVariation => "/images/variations",
            Self::Rerank => "/rerank",
            Self::Moderation => "/moderations",
            Self::Completion => "/completions",
        }
    }

    /// Whether the client's body is a `multipart/form-data` upload, streamed rather than
    /// read whole.
    pub const fn is_upload(self) -> bool {
        matches!(
            self,
            Self::Transcription | Self::Translation | Self::ImageEdit | Self::ImageVariation
        )
    }

    /// A dense index, for tables with one slot per operation.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::Operation;

    #[test]
    fn indexes_follow_all() {
        for (i, op) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i, "{}", op.as_str());
        }
    }
}
