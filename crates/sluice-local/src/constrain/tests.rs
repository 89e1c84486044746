//! The matcher on hand-written texts, and random sampling under the mask: whatever tokens a
//! sampler picks among the allowed ones, the output parses and validates.

use std::sync::Arc;

use serde_json::{json, Value};

use super::guide::Constraint;
use super::matcher::Matcher;
use super::schema::Grammar;
use super::vocab::{allows, TokenTrie};
use crate::testing::json_schema::validate;

/// Multi-byte tokens of the test vocabulary, beside every single byte: JSON punctuation runs,
/// words, digits, whitespace runs, escapes and UTF-8 (whole and split) as BPE vocabularies
/// have them.
const PIECES: &[&str] = &[
    "{\"", "\":", "\": ", "\",", "\"}", "\"]", "},", "}]", "[{", "[\"", "\", \"", ", ", "{\n  \"",
    "\n", "\n  ", "\n    ", "  ", "    ", "true", "false", "null", "nul", "tr", "name", "age",
    "ag", "tags", "id", "kind", "\"name", "\"age\":", "123", "0.", "1e", "-1", "00", "é", "日本",
    "\\u", "\\ud83d", "\\n", "\\\"", "abc", " the", "xyz\"", "\"}}", "]}", "\"\"", ",\"",
];

/// Id of the stop token (after the 256 bytes and the pieces).
fn stop_id() -> u32 {
    (256 + PIECES.len()) as u32
}

fn vocabulary() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    v.extend(PIECES.iter().map(|p| p.as_bytes().to_vec()));
    // Two UTF-8 halves, the way byte-level BPE splits characters.
    v.push(vec![0xe6]);
    v.push(vec![0x97, 0xa5]);
    v.push(Vec::new()); // the stop token: a control token, no bytes
    v
}

fn trie() -> Arc<TokenTrie> {
    let vocab = vocabulary();
    let stop = (vocab.len() - 1) as u32;
    assert_eq!(stop, stop_id() + 2);
    Arc::new(TokenTrie::new(
        vocab.len(),
        |id| vocab[id as usize].as_slice(),
        &[stop],
    ))
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Samples random allowed tokens until a stop token; two picks in three go to the tokens that
/// bring the value closest to its end, so that random output ends (random JSON nests without end).
fn sample(grammar: &Arc<Grammar>, seed: u64) -> String {
    let vocab = vocabulary();
    let trie = trie();
    let stop = trie.stop_ids()[0];
    let mut constraint = Constraint::new(Arc::clone(grammar), trie);
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for _ in 0..20_000 {
        let mask = constraint.mask();
        let allowed: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&id| allows(&mask, id))
            .collect();
        assert!(
            !allowed.is_empty(),
            "stuck after {:?}",
            String::from_utf8_lossy(&out)
        );
        // Two picks in three go to the tokens that bring the value closest to its end.
        let pool = if rng.below(3) != 0 {
            closest(&constraint, &allowed, &vocab, stop)
        } else {
            allowed
        };
        let id = pool[rng.below(pool.len())];
        let bytes = &vocab[id as usize];
        if constraint
            .accept(id, bytes)
            .expect("an allowed token is accepted")
        {
            return String::from_utf8(out).expect("UTF-8 output");
        }
        out.extend_from_slice(bytes);
    }
    let text = String::from_utf8_lossy(&out);
    panic!(
        "no end after 20000 tokens: {:?}",
        &text[text.len().saturating_sub(300)..]
    );
}

/// The allowed tokens after which the value is least deep.
fn closest(constraint: &Constraint, allowed: &[u32], vocab: &[Vec<u8>], stop: u32) -> Vec<u32> {
    if allowed.contains(&stop) && rand_free_stop(constraint) {
        return vec![stop];
    }
    let distance = |id: u32| {
        let mut m = constraint.matcher().clone();
        if id == stop || !m.advance(&vocab[id as usize]) {
            return u32::MAX;
        }
        m.distance()
    };
    let best = allowed
        .iter()
        .map(|&id| distance(id))
        .min()
        .unwrap_or(u32::MAX);
    allowed
        .iter()
        .copied()
        .filter(|&id| distance(id) == best)
        .collect()
}

fn rand_free_stop(constraint: &Constraint) -> bool {
    constraint.matcher().accepts()
}

/// Samples `runs` outputs under `schema` and checks each parses and validates.
fn check_random(schema: &Value, runs: u64) -> Vec<Value> {
    let grammar = Arc::new(Grammar::from_json_schema(schema).expect("schema compiles"));
    (0..runs)
        .map(|seed| {
            let text = sample(&grammar, seed);
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            if let Err(e) = validate(schema, &value) {
                panic!("{e}\n{text}");
            }
            value
        })
        .collect()
}

