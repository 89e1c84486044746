//! Which limit a counter counts: [`LimitId`], and the one place its storage name is written.

use super::check::{Check, CheckKind};
use std::fmt;

/// One limit of a virtual key or of a model (or route), as a type. Its [`LimitId::name`]
/// is the counter's name in the limiter (in memory, and on Redis under the limiter's
/// prefix): `key:{id}:rpm`, `key:{id}:tpm`, `key:{id}:conc`, `key:{id}:budget:{window}`,
/// `model:{name}:rpm`, `model:{name}:tpm`, `model:{name}:conc`. Counters stored under
/// those names by earlier versions keep counting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitId {
    /// A key's requests per minute.
    KeyRpm(String),
    /// A key's tokens per minute.
    KeyTpm(String),
    /// A key's concurrent requests.
    KeyConcurrency(String),
    /// A key's budget in one window (`d:2026-12-01`, `m:2026-12`, `total`; see
    /// [`crate::BudgetPeriod::window`]).
    KeyBudget {
        /// The key's id.
        key: String,
        /// The budget's window.
        window: String,
    },
    /// A model's or route's requests per minute, over every key.
    ModelRpm(String),
    /// A model's or route's tokens per minute, over every key.
    ModelTpm(String),
    /// A model's or route's concurrent requests, over every key.
    ModelConcurrency(String),
}

impl LimitId {
    /// The counter's name in the limiter.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// The key whose limit this is; `None` for a model's or route's.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Self::KeyRpm(id)
            | Self::KeyTpm(id)
            | Self::KeyConcurrency(id)
            | Self::KeyBudget { key: id, .. } => Some(id),
            Self::ModelRpm(_) | Self::ModelTpm(_) | Self::ModelConcurrency(_) => None,
        }
    }

    /// A check of this limit.
    pub fn check(&self, kind: CheckKind) -> Check {
        Check {
            name: self.name(),
            kind,
        }
    }
}

impl fmt::Display for LimitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyRpm(id) => write!(f, "key:{id}:rpm"),
            Self::KeyTpm(id) => write!(f, "key:{id}:tpm"),
            Self::KeyConcurrency(id) => write!(f, "key:{id}:conc"),
            Self::KeyBudget { key, window } => write!(f, "key:{key}:budget:{window}"),
            Self::ModelRpm(name) => write!(f, "model:{name}:rpm"),
            Self::ModelTpm(name) => write!(f, "model:{name}:tpm"),
            Self::ModelConcurrency(name) => write!(f, "model:{name}:conc"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_stored_ones() {
        let names = [
            (LimitId::KeyRpm("k1".into()), "key:k1:rpm"),
            (LimitId::KeyTpm("k1".into()), "key:k1:tpm"),
            (LimitId::KeyConcurrency("k1".into()), "key:k1:conc"),
            (
                LimitId::KeyBudget {
                    key: "k1".into(),
                    window: "d:2026-12-01".into(),
                },
                "key:k1:budget:d:2026-12-01",
            ),
            (LimitId::ModelRpm("gpt-4o".into()), "model:gpt-4o:rpm"),
            (LimitId::ModelTpm("gpt-4o".into()), "model:gpt-4o:tpm"),
            (LimitId::ModelConcurrency("r".into()), "model:r:conc"),
        ];
        for (id, name) in names {
            assert_eq!(id.name(), name);
        }
        assert_eq!(LimitId::KeyRpm("k".into()).key_id(), Some("k"));
        assert_eq!(LimitId::ModelRpm("m".into()).key_id(), None);
    }
}
