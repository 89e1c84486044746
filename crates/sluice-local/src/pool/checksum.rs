//! SHA-256 checks of model files.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{PoolError, PoolErrorKind};

/// Bytes read per step while hashing a model file.
const HASH_CHUNK: usize = 1 << 20;

/// Streams `path` through SHA-256 and compares it with `expected` (hex, optionally prefixed
/// `sha256:` or `sha256-`, any case).
pub fn verify_sha256(name: &str, path: &Path, expected: &str) -> Result<(), PoolError> {
    let expected = normalize_sha256(expected).ok_or_else(|| PoolErrorKind::InvalidSpec {
        name: name.to_owned(),
        reason: format!("`sha256` must be 64 hex digits, got `{expected}`"),
    })?;
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(PoolErrorKind::ChecksumMismatch {
            path: path.to_path_buf(),
            expected,
            actual,
        }
        .into());
    }
    Ok(())
}

/// The lowercase hex SHA-256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String, PoolError> {
    let io = |source| PoolErrorKind::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_CHUNK];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e).into()),
        };
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

fn normalize_sha256(text: &str) -> Option<String> {
    let text = text.trim();
    let hex = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("sha256-"))
        .unwrap_or(text);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}
