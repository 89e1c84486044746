//! Constrained decoding: output that matches a JSON Schema (`response_format` `json_schema`) or
//! is any JSON object (`json_object`), enforced by masking the logits of every token that
//! would break it.
//!
//! * `schema`: a JSON Schema (the subset [`Grammar::from_json_schema`] documents) compiled to a
//!   graph of value nodes; unsupported keywords are a [`SchemaError`] naming them.
//! * `matcher`: the byte-level pushdown matcher of a grammar (a set of parses, each a stack of
//!   frames shared persistently), which is also what keeps the output valid JSON: UTF-8,
//!   escapes, number syntax, bounded whitespace and nesting.
//! * `vocab`: the model's vocabulary as a preorder byte trie; a mask is one pass over it with
//!   dead subtrees skipped.
//! * `guide`: [`Constraint`], a request's matcher with its masks cached per state set.

mod guide;
mod matcher;
mod schema;
mod vocab;

pub use guide::{Constraint, ConstraintError};
pub use schema::{Grammar, SchemaError};
pub(crate) use vocab::TokenTrie;

#[cfg(test)]
mod tests;
