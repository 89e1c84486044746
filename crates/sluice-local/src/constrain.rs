//! Constrained decoding: output that matches a JSON Schema (`response_format` `json_schema`) or
//! is any JSON object (`json_object`), enforced by masking the logits of every token that
//! would break it.
//!
//! * `schema`: a JSON Schema (the subset [`Grammar::from_json_schema`] documents) compiled to a
//!   graph of value nodes; unsupported keywords are a [`SchemaError`] naming them.
//! * `pattern`: a string's `pattern` as a DFA over its decoded bytes, with which states can
//!   still end in a match within the string's lengths; `format`: formats as patterns.
//! * `bounds`: a number's `minimum`/`maximum` (exclusive or not) and `multipleOf`, checked
//!   digit by digit, exactly.
//! * `one_of`: the proof that a `oneOf`'s branches are disjoint (else it is refused), which
//!   makes matching one of them matching exactly one.
//! * `matcher`: the byte-level pushdown matcher of a grammar (a set of parses, each a stack of
//!   frames shared persistently), which is also what keeps the output valid JSON: UTF-8,
//!   escapes, number syntax, bounded whitespace and nesting.
//! * `vocab`: the model's vocabulary as a preorder byte trie; a mask is one pass over it with
//!   dead subtrees skipped.
//! * `guide`: [`Constraint`], a request's matcher with its masks cached per state set.
//! * `cache`: [`GrammarCache`], compiled schemas kept across requests by canonical text.

mod bounds;
mod cache;
mod format;
mod guide;
mod matcher;
mod one_of;
mod pattern;
mod schema;
mod vocab;

pub use cache::GrammarCache;
pub use guide::{Constraint, ConstraintError};
pub use schema::{Grammar, SchemaError};
pub(crate) use vocab::TokenTrie;

impl Grammar {
    /// Compiles a JSON Schema (the subset `schema` documents; a `oneOf` only when `one_of`
    /// shows its branches disjoint).
    pub fn from_json_schema(schema: &serde_json::Value) -> Result<Self, SchemaError> {
        let (grammar, one_ofs) = schema::compile(schema)?;
        one_of::check(&grammar, &one_ofs)?;
        Ok(grammar)
    }
}

#[cfg(test)]
mod tests;
