//! Blob keys: what a valid key is, and its `object_store` path.

use object_store::path::Path;

use crate::BlobError;

/// Longest key, in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks `key` and returns its `object_store` path.
///
/// A key is `/`-separated segments of `[A-Za-z0-9._-]`: no leading or trailing `/`, no empty
/// segment, no `.` or `..` segment, at most [`MAX_KEY_BYTES`] bytes. The same rules hold on every
/// backend, so a key that works in tests works on S3 and on disk.
pub fn check_key(key: &str) -> Result<Path, BlobError> {
    match problem(key) {
        Some(why) => Err(BlobError::Invalid(format!("key {key:?}: {why}"))),
        None => Path::parse(key).map_err(|e| BlobError::Invalid(format!("key {key:?}: {e}"))),
    }
}

/// Checks a listing prefix: empty (everything) or a valid key, with one trailing `/` allowed.
/// Listing is by whole segments: prefix `a/b` covers `a/b/c`, not `a/bc`.
pub(crate) fn check_prefix(prefix: &str) -> Result<Option<Path>, BlobError> {
    if prefix.is_empty() {
        return Ok(None);
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    match problem(trimmed) {
        Some(why) => Err(BlobError::Invalid(format!("prefix {prefix:?}: {why}"))),
        None => Path::parse(trimmed).map(Some).map_err(|e| BlobError::Invalid(format!("prefix {prefix:?}: {e}"))),
    }
}

/// Why `key` is not a valid key, if it is not.
fn problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Some(format!("longer than {MAX_KEY_BYTES} bytes"));
    }
    if key.starts_with('/') {
        return Some("starts with '/'".into());
    }
    if let Some(c) = key.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))) {
        return Some(format!("contains {c:?} (allowed: A-Z a-z 0-9 . _ - /)"));
    }
    key.split('/').find_map(|segment| match segment {
        "" => Some("has an empty segment".to_owned()),
        "." | ".." => Some(format!("has a {segment:?} segment")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_keys_pass() {
        for key in ["a", "a/b", "chunks/ab/abcdef", "x-y_z.1/2", "..a", "a.."] {
            assert_eq!(check_key(key).expect(key).as_ref(), key);
        }
    }

    #[test]
    fn bad_keys_name_themselves() {
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        for key in ["", "/a", "a/", "a//b", "a/../b", "..", "./a", "a b", "a\\b", "é", "a?b", "a%2Fb", &long] {
            match check_key(key) {
                Err(BlobError::Invalid(msg)) => assert!(msg.contains(&format!("{key:?}")), "{msg}"),
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("").expect("empty").is_none());
        assert!(check_prefix("/").is_err());
        assert_eq!(check_prefix("a/b/").expect("trailing slash").expect("some").as_ref(), "a/b");
        assert!(check_prefix("a//").is_err());
        assert!(check_prefix("../x").is_err());
    }
}
