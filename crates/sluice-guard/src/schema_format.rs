//! The `format`s a JSON Schema validation checks cheaply: `date-time`, `date`, `time`
//! (RFC 3339), `email`, `uuid`, `ipv4`, `ipv6`. Any other format passes.

/// Whether `s` is a valid `format`.
pub fn is_valid(format: &str, s: &str) -> bool {
    match format {
        "date-time" => s
            .split_once(['T', 't'])
            .is_some_and(|(d, t)| date(d) && time(t)),
        "date" => date(s),
        "time" => time(s),
        "email" => email(s),
        "uuid" => uuid(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

/// `n` ASCII digits' value, when `s` is exactly that.
fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD`, a real date.
fn date(s: &str) -> bool {
    let mut p = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (p.next(), p.next(), p.next(), p.next()) else {
        return false;
    };
    let (Some(y), Some(m), Some(d)) = (digits(y, 4), digits(m, 2), digits(d, 2)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// `HH:MM:SS[.frac](Z|±HH:MM)`.
fn time(s: &str) -> bool {
    let (clock, offset) = if let Some(c) = s.strip_suffix(['Z', 'z']) {
        (c, None)
    } else {
        match s.rfind(['+', '-']) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => return false,
        }
    };
    if let Some(o) = offset {
        let ok = o.split_once(':').is_some_and(|(h, m)| {
            digits(h, 2).is_some_and(|h| h < 24) && digits(m, 2).is_some_and(|m| m < 60)
        });
        if !ok {
            return false;
        }
    }
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let mut p = hms.split(':');
    match (p.next(), p.next(), p.next(), p.next()) {
        (Some(h), Some(m), Some(sec), None) => {
            digits(h, 2).is_some_and(|h| h < 24)
                && digits(m, 2).is_some_and(|m| m < 60)
                && digits(sec, 2).is_some_and(|s| s <= 60)
        }
        _ => false,
    }
}

/// `local@domain.tld`, no spaces.
fn email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// `8-4-4-4-12` hex digits.
fn uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
