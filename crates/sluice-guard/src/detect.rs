//! The built-in detectors. Each finds byte ranges of one kind of value in a text; none
//! allocates unless it finds something. Numbers are checked the way their issuers check
//! them (Luhn for cards, Verhoeff for Aadhaar, mod 97 for IBANs, the SSA's rules for SSNs),
//! so an order number or a timestamp is not taken for one.

mod numbers;
mod secret;
mod words;

pub use crate::kind::{Builtin, Builtins, Hit};

/// Runs the built-ins of `set` over `text`, appending what they find. Where two find
/// overlapping values, the more specific one keeps it (secrets, emails, PANs, IBANs, then
/// numbers).
pub fn scan(text: &str, set: Builtins, out: &mut Vec<Hit>) {
    let from = out.len();
    find_all(text, set, out);
    let mut kept = from;
    for i in from..out.len() {
        let h = out[i];
        if out[from..kept]
            .iter()
            .all(|k| h.end <= k.start || h.start >= k.end)
        {
            out[kept] = h;
            kept += 1;
        }
    }
    out.truncate(kept);
}

fn find_all(text: &str, set: Builtins, out: &mut Vec<Hit>) {
    let t = text.as_bytes();
    if set.contains(Builtin::Secret) {
        secret::secrets(text, out);
    }
    if set.contains(Builtin::Email) {
        words::emails(t, out);
    }
    if set.contains(Builtin::Pan) {
        words::pans(t, out);
    }
    if set.contains(Builtin::Iban) {
        words::ibans(t, out);
    }
    if set.contains(Builtin::Ip) {
        numbers::ipv6(text, out);
    }
    numbers::runs(t, set, out);
}

#[cfg(test)]
mod tests;
