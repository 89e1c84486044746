//! A tool's `parameters` moved inside a larger schema (a call's `{"name": …, "arguments": …}`
//! object, one branch per tool): the `$ref`s in them point into the parameters themselves
//! (`#/$defs/point`, `#` for the parameters' root), so each is rewritten to point at the same
//! place under where the parameters now sit. Each tool keeps its own `$defs`: two tools may
//! both define `point`, differently.

use serde_json::Value;

/// `schema` with every `$ref` into it (`#` or `#/…`) rewritten to `#{base}…`, where `base`
/// is the JSON pointer at which `schema` sits in the document it joins. Only `$ref` keywords
/// in schema positions are touched: a property named `$ref`, or a `$ref` key inside a
/// `const`, `enum`, `default` or `examples` value, is data and stays as written.
pub(super) fn rebased(schema: &Value, base: &str) -> Value {
    let mut schema = schema.clone();
    rebase(&mut schema, base);
    schema
}

/// Keywords whose value is a map of names to schemas.
const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Keywords whose value is a schema, or a list of schemas.
const SCHEMAS: &[&str] = &[
    "items",
    "prefixItems",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
];

fn rebase(schema: &mut Value, base: &str) {
    let Value::Object(map) = schema else {
        return;
    };
    if let Some(Value::String(target)) = map.get_mut("$ref") {
        if let Some(pointer) = target.strip_prefix('#') {
            if pointer.is_empty() || pointer.starts_with('/') {
                *target = format!("#{base}{pointer}");
            }
        }
    }
    for (key, value) in map.iter_mut() {
        if SCHEMA_MAPS.contains(&key.as_str()) {
            if let Value::Object(named) = value {
                named.values_mut().for_each(|s| rebase(s, base));
            }
        } else if SCHEMAS.contains(&key.as_str()) {
            match value {
                Value::Array(list) => list.iter_mut().for_each(|s| rebase(s, base)),
                one => rebase(one, base),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_point_under_the_base_and_data_stays_as_written() {
        let schema = json!({
            "type": "object",
            "properties": {
                "at": {"$ref": "#/$defs/point"},
                "self": {"$ref": "#"},
                "$ref": {"const": {"$ref": "#/$defs/point"}},
                "const": {"anyOf": [{"$ref": "#/definitions/old"}, {"type": "null"}]},
                "list": {"type": "array", "items": {"$ref": "#/$defs/point"}, "default": [{"$ref": "#"}]},
                "kind": {"enum": [{"$ref": "#"}]},
                "anchor": {"$ref": "#here"}
            },
            "$defs": {"point": {"type": "object", "additionalProperties": {"$ref": "#/$defs/point"}}},
            "definitions": {"old": {"type": "integer"}}
        });
        let base = "/anyOf/1/properties/arguments";
        let rebased = rebased(&schema, base);
        let p = &rebased["properties"];
        assert_eq!(p["at"]["$ref"], format!("#{base}/$defs/point"));
        assert_eq!(p["self"]["$ref"], format!("#{base}"));
        assert_eq!(p["$ref"], json!({"const": {"$ref": "#/$defs/point"}}));
        assert_eq!(
            p["const"]["anyOf"][0]["$ref"],
            format!("#{base}/definitions/old")
        );
        assert_eq!(p["list"]["items"]["$ref"], format!("#{base}/$defs/point"));
        assert_eq!(p["list"]["default"], json!([{"$ref": "#"}]));
        assert_eq!(p["kind"], json!({"enum": [{"$ref": "#"}]}));
        assert_eq!(p["anchor"]["$ref"], "#here");
        assert_eq!(
            rebased["$defs"]["point"]["additionalProperties"]["$ref"],
            format!("#{base}/$defs/point")
        );
        // Everything else is unchanged.
        assert_eq!(rebased["definitions"], schema["definitions"]);
        assert_eq!(rebased["type"], "object");
    }
}
