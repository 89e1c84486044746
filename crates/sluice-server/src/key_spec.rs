//! A virtual key's settings as the admin API (`POST /admin/keys`, `PATCH /admin/keys/{id}`)
//! and the CLI (`sluice keys create|update`) give them: a JSON object read into a
//! [`KeySpec`] (an update) or a [`NewKeySpec`] (a creation: the settings, a `name` among
//! them, and optionally the operator's own secret in `key`).
//!
//! Every field is optional: absent leaves the setting as it is, `null` clears it (`name`,
//! `budget_period` and `expires_in` cannot be cleared). An unknown field, or a value of the
//! wrong kind, is a 400 `invalid_request_error` that names the field.

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_core::{keys, Error, ErrorKind};
use sluice_store::{BudgetPeriod, KeyRecord};
use std::time::Duration;

/// A 400 `invalid_request_error` with `message`.
pub(crate) fn bad(message: impl Into<String>) -> Error {
    ErrorKind::InvalidRequest {
        message: message.into(),
        param: None,
    }
    .into()
}

/// The settings of a key update; `None`: not given. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Its name, trimmed.
    #[serde(default, deserialize_with = "name")]
    pub name: Option<String>,
    /// The models and routes it may use (empty: all).
    #[serde(default, deserialize_with = "models")]
    pub models: Option<Vec<String>>,
    /// The `[[guardrails]]` applied to its requests besides the model's and the route's
    /// (`null` or empty: none of its own).
    #[serde(default, deserialize_with = "guardrails")]
    pub guardrails: Option<Vec<String>>,
    /// Requests per minute (`Some(None)`: no limit).
    #[serde(default, deserialize_with = "rpm")]
    pub rpm: Option<Option<u64>>,
    /// Tokens per minute (`Some(None)`: no limit).
    #[serde(default, deserialize_with = "tpm")]
    pub tpm: Option<Option<u64>>,
    /// Requests in flight (`Some(None)`: no limit).
    #[serde(default, deserialize_with = "max_concurrent")]
    pub max_concurrent: Option<Option<u64>>,
    /// `budget_usd`, in nano-USD (`Some(None)`: no budget).
    #[serde(default, rename = "budget_usd", deserialize_with = "budget_usd")]
    pub budget_nano_usd: Option<Option<u64>>,
    /// How often the budget resets.
    #[serde(default, deserialize_with = "budget_period")]
    pub budget_period: Option<BudgetPeriod>,
    /// Any JSON object (`null`: the empty one).
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Option<Map<String, Value>>,
    /// `expires_at` (Unix seconds), in Unix ms (`Some(None)`: never).
    #[serde(default, rename = "expires_at", deserialize_with = "expires_at")]
    pub expires_ms: Option<Option<u64>>,
    /// Expires this long after the update; given with `expires_at`, this one wins.
    #[serde(default, deserialize_with = "expires_in")]
    pub expires_in: Option<Duration>,
}

/// The settings of a new key, and the operator's own secret if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewKeySpec {
    /// `key`: a secret of at least 20 printable ASCII characters (a key moved from another
    /// gateway, say) instead of a random one.
    pub secret: Option<String>,
    /// The rest; `name` is set.
    pub settings: KeySpec,
}

impl KeySpec {
    /// Reads an update's JSON object.
    pub fn from_json(spec: Map<String, Value>) -> Result<Self, Error> {
        Self::deserialize(Value::Object(spec)).map_err(|e| bad(e.to_string()))
    }

    /// Applies the settings to `key`; `now` is Unix ms.
    pub fn apply(&self, key: &mut KeyRecord, now: u64) {
        if let Some(name) = &self.name {
            key.name.clone_from(name);
        }
        if let Some(models) = &self.models {
            key.models.clone_from(models);
        }
        if let Some(guardrails) = &self.guardrails {
            key.guardrails.clone_from(guardrails);
        }
        key.rpm = self.rpm.unwrap_or(key.rpm);
        key.tpm = self.tpm.unwrap_or(key.tpm);
        key.max_concurrent = self.max_concurrent.unwrap_or(key.max_concurrent);
        key.budget_nano_usd = self.budget_nano_usd.unwrap_or(key.budget_nano_usd);
        key.budget_period = self.budget_period.unwrap_or(key.budget_period);
        if let Some(m) = &self.metadata {
            key.metadata = Value::Object(m.clone()).to_string();
        }
        key.expires_ms = self.expires_ms.unwrap_or(key.expires_ms);
        if let Some(d) = self.expires_in {
            key.expires_ms = Some(now + d.as_millis() as u64);
        }
    }
}

