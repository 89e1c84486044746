//! A JSON Schema validator for the subset providers' structured outputs accept (OpenAI's
//! `response_format: json_schema`, Anthropic's and Gemini's alike): `type` (one or a list),
//! `properties`, `required`, `additionalProperties`, `patternProperties`,
//! `min`/`maxProperties`, `enum`, `const`, `anyOf`, `oneOf`, `allOf`, `not`, `$ref` into
//! `$defs` or `definitions` (or anywhere in the schema by JSON pointer), `items` (a schema,
//! or a list as older drafts wrote tuples), `prefixItems`, `min`/`maxItems`, `uniqueItems`,
//! `min`/`maxLength` (in characters), `pattern` (the `regex` crate's syntax, unanchored),
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers, or draft 4's
//! booleans), `multipleOf`, and `format` for `date-time`, `date`, `time`, `email`, `uuid`,
//! `ipv4` and `ipv6`. Other keywords (annotations such as `description`, and what no
//! provider enforces) are ignored, as is a `pattern` that does not compile and a `$ref`
//! outside the schema.

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;

/// How deep `$ref`s may nest without reading into the value (a schema that refers to
/// itself in a loop fails instead of recursing forever).
const MAX_DEPTH: usize = 256;

/// Compiled `pattern`s kept per thread, at most this many (the cache is emptied when full):
/// a request's schema is checked again on every answer, and compiling a pattern costs far
/// more than matching it.
const CACHED_PATTERNS: usize = 64;

/// The compiled size up to which a pattern is kept (larger ones are compiled for each use,
/// so the cache stays a few MiB per thread at most).
const CACHED_PATTERN_BYTES: usize = 64 << 10;

thread_local! {
    static PATTERNS: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// Whether `pattern` matches `s` (`None`: the pattern does not compile), compiled once per
/// thread. The match runs on the cached regex itself: a clone would start with an empty
/// match cache, which costs about what the match does.
fn matches(pattern: &str, s: &str) -> Option<bool> {
    PATTERNS.with(|c| {
        let mut cache = c.borrow_mut();
        if let Some(hit) = cache.get(pattern) {
            return hit.as_ref().map(|r| r.is_match(s));
        }
        let small = RegexBuilder::new(pattern)
            .size_limit(CACHED_PATTERN_BYTES)
            .build();
        let regex = match small {
            Ok(r) => Some(r),
            Err(regex::Error::CompiledTooBig(_)) => {
                return Regex::new(pattern).ok().map(|r| r.is_match(s))
            }
            Err(_) => None,
        };
        let matched = regex.as_ref().map(|r| r.is_match(s));
        if cache.len() >= CACHED_PATTERNS {
            cache.clear();
        }
        cache.insert(pattern.to_string(), regex);
        matched
    })
}

/// Checks `value` against `schema` (whose `$ref`s point into `schema` itself). The error
/// says where (`$.items[2].name`) and why the value fails.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    Validator { root: schema }.check(schema, value, &mut String::from("$"), 0)
}

struct Validator<'a> {
    root: &'a Value,
}

/// A keyword's error, at `at`.
fn fail(at: &str, why: impl std::fmt::Display) -> Result<(), String> {
    Err(format!("{at}: {why}"))
}

