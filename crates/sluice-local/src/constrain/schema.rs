//! A JSON Schema, compiled to a graph of [`Node`]s the byte matcher walks.
//!
//! The subset: `type` (one or a list), `properties`/`required`/`additionalProperties`,
//! `items`/`minItems`/`maxItems`, `enum`/`const`, `minLength`/`maxLength`, `pattern` (see
//! `pattern`), the `format`s `format` lists (one `pattern` or `format` per string),
//! `minimum`/`maximum` (exclusive or not) and `multipleOf` on numbers (see `bounds`),
//! `anyOf`/`oneOf`, `$ref` to anywhere in the same document (`#/$defs/x`, `#/definitions/x`,
//! `#`), `$defs`.
//! Annotations (`title`, `description`, `examples`, `default`, …) are ignored. Any other
//! keyword is a [`SchemaError`] naming it, never silently dropped: the matcher would produce
//! output the schema's validator then rejects.
//!
//! `oneOf` is compiled as `anyOf` once its branches are shown to be disjoint (`one_of`): a
//! `oneOf` whose branches may overlap is refused. `$ref`s may recurse (`#`); nesting is
//! bounded by the matcher's depth limit.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::bounds::{self, NumRange};
use super::format::{self, FORMATS};
use super::pattern::Pattern;

/// Index of a node in [`Grammar::nodes`].
pub(crate) type NodeId = u32;

/// Most properties one object schema may declare (the matcher tracks them in a `u64`).
pub(crate) const MAX_PROPERTIES: usize = 64;

/// Keywords that only annotate: accepted and ignored.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "$comment",
    "$anchor",
];

/// What a value may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// Exactly one of these JSON texts (`enum`, `const`, `true`, `false`, `null`).
    Literals(Vec<Box<[u8]>>),
    /// A string of `min..=max` characters, matching pattern `pattern` (an index into
    /// [`Grammar::patterns`]) if given.
    String {
        min: u32,
        max: Option<u32>,
        pattern: Option<u32>,
    },
    /// A JSON number; an integer has no fraction or exponent; bounds and `multipleOf` are a
    /// range (and such a number has no exponent either).
    Number {
        integer: bool,
        range: Option<NumRange>,
    },
    /// An array of `min..=max` items.
    Array {
        items: NodeId,
        min: u32,
        max: Option<u32>,
    },
    /// An object.
    Object(ObjectNode),
    /// Any one of these (`anyOf`, `oneOf`, a `type` list, a `$ref`).
    Union(Vec<NodeId>),
}

/// An object schema: its declared properties and what other keys may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectNode {
    /// Declared properties, in schema order.
    pub(crate) properties: Vec<NodeId>,
    /// Bit `i`: property `i` is required.
    pub(crate) required: u64,
    /// Schema of keys not declared; `None`: no other keys (`additionalProperties: false`).
    pub(crate) additional: Option<NodeId>,
    /// The declared keys as JSON-encoded bytes (without quotes), as a trie.
    pub(crate) keys: KeyTrie,
}

/// A trie of an object's declared keys; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyTrie {
    nodes: Vec<KeyTrieNode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct KeyTrieNode {
    children: Vec<(u8, u32)>,
    /// The property whose key ends here.
    property: Option<u8>,
    /// Bit `i`: property `i`'s key passes through here.
    below: u64,
}

// === impl KeyTrie ===

impl KeyTrie {
    fn new(keys: &[Vec<u8>]) -> Self {
        let mut trie = Self {
            nodes: vec![KeyTrieNode::default()],
        };
        for (i, key) in keys.iter().enumerate() {
            let bit = 1u64 << i;
            let mut at = 0usize;
            trie.nodes[0].below |= bit;
            for &b in key {
                let next = match trie.nodes[at].children.iter().find(|(c, _)| *c == b) {
                    Some(&(_, next)) => next as usize,
                    None => {
                        trie.nodes.push(KeyTrieNode::default());
                        let next = trie.nodes.len() - 1;
                        trie.nodes[at].children.push((b, next as u32));
                        next
                    }
                };
                at = next;
                trie.nodes[at].below |= bit;
            }
            trie.nodes[at].property = Some(i as u8);
        }
        trie
    }

