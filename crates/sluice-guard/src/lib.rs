//! Guardrails: what must not leave for a third party, and what must not reach a user.
//!
//! - [`detect`]: the built-in detectors (email, phone, payment card, IBAN, US SSN, Aadhaar,
//!   PAN, IP address, secrets), each checked as its issuer checks it;
//! - [`json`]: the string values of a JSON body, found in one pass without a tree;
//! - [`policy`]: guardrails compiled from config and their verdict on a body: pass, block
//!   or redact (typed placeholders, restorable in the answer);
//! - [`stream`]: the same over an answer that arrives in pieces, held back by a window;
//! - [`webhook`]: the webhook guardrail's payload and verdicts;
//! - [`schema`]: a JSON Schema validator for the subset structured outputs accept (answers
//!   checked against a request's `response_format`).
//!
//! No I/O: the server decides where guardrails apply and what a verdict does to a request.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod checksum;
pub mod detect;
pub mod json;
mod kind;
pub mod policy;
pub mod schema;
mod schema_format;
pub mod stream;
pub mod webhook;

pub use detect::Builtin;
pub use policy::{check, conceal, restore, summarize, Action, Finding, Guardrail, Verdict};
