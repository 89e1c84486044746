//! Virtual key secrets: made from the operating system's random source, shown once, and
//! stored only as their BLAKE3 hash. A secret is 192 random bits, so a fast hash is the
//! right one: there is nothing to brute-force that a slow hash would protect.

use std::time::Duration;

/// Every secret starts with this.
pub const SECRET_PREFIX: &str = "sk-sluice-";

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| format!("no random source: {e}"))?;
    Ok(buf)
}

/// A new key: its secret (shown once), the hash to store, a hint and an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSecret {
    /// `sk-sluice-` and 48 hex digits.
    pub secret: String,
    /// Hex BLAKE3 of `secret`.
    pub hash: String,
    /// `sk-sluice-…` and the last four characters.
    pub hint: String,
    /// `key_` and 16 hex digits.
    pub id: String,
}

/// Makes a new secret.
pub fn new_secret() -> Result<NewSecret, String> {
    let secret = format!("{SECRET_PREFIX}{}", hex(&random::<24>()?));
    Ok(NewSecret {
        hash: hash(&secret),
        hint: hint(&secret),
        id: format!("key_{}", hex(&random::<8>()?)),
        secret,
    })
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    hex(blake3::hash(secret.as_bytes()).as_bytes())
}

/// What identifies a secret to a person without revealing it.
pub fn hint(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{SECRET_PREFIX}…{tail}")
}

/// Compares two secrets in time that depends only on their lengths' hashes (both are
/// hashed first), so a timing probe learns nothing about the master key.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (blake3::hash(a.as_bytes()), blake3::hash(b.as_bytes()));
    // blake3's `Hash` equality is constant-time.
    x == y
}

/// A tag that proves `message` was written by a holder of `secret`, for `context` (a
/// keyed BLAKE3 hash whose key is derived from the secret and the context), as 32 hex
/// digits. Replicas that share the secret read each other's tags.
pub fn tag(secret: &str, context: &str, message: &str) -> String {
    let key = blake3::derive_key(context, secret.as_bytes());
    hex(&blake3::keyed_hash(&key, message.as_bytes()).as_bytes()[..16])
}

/// Parses a duration such as `30s`, `15m`, `24h`, `7d`, `2w` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as `7d`, `24h`, `30m`"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use s, m, h, d or w)"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_depend_on_the_secret_the_context_and_the_message() {
        let t = tag("master", "cursor", "1.2");
        assert_eq!(t.len(), 32);
        assert_eq!(t, tag("master", "cursor", "1.2"));
        assert_ne!(t, tag("other", "cursor", "1.2"));
        assert_ne!(t, tag("master", "other", "1.2"));
        assert_ne!(t, tag("master", "cursor", "1.3"));
    }

    #[test]
    fn secrets_are_unique_hashed_and_hinted() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.id, b.id);
        assert!(a.secret.starts_with(SECRET_PREFIX));
        assert_eq!(a.secret.len(), SECRET_PREFIX.len() + 48);
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret[SECRET_PREFIX.len()..]));
        assert!(a.hint.ends_with(&a.secret[a.secret.len() - 4..]));
        assert!(same_secret(&a.secret, &a.secret.clone()));
        assert!(!same_secret(&a.secret, &b.secret));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("d").is_err());
    }
}
