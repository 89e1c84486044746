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
            _ => Ok(()),
        }
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
