//! [`ConfigError`]: a config that does not load, with the key path at fault.

use std::fmt;

/// A config that does not load: the key path at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `providers[0].base_url`; empty for the file as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
