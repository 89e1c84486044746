//! Detectors of numbers written with separators: payment cards, SSNs, Aadhaar numbers,
//! phone numbers and IP addresses. One pass finds each run of digit groups (digits with up
//! to two separators between groups: space, `-`, `.`, `(`, `)`, and a leading `+`) standing
//! alone, then the first kind it is valid as wins, in the order SSN, card, Aadhaar, IPv4,
//! phone.

use crate::checksum::{luhn, verhoeff};
use crate::kind::{bounded, is_word, Builtin, Builtins, Hit};

fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')')
}

/// One run: where it is, its digits, and the separators it used.
struct Run<'a> {
    start: usize,
    end: usize,
    text: &'a [u8],
    digits: Digits,
    plus: bool,
}

/// The digits of a run, on the stack (runs longer than any number detected are cut).
struct Digits {
    buf: [u8; 24],
    len: usize,
}

impl Digits {
    fn push(&mut self, d: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = d;
        }
        self.len += 1;
    }
}

impl std::ops::Deref for Digits {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len.min(self.buf.len())]
    }
}

impl Run<'_> {
    fn seps(&self) -> impl Iterator<Item = u8> + '_ {
        self.text.iter().copied().filter(|&b| is_sep(b))
    }

    /// Groups of digits split by separators.
    fn groups(&self) -> Vec<usize> {
        self.text
            .split(|&b| is_sep(b) || b == b'+')
            .filter(|g| !g.is_empty())
            .map(<[u8]>::len)
            .collect()
    }

    fn only_seps(&self, allowed: &[u8]) -> bool {
        self.seps().all(|b| allowed.contains(&b))
    }
}

pub(super) fn runs(t: &[u8], set: Builtins, out: &mut Vec<Hit>) {
    let wants = [
        Builtin::Ssn,
        Builtin::Card,
        Builtin::Aadhaar,
        Builtin::Ip,
        Builtin::Phone,
    ];
    if !wants.iter().any(|&w| set.contains(w)) {
        return;
    }
    let mut i = 0;
    while i < t.len() {
        // Most of a text is not digits: skip to the next candidate in a tight loop.
        match t[i..]
            .iter()
            .position(|&b| b.is_ascii_digit() || b == b'+' || b == b'(')
        {
            Some(p) => i += p,
            None => break,
        }
        let starts = t[i].is_ascii_digit()
            || (matches!(t[i], b'+' | b'(') && t.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts || (i > 0 && (is_word(t[i - 1]) || t[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let run = read_run(t, i);
        let next = run.end.max(i + 1);
        if let Some(kind) = classify(&run, set) {
            if bounded(t, run.start, run.end) {
                out.push(Hit {
                    start: run.start,
                    end: run.end,
                    kind,
                });
            }
        }
        i = next;
    }
}

/// The run of digit groups starting at `start`.
fn read_run(t: &[u8], start: usize) -> Run<'_> {
    let mut j = start;
    let plus = t[j] == b'+';
    if matches!(t[j], b'+' | b'(') {
        j += 1;
    }
    let mut end = j;
    let mut digits = Digits {
        buf: [0; 24],
        len: 0,
    };
    while j < t.len() && digits.len <= 20 {
        if t[j].is_ascii_digit() {
            digits.push(t[j]);
            j += 1;
            end = j;
            continue;
        }
        // Up to two separators, then a digit (or `(` and a digit).
        let mut k = j;
        while k < t.len() && k - j < 2 && is_sep(t[k]) {
            k += 1;
        }
        if k > j && t.get(k).is_some_and(u8::is_ascii_digit) {
            j = k;
        } else {
            break;
        }
    }
    // A closing parenthesis right after the digits belongs to them (`(555)`).
    Run {
        start,
        end,
        text: &t[start..end],
        digits,
        plus,
    }
}

fn classify(run: &Run<'_>, set: Builtins) -> Option<Builtin> {
    let n = run.digits.len;
    if n < 9 && !(set.contains(Builtin::Ip) && run.text.contains(&b'.')) {
        return None;
    }
    let groups = run.groups();
    if set.contains(Builtin::Ssn) && is_ssn(run, &groups) {
        return Some(Builtin::Ssn);
    }
    if set.contains(Builtin::Card)
        && (13..=19).contains(&n)
        && !run.plus
        && run.only_seps(b" -")
        && (b'3'..=b'6').contains(&run.digits[0])
        && luhn(&run.digits)
    {
        return Some(Builtin::Card);
    }
    if set.contains(Builtin::Aadhaar)
        && n == 12
        && !run.plus
        && (groups == [12] || groups == [4, 4, 4])
        && run.only_seps(b" -")
        && run.digits[0] >= b'2'
        && verhoeff(&run.digits)
    {
        return Some(Builtin::Aadhaar);
    }
    if set.contains(Builtin::Ip) && is_ipv4(run, &groups) {
        return Some(Builtin::Ip);
    }
    let grouped = run.seps().next().is_some();
    if set.contains(Builtin::Phone)
        && (run.plus || grouped)
        && (10..=15).contains(&n)
        && !run.only_seps(b".")
    {
        return Some(Builtin::Phone);
    }
    None
}

/// `AAA-GG-SSSS` (or with spaces): no area 000, 666 or 900-999, no group 00, no serial 0000.
fn is_ssn(run: &Run<'_>, groups: &[usize]) -> bool {
    if groups != [3, 2, 4] || run.plus {
        return false;
    }
    let seps: Vec<u8> = run.seps().collect();
    if !(seps == b"--" || seps == b"  ") {
        return false;
    }
    let d = &run.digits;
    let area = &d[..3];
    area != b"000" && area != b"666" && area[0] != b'9' && &d[3..5] != b"00" && &d[5..] != b"0000"
}

fn is_ipv4(run: &Run<'_>, groups: &[usize]) -> bool {
    groups.len() == 4
        && run.only_seps(b".")
        && std::str::from_utf8(run.text)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
            .is_some()
}

/// IPv6: a run of hex digits, colons (at least two) and dots that parses as one.
pub(super) fn ipv6(text: &str, out: &mut Vec<Hit>) {
    let t = text.as_bytes();
    let is_v6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut from = 0;
    while let Some(c) = memchr::memchr(b':', &t[from..]).map(|c| c + from) {
        let mut start = c;
        while start > 0 && is_v6(t[start - 1]) {
            start -= 1;
        }
        let mut end = c;
        while end < t.len() && is_v6(t[end]) {
            end += 1;
        }
        from = end.max(c + 1);
        let cand = &text[start..end];
        if cand.bytes().filter(|&b| b == b':').count() >= 2
            && bounded(t, start, end)
            && cand.parse::<std::net::Ipv6Addr>().is_ok()
        {
            out.push(Hit {
                start,
                end,
                kind: Builtin::Ip,
            });
        }
    }
}