impl KeySpec {
    /// Refuses guardrail names that `known` does not know (the config's `[[guardrails]]`),
    /// with a 400 that names the first.
    pub fn check_guardrails(&self, known: impl Fn(&str) -> bool) -> Result<(), Error> {
        match self.guardrails.iter().flatten().find(|g| !known(g)) {
            Some(g) => Err(ErrorKind::InvalidRequest {
                message: format!("no guardrail named `{g}` is configured (`[[guardrails]]`)"),
                param: Some("guardrails"),
            }
            .into()),
            None => Ok(()),
        }
    }
}

impl NewKeySpec {
    /// Reads a creation's JSON object: `name` is required, `key` allowed.
    pub fn from_json(mut spec: Map<String, Value>) -> Result<Self, Error> {
        if !spec.get("name").is_some_and(Value::is_string) {
            return Err(bad("a key needs a `name`"));
        }
        let secret = spec
            .remove("key")
            .map(|given| {
                given
                    .as_str()
                    .filter(|s| s.len() >= 20 && s.bytes().all(|b| b.is_ascii_graphic()))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        bad("`key` must be a secret of at least 20 printable ASCII characters")
                    })
            })
            .transpose()?;
        Ok(Self {
            secret,
            settings: KeySpec::from_json(spec)?,
        })
    }
}

// === the fields: each reads its JSON value, with the message naming the field ===

/// Reads a field's value with `parse`; its error becomes the deserializer's.
fn field<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    parse(&v).map(Some).map_err(D::Error::custom)
}

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    field(d, |v| match v.as_str().map(str::trim) {
        Some(n) if !n.is_empty() && n.len() <= 200 => Ok(n.to_string()),
        _ => Err("`name` must be a non-empty string of at most 200 bytes".into()),
    })
}

fn models<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let wrong = || "`models` must be a list of model or route names".to_string();
    field(d, |v| match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|m| m.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(wrong),
        _ => Err(wrong()),
    })
}

fn guardrails<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let wrong = || "`guardrails` must be a list of guardrail names".to_string();
    field(d, |v| match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => {
            let mut names = a
                .iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(wrong)?;
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(n.clone()));
            Ok(names)
        }
        _ => Err(wrong()),
    })
}

/// A positive integer, or `null` for no limit.
fn positive(v: &Value, field: &str) -> Result<Option<u64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) if n.as_u64().is_some_and(|n| n > 0) => Ok(n.as_u64()),
        _ => Err(format!(
            "`{field}` must be a positive integer, or null for no limit"
        )),
    }
}

fn rpm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    field(d, |v| positive(v, "rpm"))
}

fn tpm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    field(d, |v| positive(v, "tpm"))
}

fn max_concurrent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    field(d, |v| positive(v, "max_concurrent"))
}

fn budget_usd<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    field(d, |v| match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(usd) if usd.is_finite() && usd >= 0.0 => Ok(Some((usd * 1e9).round() as u64)),
            _ => Err("`budget_usd` must be a non-negative number".into()),
        },
        _ => Err("`budget_usd` must be a non-negative number, or null".into()),
    })
}

fn budget_period<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BudgetPeriod>, D::Error> {
    field(d, |v| {
        v.as_str()
            .and_then(BudgetPeriod::parse)
            .ok_or_else(|| "`budget_period` must be `day`, `month` or `total`".into())
    })
}

fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    field(d, |v| match v {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m.clone()),
        _ => Err("`metadata` must be a JSON object".into()),
    })
}

fn expires_at<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    field(d, |v| match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Some((s * 1000.0) as u64))
            .ok_or_else(|| "`expires_at` must be Unix seconds".into()),
        _ => Err("`expires_at` must be Unix seconds, or null".into()),
    })
}

