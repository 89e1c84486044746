//! `SLUICE__SECTION__KEY` environment overrides, applied to the parsed file before it is
//! read.

use super::error::ConfigError;
use crate::env::{Env, OVERRIDE_PREFIX};

/// Applies `SLUICE__SECTION__KEY=value` overrides to the parsed file. The value is read as
/// a TOML value when it parses as one (`8080`, `true`, `"x"`), else as a plain string.
pub(super) fn apply(table: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    for (var, raw) in env.with_prefix(OVERRIDE_PREFIX) {
        let path: Vec<String> = var[OVERRIDE_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "",
                format!("environment override `{var}` must have the form SLUICE__SECTION__KEY"),
            ));
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut node = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| {
                ConfigError::new(
                    part.clone(),
                    format!("`{var}` overrides a key that is not a table"),
                )
            })?;
        }
        if let Some(last) = path.last() {
            node.insert(last.clone(), value);
        }
    }
    Ok(())
}
