//! The proxied endpoints, each described once: its paths, the protocol its clients speak,
//! the upstream operation it maps to, and its name in the spend log. The pipeline is
//! generic over this description: an endpoint joins by being described here and, where
//! providers differ, by a translation in `sluice-providers`.

use sluice_core::Operation;

/// The protocol an endpoint's clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI's: bodies and answers pass through the pipeline as they are.
    OpenAi,
    /// Anthropic's Messages API: the body is read into OpenAI's format on the way in, the
    /// answer (errors and streams included) written back in Anthropic's on the way out.
    Anthropic,
    /// OpenAI's Responses API: the body is read into OpenAI chat on the way in, the answer
    /// (streams included) written back as a `response` object or its event sequence.
    Responses,
}

/// One proxied endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/audio/speech`.
    Speech,
    /// `POST /v1/audio/transcriptions` (multipart).
    Transcriptions,
    /// `POST /v1/audio/translations` (multipart).
    Translations,
    /// `POST /v1/images/generations`.
    ImageGenerations,
    /// `POST /v1/images/edits` (multipart).
    ImageEdits,
    /// `POST /v1/images/variations` (multipart).
    ImageVariations,
    /// `POST /v1/rerank`.
    Rerank,
    /// `POST /v1/moderations`.
    Moderations,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Self; 13] = [
        Self::Chat,
        Self::Embeddings,
        Self::Messages,
        Self::Responses,
        Self::Speech,
        Self::Transcriptions,
        Self::Translations,
        Self::ImageGenerations,
        Self::ImageEdits,
        Self::ImageVariations,
        Self::Rerank,
        Self::Moderations,
        Self::Completions,
    ];

    /// The endpoint served at `path`, if any.
    pub fn at(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.paths().contains(&path))
    }

    /// The paths it is served at (OpenAI's clients may omit the `/v1`).
    pub const fn paths(self) -> &'static [&'static str] {
        match self {
            Self::Chat => &["/v1/chat/completions", "/chat/completions"],
            Self::Embeddings => &["/v1/embeddings", "/embeddings"],
            Self::Messages => &["/v1/messages"],
            Self::Responses => &["/v1/responses", "/responses"],
            Self::Speech => &["/v1/audio/speech", "/audio/speech"],
            Self::Transcriptions => &["/v1/audio/transcriptions", "/audio/transcriptions"],
            Self::Translations => &["/v1/audio/translations", "/audio/translations"],
            Self::ImageGenerations => &["/v1/images/generations", "/images/generations"],
            Self::ImageEdits => &["/v1/images/edits", "/images/edits"],
            Self::ImageVariations => &["/v1/images/variations", "/images/variations"],
            Self::Rerank => &["/v1/rerank", "/rerank", "/v2/rerank"],
            Self::Moderations => &["/v1/moderations", "/moderations"],
            Self::Completions => &["/v1/completions", "/completions"],
        }
    }

    /// What its clients speak.
    pub const fn protocol(self) -> Protocol {
        match self {
            Self::Messages => Protocol::Anthropic,
            Self::Responses => Protocol::Responses,
            _ => Protocol::OpenAi,
        }
    }

    /// The upstream operation it maps to.
    pub const fn operation(self) -> Operation {
        match self {
            Self::Chat | Self::Messages | Self::Responses => Operation::Chat,
            Self::Embeddings => Operation::Embeddings,
            Self::Speech => Operation::Speech,
            Self::Transcriptions => Operation::Transcription,
            Self::Translations => Operation::Translation,
            Self::ImageGenerations => Operation::ImageGeneration,
            Self::ImageEdits => Operation::ImageEdit,
            Self::ImageVariations => Operation::ImageVariation,
            Self::Rerank => Operation::Rerank,
            Self::Moderations => Operation::Moderation,
            Self::Completions => Operation::Completion,
        }
    }

    /// Its name in the spend log.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::Responses => "responses",
            Self::Speech => "speech",
            Self::Transcriptions => "transcriptions",
            Self::Translations => "translations",
            Self::ImageGenerations => "image_generations",
            Self::ImageEdits => "image_edits",
            Self::ImageVariations => "image_variations",
            Self::Rerank => "rerank",
            Self::Moderations => "moderations",
            Self::Completions => "completions",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_finds_its_endpoint() {
        for e in Endpoint::ALL {
            for p in e.paths() {
                assert_eq!(Endpoint::at(p), Some(e), "{p}");
            }
        }
        assert_eq!(Endpoint::at("/v1/models"), None);
    }
}
