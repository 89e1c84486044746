//! `oneOf` made exact: the matcher produces a value matching at least one branch (as for
//! `anyOf`), which validates against `oneOf` only if no value can match two. So a `oneOf` is
//! compiled only when its branches are provably disjoint, pairwise:
//!
//! * values of different kinds (a string and a number, an object and `null`, …), or an
//!   integer and a literal number with a fraction;
//! * literals (`const`, `enum`) none of which is the other's, or that the other's kind refuses;
//! * strings whose length ranges do not meet, or whose `pattern`s (or `format`s) no string
//!   matches both of (their automata's product searched, up to a size), and a literal string
//!   the other branch's pattern refuses; arrays whose item-count ranges do not meet;
//! * objects told apart by a property one of them requires whose value the other cannot take
//!   there (a different `const`, another type, or a key the other does not allow).
//!
//! Branches are compared on the compiled graph (a `$ref` is followed, a union is disjoint
//! from another node when each of its alternatives is); what the proof cannot reach within a
//! few levels counts as overlapping, and the schema is refused naming the branches.

use serde_json::Value;

use super::bounds::UNIT;
use super::schema::{Grammar, Node, NodeId, ObjectNode, SchemaError};

/// How deep the proof follows nested unions and properties.
const DEPTH: u32 = 8;

/// Checks that the branches of each `oneOf` (its union node and its JSON pointer) are
/// pairwise disjoint.
pub(crate) fn check(grammar: &Grammar, one_ofs: &[(NodeId, String)]) -> Result<(), SchemaError> {
    for (id, path) in one_ofs {
        let Node::Union(branches) = grammar.node(*id) else {
            continue;
        };
        for (i, &a) in branches.iter().enumerate() {
            for (j, &b) in branches.iter().enumerate().skip(i + 1) {
                if !disjoint(grammar, a, b, DEPTH) {
                    return Err(SchemaError {
                        path: path.clone(),
                        message: format!(
                            "`oneOf` branches {i} and {j} may both match a value: a `oneOf` is \
                             enforced only when no value can match two branches (different \
                             types, different `const`/`enum` values, or objects told apart by a \
                             required property with such values); use `anyOf` if either may match"
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether no value matches both `a` and `b` (`false` when that cannot be shown).
fn disjoint(g: &Grammar, a: NodeId, b: NodeId, depth: u32) -> bool {
    if depth == 0 || a == b {
        return false;
    }
    match (g.node(a), g.node(b)) {
        (Node::Union(xs), _) => !xs.is_empty() && xs.iter().all(|&x| disjoint(g, x, b, depth - 1)),
        (_, Node::Union(ys)) => !ys.is_empty() && ys.iter().all(|&y| disjoint(g, a, y, depth - 1)),
        (Node::Literals(xs), Node::Literals(ys)) => xs
            .iter()
            .all(|x| ys.iter().all(|y| !same(&parse(x), &parse(y)))),
        (Node::Literals(xs), other) | (other, Node::Literals(xs)) => {
            xs.iter().all(|x| !admits(g, other, &parse(x)))
        }
        (
            Node::String {
                min: a0,
                max: a1,
                pattern: pa,
            },
            Node::String {
                min: b0,
                max: b1,
                pattern: pb,
            },
        ) => {
            apart(*a0, *a1, *b0, *b1)
                || match (pa, pb) {
                    (Some(pa), Some(pb)) => g.pattern(*pa).meets(g.pattern(*pb)) == Some(false),
                    _ => false,
                }
        }
        (Node::Number { range: Some(a), .. }, Node::Number { range: Some(b), .. }) => {
            a.hi < b.lo || b.hi < a.lo
        }
        (Node::Number { .. }, Node::Number { .. }) => false,
        (
            Node::Array {
                min: a0, max: a1, ..
            },
            Node::Array {
                min: b0, max: b1, ..
            },
        ) => apart(*a0, *a1, *b0, *b1),
        (Node::Object(x), Node::Object(y)) => {
            told_apart(g, x, y, depth - 1) || told_apart(g, y, x, depth - 1)
        }
        // Different kinds of value.
        _ => true,
    }
}

/// Whether ranges `a0..=a1` and `b0..=b1` (`None`: unbounded) do not meet.
fn apart(a0: u32, a1: Option<u32>, b0: u32, b1: Option<u32>) -> bool {
    a1.is_some_and(|a1| a1 < b0) || b1.is_some_and(|b1| b1 < a0)
}

/// Whether a property `x` requires cannot be what `y` allows under that key.
fn told_apart(g: &Grammar, x: &ObjectNode, y: &ObjectNode, depth: u32) -> bool {
    x.properties.iter().enumerate().any(|(i, &schema)| {
        if x.required & (1 << i) == 0 {
            return false;
        }
        let key = x.keys.key(i);
        let there = y.keys.find(&key).map(|j| y.properties[j]).or(y.additional);
        there.is_none_or(|other| disjoint(g, schema, other, depth))
    })
}

fn parse(text: &[u8]) -> Value {
    serde_json::from_slice(text).unwrap_or(Value::Null)
}

/// JSON Schema's equality: numbers by value (`1` is `1.0`), objects by their members.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| same(x, y)))
        }
        _ => a == b,
    }
}

/// Whether a typed (non-literal, non-union) node may accept `value` (`true` when unsure).
fn admits(g: &Grammar, node: &Node, value: &Value) -> bool {
    match (node, value) {
        (Node::String { min, max, pattern }, Value::String(s)) => {
            let n = s.chars().count() as u64;
            n >= u64::from(*min)
                && max.is_none_or(|max| n <= u64::from(max))
                && pattern.is_none_or(|p| g.pattern(p).may_match(s))
        }
        (Node::Number { integer, range }, Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within the range, in grid units, give or take what `f64`s round away.
            let within = range.is_none_or(|r| {
                let g = f * UNIT as f64;
                let slack = g.abs() * 1e-14 + 2.0;
                r.meets(
                    false,
                    (g - slack).floor() as i128,
                    (g + slack).ceil() as i128,
                )
            });
            (!integer || f.fract() == 0.0) && within
        }
        (Node::Array { .. }, Value::Array(_)) | (Node::Object(_), Value::Object(_)) => true,
        _ => false,
    }
}
