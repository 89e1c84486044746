//! Detectors of secrets: the key formats of the major API providers, private keys, JWTs and
//! bearer tokens. One regular expression (compiled once) whose literal prefixes make the
//! scan of a text without any of them a fast search for those prefixes.

use crate::kind::{Builtin, Hit};
use regex::Regex;
use std::sync::LazyLock;

static SECRETS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"sk-(?:proj-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_\-]{20,}",
        r"|\bAKIA[0-9A-Z]{16}\b",
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}",
        r"|\bgithub_pat_[A-Za-z0-9_]{22,}",
        r"|\bglpat-[A-Za-z0-9_\-]{20,}",
        r"|\bxox[abeprs]-[A-Za-z0-9\-]{10,}",
        r"|\bAIza[0-9A-Za-z_\-]{35}",
        r"|\bgsk_[A-Za-z0-9]{20,}",
        r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        r"|\b[Bb]earer\s+[A-Za-z0-9._~+/\-]{16,}=*",
    ))
    .expect("the secret patterns compile")
});

pub(super) fn secrets(text: &str, out: &mut Vec<Hit>) {
    for m in SECRETS.find_iter(text) {
        out.push(Hit {
            start: m.start(),
            end: m.end(),
            kind: Builtin::Secret,
        });
    }
}