fn matches(schema: &Value, text: &str) -> bool {
    let grammar = Arc::new(Grammar::from_json_schema(schema).expect("schema compiles"));
    let mut m = Matcher::new(grammar);
    m.advance(text.as_bytes()) && m.accepts()
}

#[test]
fn objects_with_required_and_optional_properties_validate() {
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let values = check_random(&schema, 60);
    assert!(
        values.iter().any(|v| v.get("ok").is_some()),
        "optional property never produced"
    );
    assert!(
        values.iter().any(|v| v.get("ok").is_none()),
        "optional property always produced"
    );
}

#[test]
fn arrays_with_item_schemas_and_lengths_validate() {
    let schema =
        json!({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 4});
    let values = check_random(&schema, 60);
    assert!(values
        .iter()
        .all(|v| (2..=4).contains(&v.as_array().map_or(0, Vec::len))));
}

#[test]
fn enums_and_consts_validate() {
    check_random(&json!({"enum": ["red", "green", 3, null, {"a": [1]}]}), 40);
    check_random(
        &json!({"type": "object", "properties": {"v": {"const": "x\"y"}}, "required": ["v"], "additionalProperties": false}),
        10,
    );
}

#[test]
fn strings_with_lengths_validate() {
    let values = check_random(
        &json!({"type": "string", "minLength": 3, "maxLength": 5}),
        80,
    );
    assert!(
        values
            .iter()
            .any(|v| v.as_str().is_some_and(|s| !s.is_ascii())),
        "no non-ASCII string"
    );
}

#[test]
fn scalars_validate() {
    for t in ["number", "integer", "boolean", "null", "string"] {
        check_random(&json!({"type": t}), 40);
    }
    check_random(&json!({"type": ["integer", "null"]}), 40);
}

#[test]
fn nesting_any_of_one_of_and_refs_validate() {
    let schema = json!({
        "$defs": {
            "leaf": {"type": "object", "properties": {"kind": {"const": "leaf"}, "id": {"type": "integer"}}, "required": ["kind", "id"], "additionalProperties": false},
            "tree": {"type": "object", "properties": {"kind": {"const": "tree"}, "children": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/node"}}}, "required": ["kind", "children"], "additionalProperties": false},
            "node": {"oneOf": [{"$ref": "#/$defs/leaf"}, {"$ref": "#/$defs/tree"}]}
        },
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}, "note": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]}},
        "required": ["root"],
        "additionalProperties": false
    });
    check_random(&schema, 60);
}

#[test]
fn json_object_and_open_objects_validate() {
    let object = Arc::new(Grammar::json_object());
    for seed in 0..60 {
        let text = sample(&object, seed);
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(value.is_object(), "{text}");
    }
    check_random(
        &json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}),
        40,
    );
    check_random(
        &json!({"type": "object", "additionalProperties": {"type": "boolean"}}),
        40,
    );
}