    /// The node after `byte` from `at`.
    pub(crate) fn step(&self, at: u32, byte: u8) -> Option<u32> {
        self.nodes[at as usize]
            .children
            .iter()
            .find(|(c, _)| *c == byte)
            .map(|&(_, n)| n)
    }

    /// Properties whose keys pass through `at`.
    pub(crate) fn below(&self, at: u32) -> u64 {
        self.nodes[at as usize].below
    }

    /// The property whose key ends at `at`.
    pub(crate) fn property(&self, at: u32) -> Option<u8> {
        self.nodes[at as usize].property
    }

    /// The property whose key is `key` (JSON-encoded, without quotes).
    pub(crate) fn find(&self, key: &[u8]) -> Option<usize> {
        let mut at = 0;
        for &b in key {
            at = self.step(at, b)?;
        }
        self.property(at).map(usize::from)
    }

    /// Property `i`'s key (JSON-encoded, without quotes).
    pub(crate) fn key(&self, i: usize) -> Vec<u8> {
        let bit = 1u64 << i;
        let (mut key, mut at) = (Vec::new(), 0usize);
        while self.nodes[at].property != Some(i as u8) {
            let below = |n: u32| self.nodes[n as usize].below & bit != 0;
            let Some(&(b, next)) = self.nodes[at].children.iter().find(|(_, n)| below(*n)) else {
                break;
            };
            key.push(b);
            at = next as usize;
        }
        key
    }
}

/// A compiled schema: node 0 is the root value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    pub(crate) nodes: Vec<Node>,
    pub(crate) root: NodeId,
    /// The strings' patterns (and formats), compiled.
    pub(crate) patterns: Vec<Pattern>,
}

/// Why a schema was refused: where (a JSON pointer into the schema) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at `#{path}`)")]
pub struct SchemaError {
    /// JSON pointer to the offending schema (`""` is the root).
    pub path: String,
    /// What is wrong or not supported.
    pub message: String,
}

// === impl Grammar ===

/// Compiles a JSON Schema (see the module docs for the subset): the grammar, and each
/// `oneOf`'s union node with where it is (for `one_of::check`).
pub(crate) fn compile(schema: &Value) -> Result<(Grammar, Vec<(NodeId, String)>), SchemaError> {
    let mut compiler = Compiler {
        root: schema,
        nodes: Vec::new(),
        refs: HashMap::new(),
        one_ofs: Vec::new(),
        patterns: Vec::new(),
    };
    let root = compiler.compile(schema, "")?;
    let grammar = Grammar {
        nodes: compiler.nodes,
        root,
        patterns: compiler.patterns,
    };
    grammar.check_alias_cycles()?;
    Ok((grammar, compiler.one_ofs))
}

impl Grammar {
    /// Any JSON object (`response_format` `json_object`).
    pub fn json_object() -> Self {
        let mut nodes = vec![Node::Union(Vec::new())];
        let any = 0;
        let object = push(
            &mut nodes,
            Node::Object(ObjectNode {
                properties: Vec::new(),
                required: 0,
                additional: Some(any),
                keys: KeyTrie::new(&[]),
            }),
        );
        let array = push(
            &mut nodes,
            Node::Array {
                items: any,
                min: 0,
                max: None,
            },
        );
        let string = push(
            &mut nodes,
            Node::String {
                min: 0,
                max: None,
                pattern: None,
            },
        );
        let number = push(
            &mut nodes,
            Node::Number {
                integer: false,
                range: None,
            },
        );
        let literals = push(
            &mut nodes,
            Node::Literals(vec![
                b"true".as_slice().into(),
                b"false".as_slice().into(),
                b"null".as_slice().into(),
            ]),
        );
        nodes[0] = Node::Union(vec![object, array, string, number, literals]);
        Self {
            nodes,
            root: object,
            patterns: Vec::new(),
        }
    }

