//! File ids: `file-` and 24 letters and digits from the operating system's random source
//! (like OpenAI's), and the check a client's id passes before it is looked up (the id names
//! the contents' file on disk, so nothing but letters, digits, `-` and `_` gets through).

use crate::StoreError;

/// Every file id starts with this.
pub const PREFIX: &str = "file-";

/// Random characters after the prefix.
const RANDOM_CHARS: usize = 24;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new id.
pub fn new_id() -> Result<String, StoreError> {
    random_id(PREFIX)
}

/// `prefix` and 24 random letters and digits (batches' ids use it too).
pub fn random_id(prefix: &str) -> Result<String, StoreError> {
    let mut id = String::with_capacity(prefix.len() + RANDOM_CHARS);
    id.push_str(prefix);
    let mut buf = [0u8; 64];
    while id.len() < prefix.len() + RANDOM_CHARS {
        getrandom::getrandom(&mut buf)
            .map_err(|e| StoreError::Unavailable(format!("no random source: {e}")))?;
        // 248 = 4 * 62: bytes above it are skipped so every character is equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if id.len() == prefix.len() + RANDOM_CHARS {
                break;
            }
            id.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(id)
}

/// Whether `id` can be a file id: the prefix, then 1 to 64 letters, digits, `-` or `_`.
pub fn is_valid(id: &str) -> bool {
    id.strip_prefix(PREFIX).is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = new_id().expect("id");
        let b = new_id().expect("id");
        assert_ne!(a, b);
        assert_eq!(a.len(), 29);
        assert!(is_valid(&a));
        for bad in ["file-", "file-../x", "file-a/b", "nope-abc", "", "file-a.b"] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(is_valid("file-abc123"));
    }
}