#[test]
fn the_matcher_refuses_what_breaks_the_schema() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 2}}, "required": ["a"], "additionalProperties": false});
    assert!(matches(&schema, r#"{"a": 1, "b": "xy"}"#));
    assert!(matches(&schema, "{\n  \"b\": \"\",\n  \"a\": -0\n}"));
    assert!(!matches(&schema, r#"{"b": "x"}"#), "missing required");
    assert!(!matches(&schema, r#"{"a": 1, "a": 2}"#), "duplicate key");
    assert!(!matches(&schema, r#"{"a": 1, "c": 2}"#), "extra key");
    assert!(!matches(&schema, r#"{"a": 1.5}"#), "fraction in an integer");
    assert!(!matches(&schema, r#"{"a": 01}"#), "leading zero");
    assert!(
        !matches(&schema, r#"{"a": 1, "b": "xyz"}"#),
        "string too long"
    );
    assert!(!matches(&schema, r#"{"a": 1} "#), "text after the value");
    assert!(
        !matches(&schema, &format!("{{{}\"a\": 1}}", " ".repeat(17))),
        "whitespace run too long"
    );
    let open = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    assert!(
        matches(&open, r#"{"a": 1, "ab": [true]}"#),
        "other keys are any value"
    );
    assert!(
        !matches(&open, r#"{"a": 1, "a": "x"}"#),
        "a declared key is not repeated as another"
    );
    assert!(
        !matches(&open, r#"{"\u0061": "x"}"#),
        "other keys have no escapes"
    );
    let required =
        json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]});
    assert!(matches(&required, r#"{"x": 1, "id": 2}"#));
    assert!(matches(&required, r#"{"idx": 1, "i": 1, "id": 2}"#));
    assert!(!matches(&required, r#"{"idx": 1}"#), "missing required");
    let string = json!({"type": "string"});
    assert!(matches(&string, r#""é\n\u00e9\ud7ff""#));
    assert!(!matches(&string, r#""\ud800""#), "lone surrogate");
    assert!(!matches(&string, "\"\u{1}\""), "raw control character");
    assert!(!matches(&string, "\"\u{e9}"), "unclosed");
    assert!(matches(&json!({"type": "number"}), "-12.5e+03"));
    assert!(
        !matches(&json!({"type": "number"}), "1e999"),
        "exponent too large for an f64"
    );
}

#[test]
fn the_stop_token_is_allowed_only_when_the_value_is_complete() {
    let trie = trie();
    let stop = trie.stop_ids()[0];
    let mut c = Constraint::new(
        Arc::new(Grammar::from_json_schema(&json!({"type": "integer"})).expect("compiles")),
        trie,
    );
    assert!(!allows(&c.mask(), stop));
    assert!(!c.accept(stop, &[]).is_ok_and(|s| s));
    assert_eq!(c.accept(u32::from(b'4'), b"4"), Ok(false));
    assert!(allows(&c.mask(), stop));
    assert!(allows(&c.mask(), u32::from(b'2')), "a number may go on");
    assert!(
        !allows(&c.mask(), u32::from(b' ')),
        "nothing follows the root value"
    );
    assert_eq!(c.accept(stop, &[]), Ok(true));
}

#[test]
fn unsupported_keywords_and_dangling_refs_are_named() {
    let error = |schema: Value| {
        Grammar::from_json_schema(&schema)
            .expect_err("refused")
            .to_string()
    };
    let e = error(
        json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "allOf": [], "uniqueItems": true}}}),
    );
    assert!(
        e.contains("`allOf`") && e.contains("`uniqueItems`") && e.contains("/properties/n"),
        "{e}"
    );
    let e = error(json!({"type": "number", "multipleOf": 0.1}));
    assert!(
        e.contains("`multipleOf` 0.1 cannot be enforced exactly") && e.contains("#/multipleOf"),
        "{e}"
    );
    let e = error(json!({"type": "number", "maximum": "1"}));
    assert!(e.contains("`maximum` must be a number"), "{e}");
    let e = error(json!({"type": "integer", "minimum": 3, "exclusiveMaximum": 3}));
    assert!(e.contains("no integer"), "{e}");
    let e = error(json!({"type": "number", "minimum": 0.3, "maximum": 0.4, "multipleOf": 0.25}));
    assert!(e.contains("no number"), "{e}");
    let e = error(json!({"type": "integer", "format": "int32"}));
    assert!(
        e.contains("the `format` `int32` is not supported") && e.contains("/format"),
        "{e}"
    );
    let e = error(json!({"$ref": "#/$defs/missing"}));
    assert!(e.contains("points nowhere"), "{e}");
    let e = error(json!({"$ref": "https://example.com/s.json"}));
    assert!(e.contains("only references into this schema"), "{e}");
    let e = error(json!({"type": "strin"}));
    assert!(e.contains("unknown type `strin`"), "{e}");
    let e = error(json!({"type": "object", "required": ["x"], "properties": {}}));
    assert!(e.contains("`x` is required"), "{e}");
    let e = error(
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
    );
    assert!(e.contains("cycle"), "{e}");
    let e = error(json!({"type": "string", "minLength": 3, "maxLength": 2}));
    assert!(e.contains("`maxLength` is below `minLength`"), "{e}");
    let e = error(json!(3));
    assert!(e.contains("must be an object"), "{e}");
}

/// A `oneOf` whose branches cannot overlap is compiled, and its answers match exactly one
/// branch; one whose branches may overlap is refused naming `oneOf` and the branches.
#[test]
fn one_of_is_compiled_only_with_disjoint_branches() {
    let disjoint = [
        json!({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
        json!({"oneOf": [{"const": "a"}, {"enum": ["b", 1]}, {"type": "boolean"}]}),
        json!({"oneOf": [{"type": "integer"}, {"const": 1.5}]}),
        json!({"oneOf": [{"type": "string", "maxLength": 2}, {"type": "string", "minLength": 3, "maxLength": 5}]}),
        json!({"oneOf": [{"type": "array", "maxItems": 1}, {"type": "array", "minItems": 2, "maxItems": 3}]}),
        json!({"oneOf": [
            {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}, "required": ["kind"]},
            {"type": "object", "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}}, "required": ["kind", "good"]}
        ]}),
        // Told apart by a key the other object does not allow.
        json!({"oneOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": false},
            {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"], "additionalProperties": false}
        ]}),
        json!({"$defs": {"x": {"type": "number"}}, "oneOf": [{"$ref": "#/$defs/x"}, {"anyOf": [{"type": "string"}, {"type": "null"}]}]}),
    ];
    for schema in &disjoint {
        Grammar::from_json_schema(schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        check_random(schema, 30);
    }
    let overlapping = [
        (
            json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}),
            "0 and 1",
        ),
        (
            json!({"oneOf": [{"type": "string"}, {"const": "a"}]}),
            "0 and 1",
        ),
        (
            json!({"oneOf": [{"enum": [1, 2]}, {"type": "null"}, {"const": 1.0}]}),
            "0 and 2",
        ),
        (
            json!({"oneOf": [{"type": "string", "maxLength": 3}, {"type": "string", "minLength": 3}]}),
            "0 and 1",
        ),
        (
            json!({"oneOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]}
            ]}),
            "0 and 1",
        ),
        (json!({"oneOf": [{"type": "object"}, true]}), "0 and 1"),
        // A constant no patterned string can spell (a control character) that the pattern
        // takes all the same: the branches overlap.
        (
            json!({"oneOf": [{"type": "string", "pattern": "^a"}, {"const": "a\u{1}"}]}),
            "0 and 1",
        ),
        (
            json!({"type": "object", "properties": {"p": {"oneOf": [{"type": "array"}, {"type": "array", "maxItems": 2}]}}}),
            "0 and 1",
        ),
    ];
    for (schema, branches) in overlapping {
        let e = Grammar::from_json_schema(&schema)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("`oneOf` branches") && e.contains(branches) && e.contains("/oneOf`"),
            "{schema}: {e}"
        );
    }
}

/// Whether `text` (a JSON string literal) is taken whole by a string schema with `pattern`.
fn pattern_takes(pattern: &str, text: &str) -> bool {
    matches(&json!({"type": "string", "pattern": pattern}), text)
}

/// Whether the matcher takes `prefix`: a string in progress still able to end in a match.
fn pattern_continues(schema: &Value, prefix: &str) -> bool {
    let grammar = Arc::new(Grammar::from_json_schema(schema).expect("schema compiles"));
    Matcher::new(grammar).advance(prefix.as_bytes())
}

#[test]
fn patterns_are_matched_on_the_decoded_string_unanchored() {
    // Unanchored: the string contains a match.
    assert!(pattern_takes("b+", r#""abbc""#));
    assert!(!pattern_takes("b+", r#""ac""#));
    assert!(pattern_takes("^a", r#""abc""#));
    assert!(!pattern_takes("^a", r#""ba""#));
    assert!(pattern_takes("c$", r#""abc""#));
    assert!(!pattern_takes("c$", r#""abcd""#));
    // `a|ab` with `$`: every alternative counts, not only the leftmost-first one.
    assert!(pattern_takes("^(a|ab)$", r#""ab""#));
    // ECMA-262's classes: `\d` and `\w` are ASCII, `.` stops at line terminators.
    assert!(pattern_takes(r"^\d+$", r#""042""#));
    assert!(
        !pattern_takes(r"^\d+$", "\"\u{664}\""),
        "an Arabic-Indic digit"
    );
    assert!(!pattern_takes(r"^\w$", r#""é""#));
    assert!(pattern_takes(r"^[\w.]+$", r#""a.b_c""#));
    assert!(pattern_takes("^a.c$", r#""a\"c""#));
    assert!(!pattern_takes("^a.c$", r#""a\nc""#), "`.` is not a newline");
    assert!(pattern_takes(r"^\s$", r#""\t""#));
    assert!(pattern_takes(r"\bcat\b", r#""a cat.""#));
    assert!(!pattern_takes(r"\bcat\b", r#""acat""#));
    // Escapes feed the character they stand for.
    assert!(pattern_takes("^a\"b$", r#""a\"b""#));
    assert!(pattern_takes(r"^a\nb$", r#""a\nb""#));
    assert!(pattern_takes(r"^\\$", r#""\\""#));
    assert!(pattern_takes("^/$", r#""\/""#));
    assert!(!pattern_takes("^a$", r#""\u0061""#), "no `\\u` escapes");
    // UTF-8 is read by the DFA byte by byte.
    assert!(pattern_takes("^日本$", r#""日本""#));
    assert!(!pattern_takes("^日本$", r#""日""#));
}

#[test]
fn a_patterned_string_never_reaches_a_dead_end() {
    let digits = json!({"type": "string", "pattern": r"^[0-9]{3}$"});
    assert!(pattern_continues(&digits, "\"12"));
    assert!(
        !pattern_continues(&digits, "\"1a"),
        "a byte the pattern refuses"
    );
    assert!(
        !pattern_continues(&digits, "\"123\\"),
        "no escape can continue"
    );
    assert!(
        !pattern_continues(&digits, "\"12\""),
        "closed before a match"
    );
    // `^a.*b$` in at most 3 characters: the third must be `b`, though the DFA alone would
    // take anything there.
    let bounded = json!({"type": "string", "pattern": "^a.*b$", "maxLength": 3});
    assert!(pattern_continues(&bounded, "\"ax"));
    assert!(!pattern_continues(&bounded, "\"axx"));
    assert!(matches(&bounded, "\"axb\""));
    assert!(!matches(&bounded, "\"axxb\""));
    // At least 4 characters of `^ab*$`: `ab` cannot end, `abbb` can.
    let long = json!({"type": "string", "pattern": "^ab*$", "minLength": 4});
    assert!(!matches(&long, "\"ab\""));
    assert!(!pattern_continues(&long, "\"ab\""));
    assert!(matches(&long, "\"abbb\""));
    // After `\` only escapes that lead to a match: `"` here, not `n`.
    let quote = json!({"type": "string", "pattern": "^x\"$"});
    assert!(pattern_continues(&quote, "\"x\\"));
    assert!(!pattern_continues(&quote, "\"x\\n"));
}

#[test]
fn formats_take_valid_values_only() {
    let takes = |format: &str, text: &str| {
        matches(
            &json!({"type": "string", "format": format}),
            &format!("\"{text}\""),
        )
    };
    assert!(takes("date", "2024-02-29"));
    assert!(!takes("date", "2023-02-29"), "not a leap year");
    assert!(!takes("date", "1900-02-29"), "not a leap year");
    assert!(takes("date", "2000-02-29"));
    assert!(!takes("date", "2024-04-31"));
    assert!(!takes("date", "2024-13-01"));
    assert!(takes("time", "23:59:59.5+01:00"));
    assert!(!takes("time", "24:00:00Z"));
    assert!(!takes("time", "12:00:00"), "an offset is required");
    assert!(takes("date-time", "2024-01-31T08:15:00Z"));
    assert!(takes("uuid", "123e4567-e89b-12d3-a456-426614174000"));
    assert!(!takes("uuid", "123e4567e89b12d3a456426614174000"));
    assert!(takes("ipv4", "192.168.0.255"));
    assert!(!takes("ipv4", "256.1.1.1"));
    assert!(!takes("ipv4", "01.1.1.1"), "leading zero");
    assert!(takes("ipv6", "2001:db8:0:0:0:0:0:1"));
    assert!(takes("email", "first.last+tag@mail.example.org"));
    assert!(!takes("email", "a..b@example.org"));
    assert!(!takes("email", "a@-example.org"));
    assert!(takes("hostname", "api-1.example.com"));
    assert!(!takes("hostname", "-api.example.com"));
    assert!(!takes("hostname", &format!("{}.com", "a".repeat(64))));
    assert!(takes("uri", "https://example.com:8080/a/b?q=1&r=%20#top"));
    assert!(!takes("uri", "example.com"));
    // `format` on another type is about strings only; `minLength` still applies.
    assert!(matches(
        &json!({"type": ["integer", "string"], "format": "date"}),
        "3"
    ));
    assert!(!matches(
        &json!({"type": "string", "format": "hostname", "minLength": 5}),
        "\"a.b\""
    ));
}

#[test]
fn patterned_and_formatted_strings_validate() {
    let schema = json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": r"^[A-Z]{2}-\d{3}$"},
            "word": {"type": "string", "pattern": "ab|cd", "maxLength": 6},
            "quoted": {"type": "string", "pattern": r#"^"[a-z]*"\n?$"#, "maxLength": 8},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "ip": {"type": "string", "format": "ipv4"},
            "ip6": {"type": "string", "format": "ipv6"},
            "mail": {"type": "string", "format": "email"},
            "host": {"type": "string", "format": "hostname", "maxLength": 20},
            "link": {"type": "string", "format": "uri"},
            "clock": {"type": "string", "format": "time"}
        },
        "required": ["code", "word", "quoted", "day", "at", "id", "ip", "ip6", "mail", "host", "link", "clock"],
        "additionalProperties": false
    });
    for value in check_random(&schema, 30) {
        let quoted = value["quoted"].as_str().unwrap_or_default();
        assert!(quoted.starts_with('"'), "{quoted:?}");
    }
}

#[test]
fn unsupported_patterns_are_refused_naming_them() {
    let error = |pattern: &str| {
        Grammar::from_json_schema(
            &json!({"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}}),
        )
        .expect_err("refused")
        .to_string()
    };
    for (pattern, why) in [
        ("a(?=b)", "look-around"),
        (r"(a)\1", "backreferences"),
        ("(?i)abc", "inline flags"),
        ("(?i:abc)", "inline flags"),
        ("[a-", "unclosed"),
    ] {
        let e = error(pattern);
        assert!(
            e.contains(&format!("the pattern `{pattern}` is not supported"))
                && e.contains(why)
                && e.contains("/properties/p/pattern"),
            "{pattern}: {e}"
        );
    }
    let e =
        Grammar::from_json_schema(&json!({"type": "string", "pattern": "^abc$", "maxLength": 2}))
            .expect_err("refused")
            .to_string();
    assert!(e.contains("of 0 to 2 characters"), "{e}");
    let e = Grammar::from_json_schema(&json!({"type": "string", "pattern": "^\u{1}$"}))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("without `\\u` escapes"), "{e}");
    let e = Grammar::from_json_schema(&json!({"type": "string", "pattern": "a", "format": "date"}))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("`pattern` beside `format`"), "{e}");
}

#[test]
fn integer_bounds_are_kept_digit_by_digit() {
    let percent = json!({"type": "integer", "minimum": -5, "maximum": 120});
    for taken in ["-5", "0", "-0", "7", "99", "120"] {
        assert!(matches(&percent, taken), "{taken}");
    }
    for refused in ["-6", "121", "1200", "-10"] {
        assert!(!matches(&percent, refused), "{refused}");
    }
    // No dead ends: a prefix is taken only if a number within the bounds can follow.
    assert!(pattern_continues(&percent, "12"), "12 or 120");
    assert!(pattern_continues(&percent, "13"));
    assert!(!pattern_continues(&percent, "130"));
    let large = json!({"type": "integer", "minimum": 100});
    assert!(pattern_continues(&large, "1"));
    assert!(!matches(&large, "1"));
    assert!(!pattern_continues(&large, "0"), "0 ends the digits");
    assert!(!pattern_continues(&large, "-"));
    let positive = json!({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10.5});
    assert!(!matches(&positive, "0"));
    assert!(matches(&positive, "10"));
    assert!(!pattern_continues(&positive, "11"));
    for schema in [
        percent,
        large,
        positive,
        json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": -1000, "maximum": -990}}, "required": ["n"]}),
        json!({"type": "array", "items": {"type": "integer", "minimum": 3, "maximum": 4}, "minItems": 2}),
    ] {
        check_random(&schema, 30);
    }
    // Integers with bounds that do not meet make a `oneOf`.
    check_random(
        &json!({"oneOf": [{"type": "integer", "maximum": 0}, {"type": "integer", "minimum": 1}, {"const": 0.5}]}),
        30,
    );
}

/// A number's text (without exponent) in units of 10⁻¹⁶, exactly.
fn exact(text: &str) -> i128 {
    let (negative, digits) = text.strip_prefix('-').map_or((false, text), |d| (true, d));
    let (int, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(fraction.len() <= 16 && !text.contains(['e', 'E']), "{text}");
    let int: i128 = int.parse().unwrap_or_else(|e| panic!("{e}: {text}"));
    let fraction: i128 = format!("{fraction:0<16}").parse().expect("digits");
    let v = int * 10i128.pow(16) + fraction;
    if negative {
        -v
    } else {
        v
    }
}

/// Samples numbers under `schema` (a number at the root) and checks each against its bounds
/// and `multipleOf` both as `f64`s (`validate`) and as exact decimals, the bounds read as
/// written; returns the texts.
fn check_numbers(schema: &Value, runs: u64) -> Vec<String> {
    let grammar = Arc::new(Grammar::from_json_schema(schema).expect("schema compiles"));
    (0..runs)
        .map(|seed| {
            let text = sample(&grammar, seed).trim().to_owned();
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            if let Err(e) = validate(schema, &value) {
                panic!("{e}\n{text}");
            }
            if value.is_number() {
                let v = exact(&text);
                let bound = |key: &str| schema.get(key).map(|b| exact(&b.to_string()));
                let fine = bound("minimum").is_none_or(|b| v >= b)
                    && bound("exclusiveMinimum").is_none_or(|b| v > b)
                    && bound("maximum").is_none_or(|b| v <= b)
                    && bound("exclusiveMaximum").is_none_or(|b| v < b)
                    && bound("multipleOf").is_none_or(|k| v % k == 0);
                assert!(fine, "{text} breaks {schema} read exactly");
            }
            text
        })
        .collect()
}

#[test]
fn number_bounds_and_steps_are_kept_exactly() {
    // Negative and fractional bounds.
    let negative = json!({"type": "number", "minimum": -2.5, "maximum": -0.75});
    for taken in ["-0.75", "-2.5", "-2.50", "-1", "-1.0625"] {
        assert!(matches(&negative, taken), "{taken}");
    }
    for refused in ["-0.7", "-2.51", "0", "-3", "-1e0", "-0.7499999999999999"] {
        assert!(!matches(&negative, refused), "{refused}");
    }
    assert!(
        !pattern_continues(&negative, "-3"),
        "no number below -2.5 starts -3"
    );
    assert!(!pattern_continues(&negative, "0"));
    assert!(!pattern_continues(&negative, "-0.5"));
    assert!(pattern_continues(&negative, "-0.7"), "-0.75 and on");
    assert!(
        !pattern_continues(&negative, "-1e"),
        "no exponent with bounds"
    );
    // Exclusive bounds: neither end, nor what parses to it.
    let open = json!({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1});
    for refused in ["0", "1", "0.0", "1.0", "-0.5", "0.99999999999999999"] {
        assert!(!matches(&open, refused), "{refused}");
    }
    assert!(matches(&open, "0.5") && matches(&open, "0.0000000000000001"));
    assert!(
        !pattern_continues(&open, "1."),
        "nothing in (0, 1) starts 1."
    );
    let below = json!({"type": "number", "minimum": 99.5, "exclusiveMaximum": 100});
    // 99.9999999999999999 is below 100 but parses to 100.0.
    assert!(!matches(&below, "99.9999999999999999"));
    assert!(matches(&below, "99.99999999999999"));
    // Steps: binary fractions on numbers, integers' steps as integers.
    let quarters = json!({"type": "number", "multipleOf": 0.25, "minimum": -1, "maximum": 1});
    assert!(matches(&quarters, "-0.75") && matches(&quarters, "0.5") && matches(&quarters, "1.00"));
    assert!(!matches(&quarters, "0.3") && !matches(&quarters, "1.25"));
    assert!(
        !pattern_continues(&quarters, "0.3"),
        "nothing in [0.3, 0.4) is a quarter"
    );
    assert!(pattern_continues(&quarters, "0.2"), "0.25");
    let fives = json!({"type": "integer", "multipleOf": 2.5});
    assert!(matches(&fives, "-15") && !matches(&fives, "2") && !matches(&fives, "12"));
    assert!(pattern_continues(&fives, "2"), "20, 25");
    // A step's multiples are exact `f64`s: odd multiples of 3 beyond 2^53 are not.
    let threes = json!({"type": "integer", "multipleOf": 3});
    assert!(matches(&threes, "9007199254740990") && !matches(&threes, "9007199254740993"));
    let single = json!({"type": "number", "minimum": 0.1, "maximum": 0.1});
    assert!(matches(&single, "0.1") && matches(&single, "0.10"));
    assert!(!matches(&single, "0.1000000000000001"));
    for schema in [
        &negative,
        &open,
        &below,
        &quarters,
        &fives,
        &threes,
        &single,
        &json!({"type": "integer", "multipleOf": 3, "exclusiveMinimum": -10, "maximum": 10}),
        &json!({"type": "number", "multipleOf": 5, "minimum": 1.5}),
        &json!({"type": "number", "exclusiveMinimum": -0.001, "exclusiveMaximum": 0.001}),
        &json!({"type": ["number", "null"], "exclusiveMaximum": -1000.5}),
        &json!({"minimum": 7.25, "maximum": 7.75}),
    ] {
        check_numbers(schema, 40);
    }
    let texts = check_numbers(&negative, 40);
    assert!(
        texts.iter().any(|t| t.contains('.')),
        "fractions too: {texts:?}"
    );
    check_numbers(&single, 5)
        .iter()
        .for_each(|t| assert!(t.starts_with("0.1"), "{t}"));
    // Ranges that do not meet make a `oneOf`.
    check_random(
        &json!({"oneOf": [{"type": "number", "maximum": 0.5}, {"type": "number", "exclusiveMinimum": 0.5}]}),
        20,
    );
}

/// Inside strings the mask takes shortcuts (plain tokens by their length, or by the pattern's
/// DFA alone); along random walks they mask exactly what the whole trie walked with the
/// matcher does.
#[test]
fn string_shortcuts_mask_what_the_full_walk_does() {
    let vocab = vocabulary();
    let trie = trie();
    let stop = trie.stop_ids()[0];
    let schemas = [
        json!({"type": "string", "pattern": r"^[a-z ]+(\.|!)$", "maxLength": 12}),
        json!({"type": "string", "pattern": "é|日本|ab", "minLength": 3}),
        json!({"type": "string", "format": "email", "maxLength": 20}),
        json!({"type": "array", "items": {"type": "string", "pattern": "\"|\\\\n", "maxLength": 4}}),
        json!({"type": "string", "minLength": 2, "maxLength": 5}),
    ];
    for schema in &schemas {
        let grammar = Arc::new(Grammar::from_json_schema(schema).expect("compiles"));
        for seed in 0..12 {
            let mut c = Constraint::new(Arc::clone(&grammar), Arc::clone(&trie));
            let mut rng = Rng(seed);
            for _ in 0..60 {
                let states = c.matcher().states.clone();
                let mask = trie.mask(&grammar, &states);
                assert_eq!(mask, trie.mask_walked(&grammar, &states), "{schema}");
                let allowed: Vec<u32> = (0..vocab.len() as u32)
                    .filter(|&id| allows(&mask, id))
                    .collect();
                let id = allowed[rng.below(allowed.len())];
                if id == stop || c.accept(id, &vocab[id as usize]).expect("accepted") {
                    break;
                }
            }
        }
    }
}

/// The cache compiles a schema once, whatever its text's spacing and key order, and keeps at
/// most `MAX_SCHEMAS` (the least recently used leaving first).
#[test]
fn the_grammar_cache_compiles_a_schema_once() {
    use super::cache::{GrammarCache, MAX_SCHEMAS};
    let cache = GrammarCache::new();
    let a: Value = serde_json::from_str(
        r#"{"type": "string", "pattern": "^[a-z]{3}-[0-9]+$", "maxLength": 9}"#,
    )
    .expect("json");
    let b: Value =
        serde_json::from_str(r#"{"maxLength":9,"pattern":"^[a-z]{3}-[0-9]+$","type":"string"}"#)
            .expect("json");
    let first = cache.compile(&a).expect("compiles");
    let second = cache.compile(&b).expect("compiles");
    assert!(Arc::ptr_eq(&first, &second), "the same grammar, reused");
    assert_eq!((cache.compiled(), cache.reused()), (1, 1));
    // Refused schemas are not kept.
    assert!(cache
        .compile(&json!({"type": "string", "pattern": "(?=a)"}))
        .is_err());
    assert_eq!((cache.compiled(), cache.len()), (1, 1));
    for n in 0..MAX_SCHEMAS as u32 {
        cache
            .compile(&json!({"type": "integer", "minimum": n}))
            .expect("compiles");
        if n == 10 {
            // Used again: the oldest is now another.
            cache.compile(&a).expect("compiles");
        }
    }
    assert_eq!(cache.len(), MAX_SCHEMAS);
    let compiled = cache.compiled();
    cache.compile(&a).expect("compiles");
    assert_eq!(cache.compiled(), compiled, "kept: used recently");
    cache
        .compile(&json!({"type": "integer", "minimum": 0}))
        .expect("compiles");
    assert_eq!(cache.compiled(), compiled + 1, "the oldest left");
}

/// Patterned strings in a `oneOf` are told apart by what their patterns accept, not only by
/// their lengths: branches no string matches both of are compiled (and each answer matches
/// exactly one), branches some string matches both of are refused.
#[test]
fn one_of_patterned_strings_are_told_apart_by_their_patterns() {
    let disjoint = [
        json!({"oneOf": [
            {"type": "string", "pattern": "^[0-9]+$"},
            {"type": "string", "pattern": "^[a-z]+$"},
            {"type": "string", "format": "date"}
        ]}),
        // Unanchored patterns: every `x…` string contains an `x`, but none both starts with
        // `a` and with `b`.
        json!({"oneOf": [{"type": "string", "pattern": "^a"}, {"type": "string", "pattern": "^b", "maxLength": 6}]}),
        json!({"oneOf": [{"type": "string", "format": "uuid"}, {"type": "string", "format": "email"}, {"type": "integer"}]}),
        // A literal the pattern refuses.
        json!({"oneOf": [{"type": "string", "pattern": "^[0-9]{3}$"}, {"enum": ["abc", "12", "1234"]}]}),
        json!({"type": "array", "items": {"oneOf": [
            {"type": "string", "pattern": "^id-[0-9]{2}$"},
            {"type": "string", "pattern": "^name:[a-z]{1,4}$"}
        ]}, "minItems": 2, "maxItems": 4}),
    ];
    for schema in &disjoint {
        Grammar::from_json_schema(schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        check_random(schema, 30);
    }
    let overlapping = [
        json!({"oneOf": [{"type": "string", "pattern": "a"}, {"type": "string", "pattern": "b"}]}),
        json!({"oneOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "string", "pattern": "^[0-5]{2}$"}]}),
        json!({"oneOf": [{"type": "string", "format": "hostname"}, {"type": "string", "format": "ipv4"}]}),
        json!({"oneOf": [{"type": "string", "pattern": "^[0-9]{3}$"}, {"const": "123"}]}),
        json!({"oneOf": [{"type": "string", "pattern": "^[0-9]{3}$"}, {"type": "string", "maxLength": 3}]}),
    ];
    for schema in overlapping {
        let e = Grammar::from_json_schema(&schema)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("`oneOf` branches 0 and 1"), "{schema}: {e}");
    }
}