    /// About how many bytes the grammar holds (its nodes and its patterns' tables).
    pub(crate) fn heap_bytes(&self) -> usize {
        let literals: usize = self
            .nodes
            .iter()
            .map(|n| match n {
                Node::Literals(texts) => texts.iter().map(|t| t.len() + 16).sum(),
                Node::Object(o) => o.properties.len() * 64,
                Node::Union(alternatives) => alternatives.len() * 4,
                _ => 0,
            })
            .sum();
        self.nodes.len() * std::mem::size_of::<Node>()
            + literals
            + self.patterns.iter().map(Pattern::heap_bytes).sum::<usize>()
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub(crate) fn pattern(&self, id: u32) -> &Pattern {
        &self.patterns[id as usize]
    }

    /// `$ref`s that only point at each other never reach a value.
    fn check_alias_cycles(&self) -> Result<(), SchemaError> {
        // 0: unvisited, 1: on the path, 2: done.
        let mut mark = vec![0u8; self.nodes.len()];
        fn visit(g: &Grammar, id: NodeId, mark: &mut [u8]) -> bool {
            match mark[id as usize] {
                1 => return false,
                2 => return true,
                _ => {}
            }
            mark[id as usize] = 1;
            if let Node::Union(alternatives) = g.node(id) {
                for &a in alternatives {
                    if !visit(g, a, mark) {
                        return false;
                    }
                }
            }
            mark[id as usize] = 2;
            true
        }
        for id in 0..self.nodes.len() as NodeId {
            if !visit(self, id, &mut mark) {
                return Err(SchemaError {
                    path: String::new(),
                    message: "`$ref`s refer to each other in a cycle that never reaches a value"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

fn push(nodes: &mut Vec<Node>, node: Node) -> NodeId {
    nodes.push(node);
    (nodes.len() - 1) as NodeId
}

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    /// `$ref` targets compiled so far.
    refs: HashMap<String, NodeId>,
    /// Each `oneOf`'s union node and where it is.
    one_ofs: Vec<(NodeId, String)>,
    patterns: Vec<Pattern>,
}

fn err(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_owned(),
        message: message.into(),
    }
}

// === impl Compiler ===

impl<'a> Compiler<'a> {
    fn push(&mut self, node: Node) -> NodeId {
        push(&mut self.nodes, node)
    }

    fn compile(&mut self, schema: &'a Value, path: &str) -> Result<NodeId, SchemaError> {
        let map = match schema {
            Value::Bool(true) => return Ok(self.any()),
            Value::Bool(false) => {
                return Err(err(path, "the schema `false` allows no value"));
            }
            Value::Object(map) => map,
            _ => return Err(err(path, "a schema must be an object or a boolean")),
        };
        check_keywords(map, path)?;
        // Checked whatever the type: `format` constrains strings only, but a `format` not
        // compiled (say `int32` on an integer) is refused, never silently dropped.
        if let Some(name) = map.get("format") {
            let name = name.as_str().unwrap_or_default();
            if format::pattern(name).is_none() {
                return Err(err(&format!("{path}/format"), unknown_format(name)));
            }
        }
        if let Some(target) = map.get("$ref") {
            only_beside(map, path, "$ref", &[])?;
            let target = target
                .as_str()
                .ok_or_else(|| err(&format!("{path}/$ref"), "`$ref` must be a string"))?;
            return self.reference(target, &format!("{path}/$ref"));
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = map.get(keyword) {
                only_beside(map, path, keyword, &[])?;
                return self.union(branches, &format!("{path}/{keyword}"), keyword);
            }
        }
        if let Some(values) = map.get("enum") {
            only_beside(map, path, "enum", &["type"])?;
            let values = values
                .as_array()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(&format!("{path}/enum"), "`enum` must be a non-empty array"))?;
            return Ok(self.literals(values.iter()));
        }
        if let Some(value) = map.get("const") {
            only_beside(map, path, "const", &["type"])?;
            return Ok(self.literals(std::iter::once(value)));
        }
        let types: Vec<&str> = match map.get("type") {
            None => return self.untyped(map, path),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) if !ts.is_empty() => ts
                .iter()
                .map(|t| t.as_str())
                .collect::<Option<_>>()
                .ok_or_else(|| err(&format!("{path}/type"), "`type` must name types"))?,
            Some(_) => {
                return Err(err(
                    &format!("{path}/type"),
                    "`type` must be a string or a non-empty array",
                ))
            }
        };
        let mut alternatives = Vec::with_capacity(types.len());
        for t in types {
            alternatives.push(self.typed(t, map, path)?);
        }
        Ok(match alternatives.as_slice() {
            [one] => *one,
            _ => self.push(Node::Union(alternatives)),
        })
    }

    /// A schema without `type`: an object or array if its keywords say so, else any value.
    fn untyped(&mut self, map: &'a Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
        if has(&["properties", "required", "additionalProperties"]) {
            self.typed("object", map, path)
        } else if has(&["items", "minItems", "maxItems"]) {
            self.typed("array", map, path)
        } else if has(&["minLength", "maxLength", "pattern", "format"]) {
            self.typed("string", map, path)
        } else if has(bounds::KEYWORDS) {
            // Values of other types would do too: numbers are a subset that validates.
            self.typed("number", map, path)
        } else {
            Ok(self.any())
        }
    }

    fn typed(
        &mut self,
        t: &str,
        map: &'a Map<String, Value>,
        path: &str,
    ) -> Result<NodeId, SchemaError> {
        Ok(match t {
            "object" => self.object(map, path)?,
            "array" => self.array(map, path)?,
            "string" => self.string(map, path)?,
            "number" | "integer" => {
                let integer = t == "integer";
                let range = NumRange::from_schema(map, integer).map_err(|(key, message)| {
                    err(
                        &format!("{path}{}{key}", if key.is_empty() { "" } else { "/" }),
                        message,
                    )
                })?;
                self.push(Node::Number { integer, range })
            }
            "boolean" => self.push(Node::Literals(vec![
                b"true".as_slice().into(),
                b"false".as_slice().into(),
            ])),
            "null" => self.push(Node::Literals(vec![b"null".as_slice().into()])),
            other => {
                return Err(err(
                    &format!("{path}/type"),
                    format!("unknown type `{other}`"),
                ))
            }
        })
    }

    /// A string: its lengths, and its `pattern` or `format` compiled.
    fn string(&mut self, map: &Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        let min = count(map, "minLength", path)?.unwrap_or(0);
        let mut max = count(map, "maxLength", path)?;
        if max.is_some_and(|max| max < min) {
            return Err(err(path, "`maxLength` is below `minLength`"));
        }
        let (source, at) = match (map.get("pattern"), map.get("format")) {
            (None, None) => {
                return Ok(self.push(Node::String {
                    min,
                    max,
                    pattern: None,
                }))
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    path,
                    "`pattern` beside `format` is not supported: give one of them",
                ))
            }
            (Some(pattern), None) => {
                let at = format!("{path}/pattern");
                let pattern = pattern
                    .as_str()
                    .ok_or_else(|| err(&at, "`pattern` must be a string"))?;
                (pattern.to_owned(), at)
            }
            (None, Some(name)) => {
                let at = format!("{path}/format");
                let name = name.as_str().unwrap_or_default();
                let (pattern, longest) =
                    format::pattern(name).ok_or_else(|| err(&at, unknown_format(name)))?;
                // The format's own length limit (a hostname's 253 characters).
                if let Some(longest) = longest {
                    max = Some(max.map_or(longest, |m| m.min(longest)));
                }
                (format!("^(?:{pattern})$"), at)
            }
        };
        let pattern = Pattern::compile(&source, min, max).map_err(|why| {
            err(
                &at,
                format!("the pattern `{source}` is not supported: {why}"),
            )
        })?;
        self.patterns.push(pattern);
        let pattern = Some((self.patterns.len() - 1) as u32);
        Ok(self.push(Node::String { min, max, pattern }))
    }

    fn object(&mut self, map: &'a Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        // Reserve the id first: a property may refer back to this object.
        let id = self.push(Node::Union(Vec::new()));
        let properties: Vec<(&'a String, &'a Value)> = match map.get("properties") {
            None => Vec::new(),
            Some(Value::Object(p)) => p.iter().collect(),
            Some(_) => {
                return Err(err(
                    &format!("{path}/properties"),
                    "`properties` must be an object",
                ))
            }
        };
        if properties.len() > MAX_PROPERTIES {
            return Err(err(
                &format!("{path}/properties"),
                format!("more than {MAX_PROPERTIES} properties in one object"),
            ));
        }
        let mut keys = Vec::with_capacity(properties.len());
        let mut nodes = Vec::with_capacity(properties.len());
        for &(name, schema) in &properties {
            let encoded = serde_json::to_string(name).unwrap_or_default();
            keys.push(encoded.as_bytes()[1..encoded.len() - 1].to_vec());
            nodes.push(self.compile(
                schema,
                &format!("{path}/properties/{}", escape_pointer(name)),
            )?);
        }
        let mut required = 0u64;
        if let Some(names) = map.get("required") {
            let names = names
                .as_array()
                .ok_or_else(|| err(&format!("{path}/required"), "`required` must be an array"))?;
            for name in names {
                let name = name.as_str().ok_or_else(|| {
                    err(&format!("{path}/required"), "`required` must list strings")
                })?;
                let i = properties.iter().position(|(k, _)| *k == name).ok_or_else(|| {
                    err(
                        &format!("{path}/required"),
                        format!("`{name}` is required but not among `properties` (only declared properties can be required)"),
                    )
                })?;
                required |= 1 << i;
            }
        }
        let additional = match map.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Some(self.any()),
            Some(Value::Bool(false)) => None,
            Some(schema) => Some(self.compile(schema, &format!("{path}/additionalProperties"))?),
        };
        self.nodes[id as usize] = Node::Object(ObjectNode {
            properties: nodes,
            required,
            additional,
            keys: KeyTrie::new(&keys),
        });
        Ok(id)
    }