/// The JSON type names `value` has (an integral number is both `integer` and `number`).
fn is_type(value: &Value, name: &str) -> bool {
    match (name, value) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

impl Validator<'_> {
    fn check(
        &self,
        schema: &Value,
        value: &Value,
        at: &mut String,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return fail(at, "the schema nests `$ref`s too deep");
        }
        let map = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return fail(at, "no value is allowed here (schema `false`)"),
            Value::Object(map) => map,
            _ => return Ok(()),
        };
        if let Some(target) = map.get("$ref").and_then(Value::as_str) {
            if let Some(target) = target.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                self.check(target, value, at, depth + 1)?;
            }
        }
        self.combinators(map, value, at, depth)?;
        self.generic(map, value, at)?;
        match value {
            Value::Object(o) => self.object(map, o, at, depth),
            Value::Array(a) => self.array(map, a, at, depth),
            Value::String(s) => string(map, s, at),
            Value::Number(_) => number(map, value, at),
            _ => Ok(()),
        }
    }

    /// `allOf`, `anyOf`, `oneOf`, `not`.
    fn combinators(
        &self,
        map: &Map<String, Value>,
        value: &Value,
        at: &mut String,
        depth: usize,
    ) -> Result<(), String> {
        let here = at.clone();
        let passes = |s: &Value| self.check(s, value, &mut here.clone(), depth + 1).is_ok();
        if let Some(all) = map.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.check(s, value, at, depth + 1)?;
            }
        }
        if let Some(any) = map.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(passes) {
                return fail(at, "matches none of `anyOf`");
            }
        }
        if let Some(one) = map.get("oneOf").and_then(Value::as_array) {
            let n = one.iter().filter(|s| passes(s)).count();
            if n != 1 {
                return fail(at, format!("matches {n} of `oneOf`, not exactly one"));
            }
        }
        if let Some(not) = map.get("not") {
            if passes(not) {
                return fail(at, "matches the schema of `not`");
            }
        }
        Ok(())
    }

    /// `type`, `enum`, `const`.
    fn generic(&self, map: &Map<String, Value>, value: &Value, at: &str) -> Result<(), String> {
        match map.get("type") {
            Some(Value::String(t)) if !is_type(value, t) => {
                return fail(at, format!("is not of type `{t}`"));
            }
            Some(Value::Array(ts))
                if !ts
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|t| is_type(value, t)) =>
            {
                let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
                return fail(at, format!("is none of the types `{}`", names.join("`, `")));
            }
            _ => {}
        }
        if let Some(options) = map.get("enum").and_then(Value::as_array) {
            if !options.iter().any(|o| same(o, value)) {
                return fail(at, "is not one of `enum`");
            }
        }
        if let Some(c) = map.get("const") {
            if !same(c, value) {
                return fail(at, format!("is not the `const` {c}"));
            }
        }
        Ok(())
    }

    fn object(
        &self,
        map: &Map<String, Value>,
        o: &Map<String, Value>,
        at: &mut String,
        depth: usize,
    ) -> Result<(), String> {
        if let Some(required) = map.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !o.contains_key(name) {
                    return fail(at, format!("lacks the required property `{name}`"));
                }
            }
        }
        let count = |k: &str| map.get(k).and_then(Value::as_u64);
        let n = o.len() as u64;
        if count("minProperties").is_some_and(|m| n < m) {
            return fail(
                at,
                format!("has {n} properties, fewer than `minProperties`"),
            );
        }
        if count("maxProperties").is_some_and(|m| n > m) {
            return fail(at, format!("has {n} properties, more than `maxProperties`"));
        }
        let properties = map.get("properties").and_then(Value::as_object);
        let patterns = map.get("patternProperties").and_then(Value::as_object);
        let additional = map.get("additionalProperties");
        for (name, v) in o {
            let len = at.len();
            at.push('.');
            at.push_str(name);
            let mut matched = false;
            if let Some(s) = properties.and_then(|p| p.get(name)) {
                matched = true;
                self.check(s, v, at, depth + 1)?;
            }
            for (p, s) in patterns.into_iter().flatten() {
                if matches(p, name) == Some(true) {
                    matched = true;
                    self.check(s, v, at, depth + 1)?;
                }
            }
            if !matched {
                match additional {
                    Some(Value::Bool(false)) => {
                        at.truncate(len);
                        return fail(
                            at,
                            format!("has the property `{name}`, which is not allowed"),
                        );
                    }
                    Some(s @ Value::Object(_)) => self.check(s, v, at, depth + 1)?,
                    _ => {}
                }
            }
            at.truncate(len);
        }
        Ok(())
    }

    fn array(
        &self,
        map: &Map<String, Value>,
        a: &[Value],
        at: &mut String,
        depth: usize,
    ) -> Result<(), String> {
        let n = a.len() as u64;
        let count = |k: &str| map.get(k).and_then(Value::as_u64);
        if count("minItems").is_some_and(|m| n < m) {
            return fail(at, format!("has {n} items, fewer than `minItems`"));
        }
        if count("maxItems").is_some_and(|m| n > m) {
            return fail(at, format!("has {n} items, more than `maxItems`"));
        }
        if map.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (i, x) in a.iter().enumerate() {
                if a[..i].iter().any(|y| same(x, y)) {
                    return fail(
                        at,
                        format!("item {i} repeats an earlier one (`uniqueItems`)"),
                    );
                }
            }
        }
        // The tuple's schemas: `prefixItems`, or `items` as a list (older drafts); then the
        // rest's: `items` as a schema (or `additionalItems` after a list).
        let (prefix, rest) = match (map.get("prefixItems"), map.get("items")) {
            (Some(Value::Array(p)), rest) => (p.as_slice(), rest),
            (_, Some(Value::Array(p))) => (p.as_slice(), map.get("additionalItems")),
            (_, rest) => (&[][..], rest),
        };
        for (i, v) in a.iter().enumerate() {
            let schema = match prefix.get(i) {
                Some(s) => s,
                None => match rest {
                    Some(s) => s,
                    None => break,
                },
            };
            let len = at.len();
            at.push_str(&format!("[{i}]"));
            self.check(schema, v, at, depth + 1)?;
            at.truncate(len);
        }
        Ok(())
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn string(map: &Map<String, Value>, s: &str, at: &str) -> Result<(), String> {
    let chars = s.chars().count() as u64;
    if map
        .get("minLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| chars < m)
    {
        return fail(
            at,
            format!("is {chars} characters long, shorter than `minLength`"),
        );
    }
    if map
        .get("maxLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| chars > m)
    {
        return fail(
            at,
            format!("is {chars} characters long, longer than `maxLength`"),
        );
    }
    if let Some(p) = map.get("pattern").and_then(Value::as_str) {
        if matches(p, s) == Some(false) {
            return fail(at, format!("does not match the `pattern` {p:?}"));
        }
    }
    if let Some(f) = map.get("format").and_then(Value::as_str) {
        if !crate::schema_format::is_valid(f, s) {
            return fail(at, format!("is not a valid `{f}`"));
        }
    }
    Ok(())
}

fn number(map: &Map<String, Value>, value: &Value, at: &str) -> Result<(), String> {
    let Some(x) = value.as_f64() else {
        return Ok(());
    };
    let bound = |k: &str| map.get(k).and_then(Value::as_f64);
    let flag = |k: &str| map.get(k) == Some(&Value::Bool(true));
    if let Some(m) = bound("minimum") {
        if x < m || (flag("exclusiveMinimum") && x <= m) {
            return fail(at, format!("{x} is below the `minimum` {m}"));
        }
    }
    if let Some(m) = bound("maximum") {
        if x > m || (flag("exclusiveMaximum") && x >= m) {
            return fail(at, format!("{x} is above the `maximum` {m}"));
        }
    }
    if bound("exclusiveMinimum").is_some_and(|m| x <= m) {
        return fail(at, format!("{x} is not above the `exclusiveMinimum`"));
    }
    if bound("exclusiveMaximum").is_some_and(|m| x >= m) {
        return fail(at, format!("{x} is not below the `exclusiveMaximum`"));
    }
    if let Some(m) = bound("multipleOf").filter(|m| *m > 0.0) {
        let q = x / m;
        if (q - q.round()).abs() > 1e-9 * q.abs().max(1.0) {
            return fail(at, format!("{x} is not a multiple of {m}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