fn expires_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    field(d, |v| {
        v.as_str()
            .ok_or_else(|| "`expires_in` must be a duration such as `30d`".to_string())
            .and_then(keys::parse_duration)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<KeySpec, String> {
        let Value::Object(m) = v else { unreachable!() };
        KeySpec::from_json(m).map_err(|e| e.message())
    }

    #[test]
    fn fields_are_typed_and_null_clears() {
        let s = spec(
            json!({"name": " a ", "rpm": 5, "tpm": null, "budget_usd": 1.5,
            "budget_period": "daily", "models": null, "metadata": {"o": 1}, "expires_at": 2}),
        )
        .unwrap();
        assert_eq!(s.name.as_deref(), Some("a"));
        assert_eq!(
            (s.rpm, s.tpm, s.max_concurrent),
            (Some(Some(5)), Some(None), None)
        );
        assert_eq!(s.budget_nano_usd, Some(Some(1_500_000_000)));
        assert_eq!(s.budget_period, Some(BudgetPeriod::Day));
        assert_eq!(s.models, Some(Vec::new()));
        assert_eq!(s.expires_ms, Some(Some(2000)));
        let mut k = KeyRecord {
            name: "old".into(),
            tpm: Some(9),
            ..KeyRecord::default()
        };
        s.apply(&mut k, 0);
        assert_eq!((k.name.as_str(), k.rpm, k.tpm), ("a", Some(5), None));
        assert_eq!(k.metadata, r#"{"o":1}"#);
        let s = spec(json!({"expires_in": "1h"})).unwrap();
        s.apply(&mut k, 1000);
        assert_eq!(k.expires_ms, Some(3_601_000));
        assert_eq!(k.name, "a");
    }

    #[test]
    fn errors_name_the_field() {
        let e = spec(json!({"rpm": 0})).unwrap_err();
        assert_eq!(e, "`rpm` must be a positive integer, or null for no limit");
        let e = spec(json!({"name": null})).unwrap_err();
        assert_eq!(e, "`name` must be a non-empty string of at most 200 bytes");
        let e = spec(json!({"budget_usd": "5"})).unwrap_err();
        assert_eq!(e, "`budget_usd` must be a non-negative number, or null");
        let e = spec(json!({"nmae": "x"})).unwrap_err();
        assert!(
            e.starts_with("unknown field `nmae`, expected one of `name`"),
            "{e}"
        );
        let e = spec(json!({"key": "sk-0123456789012345678901"})).unwrap_err();
        assert!(e.starts_with("unknown field `key`"), "{e}");
        let e = spec(json!({"expires_in": "3x"})).unwrap_err();
        assert_eq!(e, "`3x`: unknown unit `x` (use s, m, h, d or w)");
    }

    #[test]
    fn a_new_key_needs_a_name_and_may_bring_its_secret() {
        let new = |v: Value| {
            let Value::Object(m) = v else { unreachable!() };
            NewKeySpec::from_json(m).map_err(|e| e.message())
        };
        assert_eq!(new(json!({"rpm": 1})).unwrap_err(), "a key needs a `name`");
        let n = new(json!({"name": "n", "key": "sk-0123456789012345678901"})).unwrap();
        assert_eq!(n.secret.as_deref(), Some("sk-0123456789012345678901"));
        assert_eq!(n.settings.name.as_deref(), Some("n"));
        assert!(new(json!({"name": "n", "key": "short"})).is_err());
    }

    #[test]
    fn guardrails_are_names_checked_against_the_config() {
        let s = spec(json!({"guardrails": ["pii", "secrets", "pii"]})).unwrap();
        assert_eq!(s.guardrails, Some(vec!["pii".into(), "secrets".into()]));
        assert!(s.check_guardrails(|g| g == "pii" || g == "secrets").is_ok());
        let e = s.check_guardrails(|g| g == "pii").unwrap_err();
        assert_eq!(e.status_code(), 400);
        assert!(e.message().contains("`secrets`"), "{}", e.message());
        let mut k = KeyRecord::default();
        s.apply(&mut k, 0);
        assert_eq!(k.guardrails, ["pii", "secrets"]);
        spec(json!({"guardrails": null})).unwrap().apply(&mut k, 0);
        assert!(k.guardrails.is_empty());
        let e = spec(json!({"guardrails": "pii"})).unwrap_err();
        assert_eq!(e, "`guardrails` must be a list of guardrail names");
    }
}