    fn array(&mut self, map: &'a Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        let id = self.push(Node::Union(Vec::new()));
        let min = count(map, "minItems", path)?.unwrap_or(0);
        let mut max = count(map, "maxItems", path)?;
        let items = match map.get("items") {
            None => self.any(),
            Some(Value::Bool(false)) => {
                max = Some(0);
                self.any()
            }
            Some(schema) => self.compile(schema, &format!("{path}/items"))?,
        };
        if max.is_some_and(|max| max < min) {
            return Err(err(
                path,
                "`maxItems` is below `minItems` (or `items` is `false`)",
            ));
        }
        self.nodes[id as usize] = Node::Array { items, min, max };
        Ok(id)
    }

    fn union(
        &mut self,
        branches: &'a Value,
        path: &str,
        keyword: &str,
    ) -> Result<NodeId, SchemaError> {
        let branches = branches
            .as_array()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| err(path, format!("`{keyword}` must be a non-empty array")))?;
        let id = self.push(Node::Union(Vec::new()));
        let mut alternatives = Vec::with_capacity(branches.len());
        for (i, branch) in branches.iter().enumerate() {
            alternatives.push(self.compile(branch, &format!("{path}/{i}"))?);
        }
        self.nodes[id as usize] = Node::Union(alternatives);
        if keyword == "oneOf" {
            self.one_ofs.push((id, path.to_owned()));
        }
        Ok(id)
    }

    fn reference(&mut self, target: &str, path: &str) -> Result<NodeId, SchemaError> {
        if let Some(&id) = self.refs.get(target) {
            return Ok(id);
        }
        let pointer = target.strip_prefix('#').ok_or_else(|| {
            err(
                path,
                format!(
                    "`$ref` `{target}`: only references into this schema (`#/...`) are supported"
                ),
            )
        })?;
        let schema = self
            .root
            .pointer(pointer)
            .ok_or_else(|| err(path, format!("`$ref` `{target}` points nowhere")))?;
        let id = self.push(Node::Union(Vec::new()));
        self.refs.insert(target.to_owned(), id);
        let inner = self.compile(schema, pointer)?;
        self.nodes[id as usize] = Node::Union(vec![inner]);
        Ok(id)
    }

    fn literals<'v>(&mut self, values: impl Iterator<Item = &'v Value>) -> NodeId {
        let texts = values
            .map(|v| {
                serde_json::to_string(v)
                    .unwrap_or_default()
                    .into_bytes()
                    .into_boxed_slice()
            })
            .collect();
        self.push(Node::Literals(texts))
    }

    /// Any JSON value (`true`, `{}`).
    fn any(&mut self) -> NodeId {
        let base = self.nodes.len() as NodeId;
        let any = Grammar::json_object();
        // `json_object`'s nodes, shifted to the end of ours; its node 0 is the any-value union.
        for node in any.nodes {
            let shifted = match node {
                Node::Union(alternatives) => {
                    Node::Union(alternatives.into_iter().map(|a| a + base).collect())
                }
                Node::Array { items, min, max } => Node::Array {
                    items: items + base,
                    min,
                    max,
                },
                Node::Object(mut o) => {
                    o.additional = o.additional.map(|a| a + base);
                    Node::Object(o)
                }
                other => other,
            };
            self.nodes.push(shifted);
        }
        base
    }
}

