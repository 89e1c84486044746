//! A JSON Schema validator for the subset constrained decoding supports, written apart from
//! the compiler (`constrain/schema`) so that tests check the decoder's output against an
//! independent reading of the schema.

use serde_json::Value;

/// Checks `value` against `schema` (whose `$ref`s point into `schema` itself); the error says
/// where and why it fails.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    Validator { root: schema }.check(schema, value, "$")
}

struct Validator<'a> {
    root: &'a Value,
}

// === impl Validator ===

impl Validator<'_> {
    fn check(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let map = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at}: the schema `false`")),
            Value::Object(map) => map,
            _ => return Err(format!("{at}: not a schema")),
        };
        if let Some(target) = map.get("$ref").and_then(Value::as_str) {
            let pointer = target.strip_prefix('#').unwrap_or(target);
            let target = self
                .root
                .pointer(pointer)
                .ok_or_else(|| format!("{at}: dangling `$ref`"))?;
            self.check(target, value, at)?;
        }
        if let Some(branches) = map.get("anyOf").and_then(Value::as_array) {
            if !branches.iter().any(|b| self.check(b, value, at).is_ok()) {
                return Err(format!("{at}: matches no `anyOf` branch: {value}"));
            }
        }
        if let Some(branches) = map.get("oneOf").and_then(Value::as_array) {
            let matching = branches
                .iter()
                .filter(|b| self.check(b, value, at).is_ok())
                .count();
            if matching != 1 {
                return Err(format!(
                    "{at}: matches {matching} `oneOf` branches: {value}"
                ));
            }
        }
        if let Some(options) = map.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                return Err(format!("{at}: {value} is not in the `enum`"));
            }
        }
        if let Some(constant) = map.get("const") {
            if constant != value {
                return Err(format!("{at}: {value} is not the `const` {constant}"));
            }
        }
        if let Some(t) = map.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.iter().any(|t| has_type(value, t)) {
                return Err(format!("{at}: {value} is not of type {t}"));
            }
        }
        match value {
            Value::String(s) => Self::string(map, s, at),
            Value::Array(items) => self.array(map, items, at),
            Value::Object(object) => self.object(map, object, at),
            Value::Number(n) => Self::number(map, n.as_f64().unwrap_or(f64::NAN), at),
            _ => Ok(()),
        }
    }

    fn number(map: &serde_json::Map<String, Value>, n: f64, at: &str) -> Result<(), String> {
        for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] {
            let Some(b) = map.get(key).and_then(Value::as_f64) else {
                continue;
            };
            let ok = match key {
                "minimum" => n >= b,
                "maximum" => n <= b,
                "exclusiveMinimum" => n > b,
                _ => n < b,
            };
            if !ok {
                return Err(format!("{at}: {n} breaks `{key}` {b}"));
            }
        }
        // As validators that divide in floating point read it (Python's `jsonschema`, Ajv).
        if let Some(k) = map.get("multipleOf").and_then(Value::as_f64) {
            let quotient = n / k;
            if !quotient.is_finite() || quotient.fract() != 0.0 {
                return Err(format!("{at}: {n} is not a multiple of {k}"));
            }
        }
        Ok(())
    }

    fn string(map: &serde_json::Map<String, Value>, s: &str, at: &str) -> Result<(), String> {
        let chars = s.chars().count() as u64;
        if map
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| chars < min)
        {
            return Err(format!("{at}: {s:?} is shorter than `minLength`"));
        }
        if map
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|max| chars > max)
        {
            return Err(format!("{at}: {s:?} is longer than `maxLength`"));
        }
        if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
            let regex = regex::Regex::new(pattern).map_err(|e| format!("{at}: {e}"))?;
            if !regex.is_match(s) {
                return Err(format!("{at}: {s:?} does not match `{pattern}`"));
            }
        }
        if let Some(format) = map.get("format").and_then(Value::as_str) {
            if !is_format(format, s) {
                return Err(format!("{at}: {s:?} is not a `{format}`"));
            }
        }
        Ok(())
    }

    fn array(
        &self,
        map: &serde_json::Map<String, Value>,
        items: &[Value],
        at: &str,
    ) -> Result<(), String> {
        let n = items.len() as u64;
        if map
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|min| n < min)
        {
            return Err(format!("{at}: fewer than `minItems` items"));
        }
        if map
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|max| n > max)
        {
            return Err(format!("{at}: more than `maxItems` items"));
        }
        if let Some(schema) = map.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(schema, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    fn object(
        &self,
        map: &serde_json::Map<String, Value>,
        object: &serde_json::Map<String, Value>,
        at: &str,
    ) -> Result<(), String> {
        let empty = serde_json::Map::new();
        let properties = map
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for name in map
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: required `{name}` is missing"));
            }
        }
        for (key, value) in object {
            let here = format!("{at}.{key}");
            match (properties.get(key), map.get("additionalProperties")) {
                (Some(schema), _) => self.check(schema, value, &here)?,
                (None, Some(schema)) => self.check(schema, value, &here)?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match (t, value) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("string", Value::String(_)) => true,
        ("number", Value::Number(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// Whether `s` is a valid `format` (by parsing it, not by pattern); unknown formats fail.
fn is_format(format: &str, s: &str) -> bool {
    match format {
        "date" => is_date(s),
        "time" => is_time(s),
        "date-time" => s
            .split_once(['T', 't'])
            .is_some_and(|(date, time)| is_date(date) && is_time(time)),
        "uuid" => {
            let groups: Vec<&str> = s.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
                && groups
                    .iter()
                    .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "email" => s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.split('.').all(|atom| {
                    !atom.is_empty()
                        && atom.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b)
                        })
                })
                && domain.contains('.')
                && is_hostname(domain)
        }),
        "hostname" => is_hostname(s),
        "uri" => s.split_once(':').is_some_and(|(scheme, rest)| {
            scheme
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b))
        }),
        _ => false,
    }
}

fn digits(s: &str) -> Option<u32> {
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse().ok())
        .flatten()
}

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return false;
    };
    let (Some(y), Some(m), Some(d)) = (digits(y), digits(m), digits(d)) else {
        return false;
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2 && (1..=days).contains(&d)
}

fn is_time(s: &str) -> bool {
    let (clock, offset) = match s.find(['Z', 'z', '+', '-']) {
        Some(i) => s.split_at(i),
        None => return false,
    };
    let offset_ok =
        offset.eq_ignore_ascii_case("z") || (offset.len() == 6 && is_clock(&offset[1..], false));
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    offset_ok && is_clock(clock, true) && digits(fraction).is_some() && !fraction.is_empty()
}

/// `hh:mm` or (`seconds`) `hh:mm:ss`.
fn is_clock(s: &str, seconds: bool) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    let limits: &[u32] = if seconds { &[23, 59, 60] } else { &[23, 59] };
    parts.len() == limits.len()
        && parts
            .iter()
            .zip(limits)
            .all(|(p, &limit)| p.len() == 2 && digits(p).is_some_and(|n| n <= limit))
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
