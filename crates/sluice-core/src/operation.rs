//! What an upstream is asked to do: the operation a client endpoint maps to. Providers
//! dispatch on it, metrics count by it, and cache entries of different operations never mix.

/// One upstream operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Chat completions (`/v1/chat/completions`, and `/v1/messages`, translated into it).
    Chat,
    /// Embeddings (`/v1/embeddings`).
    Embeddings,
}

impl Operation {
    /// Every operation, in the order of [`Self::index`].
    pub const ALL: [Self; 2] = [Self::Chat, Self::Embeddings];

    /// The label in metrics and cache keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
        }
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