/// Refuses keywords outside the subset, naming them.
fn check_keywords(map: &Map<String, Value>, path: &str) -> Result<(), SchemaError> {
    const SUPPORTED: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "anyOf",
        "oneOf",
        "$ref",
        "$defs",
        "definitions",
    ];
    let unsupported: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !SUPPORTED.contains(k) && !ANNOTATIONS.contains(k))
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    Err(err(
        path,
        format!(
            "unsupported JSON Schema keyword{} {} (supported: {})",
            if unsupported.len() > 1 { "s" } else { "" },
            unsupported
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            SUPPORTED.join(", ")
        ),
    ))
}

/// The error for a `format` not compiled.
fn unknown_format(name: &str) -> String {
    format!(
        "the `format` `{name}` is not supported (supported: {})",
        FORMATS.join(", ")
    )
}

/// Refuses `keyword` beside other validation keywords (other than `allowed`).
fn only_beside(
    map: &Map<String, Value>,
    path: &str,
    keyword: &str,
    allowed: &[&str],
) -> Result<(), SchemaError> {
    let others: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| {
            *k != keyword
                && !allowed.contains(k)
                && !ANNOTATIONS.contains(k)
                && !matches!(*k, "$defs" | "definitions")
        })
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(err(
        path,
        format!(
            "`{keyword}` beside {} is not supported: move them into the `{keyword}` branches",
            others
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// A non-negative integer keyword.
fn count(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u32>, SchemaError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(|n| Some(n.min(u64::from(u32::MAX - 1)) as u32))
            .ok_or_else(|| {
                err(
                    &format!("{path}/{key}"),
                    format!("`{key}` must be a non-negative integer"),
                )
            }),
    }
}

fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}
