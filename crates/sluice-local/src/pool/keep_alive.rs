//! [`KeepAlive`]: how long an idle model stays loaded, in Ollama's forms.

use std::time::{Duration, Instant};

use super::error::{PoolError, PoolErrorKind};

/// The default [`KeepAlive`]: 5 minutes, as Ollama's.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);

/// How long an idle model stays loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepAlive {
    /// Never unload for idleness (Ollama: any negative value).
    Forever,
    /// Unload this long after the last use; zero unloads as soon as the model is idle.
    For(Duration),
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self::For(DEFAULT_KEEP_ALIVE)
    }
}

// === impl KeepAlive ===

impl KeepAlive {
    /// Unload as soon as the last lease is dropped.
    pub const UNLOAD_NOW: Self = Self::For(Duration::ZERO);

    /// Ollama's numeric form: seconds, negative (or infinite) is [`KeepAlive::Forever`];
    /// `NaN` is the default.
    pub fn from_secs_f64(seconds: f64) -> Self {
        if seconds.is_nan() {
            Self::default()
        } else if seconds < 0.0 || !seconds.is_finite() {
            Self::Forever
        } else {
            Duration::try_from_secs_f64(seconds).map_or(Self::Forever, Self::For)
        }
    }

    /// Parses Ollama's string form: a number of seconds (`"300"`, `"-1"`) or a Go duration
    /// (`"5m"`, `"1h30m"`, `"500ms"`, `"-1m"`); a negative value is [`KeepAlive::Forever`].
    pub fn parse(text: &str) -> Result<Self, PoolError> {
        let invalid = || PoolError::from(PoolErrorKind::InvalidKeepAlive(text.to_owned()));
        let trimmed = text.trim();
        if let Ok(seconds) = trimmed.parse::<f64>() {
            return Ok(Self::from_secs_f64(seconds));
        }
        let (negative, mut rest) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total = 0.0f64;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
            rest = &rest[number_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(invalid()),
            };
            total += number * scale;
            rest = &rest[unit_end..];
        }
        if negative && total > 0.0 {
            return Ok(Self::Forever);
        }
        Ok(Self::from_secs_f64(total))
    }

    /// When a model idle since `idle_since` expires; `None`: never.
    pub fn expires_at(self, idle_since: Instant) -> Option<Instant> {
        match self {
            Self::Forever => None,
            Self::For(duration) => idle_since.checked_add(duration),
        }
    }

    /// Whether the model unloads as soon as it is idle.
    pub fn is_zero(self) -> bool {
        self == Self::UNLOAD_NOW
    }
}
