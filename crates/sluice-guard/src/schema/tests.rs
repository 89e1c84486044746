//! One test per keyword (or group of keywords): what passes, what fails, and what the
//! error says.

use super::validate;
use serde_json::{json, Value};

fn ok(schema: Value, value: Value) {
    if let Err(e) = validate(&schema, &value) {
        panic!("{value} should pass {schema}: {e}");
    }
}

fn bad(schema: Value, value: Value, says: &str) {
    match validate(&schema, &value) {
        Ok(()) => panic!("{value} should fail {schema}"),
        Err(e) => assert!(e.contains(says), "{e:?} should say {says:?}"),
    }
}

#[test]
fn type_one_or_a_union() {
    ok(json!({"type": "integer"}), json!(3));
    ok(json!({"type": "integer"}), json!(3.0));
    bad(
        json!({"type": "integer"}),
        json!(3.5),
        "$: is not of type `integer`",
    );
    ok(json!({"type": "number"}), json!(3.5));
    bad(json!({"type": "string"}), json!(1), "type `string`");
    ok(json!({"type": ["string", "null"]}), json!(null));
    bad(
        json!({"type": ["string", "null"]}),
        json!(true),
        "none of the types `string`, `null`",
    );
    ok(json!({"type": "boolean"}), json!(false));
    ok(json!({"type": "array"}), json!([]));
    bad(json!({"type": "object"}), json!([]), "type `object`");
    ok(json!(true), json!({"any": 1}));
    bad(json!(false), json!(1), "schema `false`");
}

#[test]
fn properties_required_and_additional_properties() {
    let s = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name"],
        "additionalProperties": false
    });
    ok(s.clone(), json!({"name": "Ann", "age": 3}));
    bad(
        s.clone(),
        json!({"age": 3}),
        "lacks the required property `name`",
    );
    bad(
        s.clone(),
        json!({"name": 1}),
        "$.name: is not of type `string`",
    );
    bad(
        s,
        json!({"name": "a", "x": 1}),
        "property `x`, which is not allowed",
    );
    let typed = json!({"additionalProperties": {"type": "number"}});
    ok(typed.clone(), json!({"a": 1}));
    bad(typed, json!({"a": "1"}), "$.a: is not of type `number`");
    let p =
        json!({"patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": false});
    ok(p.clone(), json!({"x_a": 1}));
    bad(p.clone(), json!({"x_a": "1"}), "$.x_a");
    bad(p, json!({"y": 1}), "`y`");
    bad(
        json!({"minProperties": 2}),
        json!({"a": 1}),
        "fewer than `minProperties`",
    );
    bad(
        json!({"maxProperties": 0}),
        json!({"a": 1}),
        "more than `maxProperties`",
    );
}

#[test]
fn enum_and_const() {
    ok(json!({"enum": ["a", 1, null]}), json!(1.0));
    bad(json!({"enum": ["a", "b"]}), json!("c"), "not one of `enum`");
    ok(json!({"const": {"k": [1]}}), json!({"k": [1]}));
    bad(
        json!({"const": "x"}),
        json!("y"),
        "is not the `const` \"x\"",
    );
}

#[test]
fn any_of_one_of_all_of_not() {
    let any = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
    ok(any.clone(), json!(1));
    bad(any, json!(1.5), "matches none of `anyOf`");
    let one = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
    ok(one.clone(), json!(1.5));
    bad(one, json!(2), "matches 2 of `oneOf`");
    let all = json!({"allOf": [{"type": "integer"}, {"minimum": 3}]});
    ok(all.clone(), json!(4));
    bad(all, json!(2), "below the `minimum`");
    bad(json!({"not": {"type": "null"}}), json!(null), "`not`");
}

#[test]
fn refs_into_defs_and_definitions_and_recursion() {
    let s = json!({
        "$defs": {"node": {"type": "object", "properties": {
            "v": {"type": "integer"},
            "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}
        }, "required": ["v", "next"]}},
        "$ref": "#/$defs/node"
    });
    ok(s.clone(), json!({"v": 1, "next": {"v": 2, "next": null}}));
    bad(
        s,
        json!({"v": 1, "next": {"v": "2", "next": null}}),
        "$.next",
    );
    let d = json!({"definitions": {"n": {"type": "number"}}, "items": {"$ref": "#/definitions/n"}});
    ok(d.clone(), json!([1, 2]));
    bad(d, json!([1, "2"]), "$[1]: is not of type `number`");
    // A loop that never reads into the value fails instead of recursing forever.
    bad(json!({"$ref": "#"}), json!(1), "too deep");
}

