//! Detectors of values made of letters and digits: email addresses, PANs, IBANs.

use crate::checksum::iban_mod97;
use crate::kind::{bounded, Builtin, Hit};

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// `local@domain.tld`: a local part, a domain with a dot, a top-level label of two or more
/// letters.
pub(super) fn emails(t: &[u8], out: &mut Vec<Hit>) {
    let mut after = 0;
    for at in memchr::memchr_iter(b'@', t) {
        if at < after {
            continue;
        }
        let mut start = at;
        while start > 0 && is_local(t[start - 1]) {
            start -= 1;
        }
        while start < at && t[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < t.len() && is_domain(t[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(t[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start == at || end == at + 1 {
            continue;
        }
        let domain = &t[at + 1..end];
        let Some(dot) = domain.iter().rposition(|&b| b == b'.') else {
            continue;
        };
        let tld = &domain[dot + 1..];
        if dot == 0 || tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
            continue;
        }
        out.push(Hit {
            start,
            end,
            kind: Builtin::Email,
        });
        after = end;
    }
}

/// An Indian PAN: five capitals (the fourth the holder's type), four digits, a capital.
pub(super) fn pans(t: &[u8], out: &mut Vec<Hit>) {
    if t.len() < 10 {
        return;
    }
    let mut i = 0;
    while i + 10 <= t.len() {
        // Skip to the next run of five capitals.
        match t[i..t.len() - 5]
            .windows(5)
            .position(|w| w.iter().all(u8::is_ascii_uppercase))
        {
            Some(p) => i += p,
            None => return,
        }
        let w = &t[i..i + 10];
        let shape = w[..5].iter().all(u8::is_ascii_uppercase)
            && w[5..9].iter().all(u8::is_ascii_digit)
            && w[9].is_ascii_uppercase();
        if shape && b"ABCFGHLJPT".contains(&w[3]) && bounded(t, i, i + 10) {
            out.push(Hit {
                start: i,
                end: i + 10,
                kind: Builtin::Pan,
            });
            i += 10;
        } else {
            i += 1;
        }
    }
}

/// An IBAN: a country code, two check digits, 11 to 30 letters and digits (in groups of
/// four with single spaces, or not), mod-97 valid.
pub(super) fn ibans(t: &[u8], out: &mut Vec<Hit>) {
    let mut i = 0;
    while i + 15 <= t.len() {
        // Skip to the next two capitals followed by two digits.
        match t[i..].windows(4).position(|w| {
            w[2].is_ascii_digit()
                && w[3].is_ascii_digit()
                && w[0].is_ascii_uppercase()
                && w[1].is_ascii_uppercase()
        }) {
            Some(p) => i += p,
            None => return,
        }
        if i + 15 > t.len() {
            return;
        }
        let head = t[i].is_ascii_uppercase()
            && t[i + 1].is_ascii_uppercase()
            && t[i + 2].is_ascii_digit()
            && t[i + 3].is_ascii_digit()
            && (i == 0 || !crate::kind::is_word(t[i - 1]));
        if !head {
            i += 1;
            continue;
        }
        let mut chars = Vec::with_capacity(34);
        let mut end = i;
        let mut j = i;
        while j < t.len() && chars.len() < 34 {
            let b = t[j];
            if b.is_ascii_digit() || b.is_ascii_uppercase() {
                chars.push(b);
                end = j + 1;
                j += 1;
            } else if b == b' ' && t.get(j + 1).is_some_and(|n| n.is_ascii_alphanumeric()) {
                j += 1;
            } else {
                break;
            }
        }
        if (15..=34).contains(&chars.len()) && bounded(t, i, end) && iban_mod97(&chars) {
            out.push(Hit {
                start: i,
                end,
                kind: Builtin::Iban,
            });
            i = end;
        } else {
            i += 1;
        }
    }
}
