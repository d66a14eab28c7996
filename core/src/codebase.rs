//! Codebases: a project uploaded once and shown to many sandboxes, each through its own path
//! rules and writing to its own copy-on-write layer.
//!
//! The record (`codebases/{tenant}/{id}` in the state store) is small: name, labels, counts and
//! the digest of the [`Manifest`], the file list, which lives in object storage next to the
//! files' contents (both content-addressed, so identical files across codebases are stored once).
//! Paths inside a codebase are relative, '/'-separated and checked by [`check_path`] wherever they
//! enter: the client before uploading, the coordinator on upload, the agent before writing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{CodebaseId, TenantId};
use crate::permissions::PermissionRule;

/// Longest path inside a codebase, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path segment, in bytes (the kernel's NAME_MAX).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// `codebases/{tenant}/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodebaseRecord {
    pub v: u32,
    pub id: CodebaseId,
    pub tenant: TenantId,
    pub name: String,
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    /// Digest (hex) of the manifest blob; `None` before the first upload (an empty codebase).
    pub manifest: Option<String>,
    pub file_count: u64,
    pub size_bytes: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What kind of entry a manifest path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One path of a codebase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits only (≤ 0o777).
    pub mode: u32,
    /// Bytes of a file; 0 otherwise.
    pub size: u64,
    /// BLAKE3 (hex) of a file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A symlink's target (relative, inside the tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The file list of a codebase, stored as a blob named by its digest. Every file's parent
/// directories are implied (and listed when they were uploaded, e.g. empty ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub v: u32,
    pub entries: BTreeMap<String, Entry>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("manifest does not decode: {e}"))?;
        for (path, entry) in &m.entries {
            check_path(path)?;
            if let Some(target) = &entry.target {
                check_link_target(path, target)?;
            }
            if entry.kind == EntryKind::File && entry.digest.is_none() {
                return Err(format!("manifest file {path:?} has no digest"));
            }
        }
        Ok(m)
    }

    /// Files' count and total size.
    pub fn totals(&self) -> (u64, u64) {
        let files = self.entries.values().filter(|e| e.kind == EntryKind::File);
        files.fold((0, 0), |(n, b), e| (n + 1, b + e.size))
    }
}

/// Refuses a path that is not relative, normalized and of sane length: absolute, `..`, `.`,
/// empty segments, NUL, over-long.
pub fn check_path(path: &str) -> Result<(), String> {
    let shown: String = path.chars().take(120).collect();
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("path {shown:?}… is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!("path {shown:?} is absolute; paths are relative to the codebase root"));
    }
    if path.contains('\0') {
        return Err(format!("path {shown:?} contains a NUL byte"));
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err(format!("path {shown:?} has an empty segment")),
            "." | ".." => return Err(format!("path {shown:?} has a {seg:?} segment (traversal)")),
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(format!("path {shown:?} has a segment longer than {MAX_SEGMENT_BYTES} bytes"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a symlink target that is absolute or that leaves the tree, resolved lexically from
/// the link's directory.
pub fn check_link_target(link: &str, target: &str) -> Result<(), String> {
    if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains('\0') {
        return Err(format!("symlink {link:?}: target is empty, too long or contains NUL"));
    }
    if target.starts_with('/') {
        return Err(format!("symlink {link:?} -> {target:?} is absolute: it would leave the tree"));
    }
    let mut depth: Vec<&str> = link.split('/').collect();
    depth.pop();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return Err(format!("symlink {link:?} -> {target:?} leaves the tree"));
                }
            }
            s => depth.push(s),
        }
    }
    Ok(())
}

/// A codebase as one sandbox sees it: sent to the agent in the sandbox's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodebaseMount {
    pub id: CodebaseId,
    /// Digest (hex) of the manifest the sandbox sees: later uploads do not change a live sandbox.
    pub manifest: String,
    /// Where it appears inside the sandbox (absolute).
    pub path: String,
    /// The preset asked for, for display; its rules are already in `rules`.
    #[serde(default)]
    pub preset: String,
    /// The user's extra rules, for display.
    #[serde(default)]
    pub extra: Vec<PermissionRule>,
    /// The rules in force: the preset's expanded, then the extras.
    pub rules: Vec<PermissionRule>,
}

/// How a sandbox's layer changed a path of its codebase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One changed path, relative to the codebase root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
    pub entry: EntryKind,
    /// Size after the change (0 for deletions and directories).
    pub size: u64,
}

/// Most changes a diff lists.
pub const MAX_CHANGES: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_and_normalized() {
        for ok in ["a", "a/b.txt", ".env", "a/.git/config", "..a", "a..b/c"] {
            check_path(ok).unwrap();
        }
        for bad in ["", "/a", "a//b", "a/", "./a", "a/../b", "..", "a/\0", &"x".repeat(300)] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn link_targets_stay_inside() {
        check_link_target("a/b/link", "../c").unwrap();
        check_link_target("a/link", "b/../c").unwrap();
        check_link_target("link", "a/b").unwrap();
        assert!(check_link_target("link", "../x").is_err());
        assert!(check_link_target("a/link", "../../x").is_err());
        assert!(check_link_target("a/link", "/etc/passwd").is_err());
        assert!(check_link_target("a/link", "b/../../../x").is_err());
    }

    #[test]
    fn manifests_round_trip_and_refuse_bad_paths() {
        let mut m = Manifest { v: 1, ..Default::default() };
        let e = Entry { kind: EntryKind::File, mode: 0o644, size: 3, digest: Some("ab".into()), target: None };
        m.entries.insert("a/b".into(), e);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert_eq!(m.totals(), (1, 3));
        let bad = br#"{"v":1,"entries":{"../x":{"kind":"file","mode":420,"size":1,"digest":"ab"}}}"#;
        assert!(Manifest::decode(bad).unwrap_err().contains("traversal"));
    }
}