#[test]
fn items_prefix_items_counts_and_uniqueness() {
    let s = json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2});
    ok(s.clone(), json!(["a"]));
    bad(s.clone(), json!([]), "fewer than `minItems`");
    bad(s.clone(), json!(["a", "b", "c"]), "more than `maxItems`");
    bad(s, json!(["a", 1]), "$[1]");
    let tuple = json!({"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false});
    ok(tuple.clone(), json!(["a", 1]));
    bad(tuple.clone(), json!([1, 1]), "$[0]");
    bad(tuple, json!(["a", 1, 2]), "$[2]: no value is allowed");
    let old = json!({"items": [{"type": "string"}], "additionalItems": {"type": "null"}});
    ok(old.clone(), json!(["a", null]));
    bad(old, json!(["a", 1]), "$[1]");
    bad(
        json!({"uniqueItems": true}),
        json!([1, 2, 1.0]),
        "item 2 repeats",
    );
}

#[test]
fn string_lengths_and_patterns() {
    ok(json!({"minLength": 2, "maxLength": 3}), json!("héé"));
    bad(
        json!({"minLength": 2}),
        json!("é"),
        "shorter than `minLength`",
    );
    bad(
        json!({"maxLength": 1}),
        json!("ab"),
        "longer than `maxLength`",
    );
    ok(json!({"pattern": "^[A-Z]{2}-\\d+$"}), json!("AB-12"));
    bad(
        json!({"pattern": "^\\d+$"}),
        json!("12a"),
        "does not match the `pattern`",
    );
    // Unanchored, as JSON Schema reads it; a pattern that does not compile is ignored.
    ok(json!({"pattern": "b"}), json!("abc"));
    ok(json!({"pattern": "(?<=a)b"}), json!("zz"));
}

#[test]
fn patterns_are_compiled_once_and_judged_the_same_from_the_cache() {
    // Twice each (the second from the thread's cache), and more patterns than it keeps.
    for round in 0..2 {
        for n in 0..100 {
            let schema = json!({"pattern": format!("^x{{{n}}}$")});
            ok(schema.clone(), json!("x".repeat(n)));
            bad(schema, json!("x".repeat(n + 1)), "does not match");
        }
        bad(json!({"pattern": "^\\d+$"}), json!("1a"), "does not match");
        ok(json!({"pattern": "("}), json!("any"));
        // Too large to keep (its compiled size), still checked.
        let n = (1..400)
            .find(|n| {
                let p = format!("^\\w{{{n}}}$");
                let small = regex::RegexBuilder::new(&p)
                    .size_limit(super::CACHED_PATTERN_BYTES)
                    .build();
                small.is_err() && regex::Regex::new(&p).is_ok()
            })
            .expect("a pattern too large to keep");
        let big = json!({"pattern": format!("^\\w{{{n}}}$")});
        ok(big.clone(), json!("é".repeat(n)));
        bad(big, json!("é".repeat(n - 1)), "does not match");
        let _ = round;
    }
}

#[test]
fn numbers_bounds_and_multiples() {
    let s = json!({"minimum": 1, "maximum": 10});
    ok(s.clone(), json!(1));
    ok(s.clone(), json!(10));
    bad(s.clone(), json!(0), "below the `minimum`");
    bad(s, json!(10.5), "above the `maximum`");
    bad(
        json!({"exclusiveMinimum": 1}),
        json!(1),
        "`exclusiveMinimum`",
    );
    bad(
        json!({"exclusiveMaximum": 1}),
        json!(1),
        "`exclusiveMaximum`",
    );
    ok(json!({"exclusiveMaximum": 1}), json!(0.5));
    bad(
        json!({"minimum": 1, "exclusiveMinimum": true}),
        json!(1),
        "below the `minimum`",
    );
    ok(json!({"multipleOf": 0.1}), json!(0.3));
    ok(json!({"multipleOf": 3}), json!(9));
    bad(json!({"multipleOf": 3}), json!(10), "not a multiple of 3");
}

#[test]
fn formats_that_are_cheap_to_check() {
    for (f, good, wrong) in [
        ("date-time", "2026-12-04T19:20:00.5Z", "2026-12-04 19:20"),
        (
            "date-time",
            "2026-02-28T00:00:00+05:30",
            "2026-02-30T00:00:00Z",
        ),
        ("date", "2024-02-29", "2023-02-29"),
        ("time", "23:59:60Z", "24:00:00Z"),
        ("email", "ann@example.com", "ann@example"),
        (
            "uuid",
            "123e4567-e89b-12d3-a456-426614174000",
            "123e4567e89b12d3a456426614174000",
        ),
        ("ipv4", "10.0.0.1", "10.0.0.256"),
        ("ipv6", "::1", "1:::2"),
    ] {
        ok(json!({"format": f}), json!(good));
        bad(
            json!({"format": f}),
            json!(wrong),
            &format!("not a valid `{f}`"),
        );
    }
    ok(json!({"format": "hostname"}), json!("not checked"));
}

#[test]
fn an_openai_strict_schema() {
    let s = json!({
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"type": "object", "properties": {
                "explanation": {"type": "string"}, "output": {"type": "string"}
            }, "required": ["explanation", "output"], "additionalProperties": false}},
            "final_answer": {"type": "string"}
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": false
    });
    ok(
        s.clone(),
        json!({"steps": [{"explanation": "e", "output": "o"}], "final_answer": "x"}),
    );
    bad(
        s,
        json!({"steps": [{"explanation": "e"}], "final_answer": "x"}),
        "$.steps[0]: lacks the required property `output`",
    );
}
