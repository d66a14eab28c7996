//! What a sandbox changed in its codebase, read from its overlay's upper layer: files there are
//! added (absent below) or modified; whiteouts (0/0 character devices) are deletions; an opaque
//! directory hides everything below it; a new or renamed (redirected) directory is reported with
//! all it holds, as seen in the merged tree.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use corral_core::codebase::{Change, ChangeKind, EntryKind, MAX_CHANGES};

/// The layer's three trees.
pub struct Trees<'a> {
    pub upper: &'a Path,
    pub lower: &'a Path,
    pub merged: &'a Path,
}

/// The changes, in path order, and whether there were more than [`MAX_CHANGES`].
pub fn diff(trees: &Trees<'_>) -> io::Result<(Vec<Change>, bool)> {
    let mut out = Vec::new();
    walk(trees, "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let truncated = out.len() > MAX_CHANGES;
    out.truncate(MAX_CHANGES);
    Ok((out, truncated))
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") }
}

fn kind_of(m: &std::fs::Metadata) -> EntryKind {
    if m.is_dir() {
        EntryKind::Dir
    } else if m.file_type().is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::File
    }
}

fn change(path: String, kind: ChangeKind, m: Option<&std::fs::Metadata>) -> Change {
    let entry = m.map_or(EntryKind::File, kind_of);
    let size = match (kind, m) {
        (ChangeKind::Deleted, _) | (_, None) => 0,
        (_, Some(m)) if m.is_file() => m.len(),
        _ => 0,
    };
    Change { path, kind, entry, size }
}

fn walk(t: &Trees<'_>, rel: &str, out: &mut Vec<Change>) -> io::Result<()> {
    if out.len() > MAX_CHANGES {
        return Ok(());
    }
    let dir = t.upper.join(rel);
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in &names {
        let path = join(rel, name);
        let up = std::fs::symlink_metadata(t.upper.join(&path))?;
        let below = std::fs::symlink_metadata(t.lower.join(&path)).ok();
        if up.file_type().is_char_device() && up.rdev() == 0 {
            if below.is_some() {
                out.push(change(path, ChangeKind::Deleted, below.as_ref()));
            }
            continue;
        }
        if !up.is_dir() {
            let kind = if below.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
            out.push(change(path, kind, Some(&up)));
            continue;
        }
        let upper_path = t.upper.join(&path);
        let redirected = xattr(&upper_path, "trusted.overlay.redirect").is_some();
        match below {
            Some(b) if b.is_dir() && !redirected => {
                if xattr(&upper_path, "trusted.overlay.opaque").as_deref() == Some(b"y") {
                    deleted_below(t, &path, out)?;
                }
                walk(t, &path, out)?;
            }
            _ => {
                if below.is_some() {
                    out.push(change(path.clone(), ChangeKind::Modified, Some(&up)));
                } else {
                    out.push(change(path.clone(), ChangeKind::Added, Some(&up)));
                }
                all_added(t, &path, out)?;
            }
        }
    }
    Ok(())
}

/// An opaque directory: what lay below it and is not in the upper layer is gone.
fn deleted_below(t: &Trees<'_>, rel: &str, out: &mut Vec<Change>) -> io::Result<()> {
    for entry in std::fs::read_dir(t.lower.join(rel))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let path = join(rel, &name);
        if std::fs::symlink_metadata(t.upper.join(&path)).is_err() {
            let m = std::fs::symlink_metadata(t.lower.join(&path)).ok();
            out.push(change(path, ChangeKind::Deleted, m.as_ref()));
        }
    }
    Ok(())
}

/// Everything under a new (or moved) directory, as the sandbox sees it.
fn all_added(t: &Trees<'_>, rel: &str, out: &mut Vec<Change>) -> io::Result<()> {
    for entry in std::fs::read_dir(t.merged.join(rel))? {
        if out.len() > MAX_CHANGES {
            return Ok(());
        }
        let name = entry?.file_name().to_string_lossy().into_owned();
        let path = join(rel, &name);
        let m = std::fs::symlink_metadata(t.merged.join(&path))?;
        let is_dir = m.is_dir();
        out.push(change(path.clone(), ChangeKind::Added, Some(&m)));
        if is_dir {
            all_added(t, &path, out)?;
        }
    }
    Ok(())
}

/// An extended attribute of `path` (not following symlinks), if set.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and live across the call; the buffer is writable
    // for its whole length, which is what we pass.
    #[allow(unsafe_code)]
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}
