//! The inode table: our inode numbers and the source-relative paths they stand for.
//!
//! The kernel refers to files by the numbers we hand out in lookups and counts its references
//! (`nlookup`); an entry lives until the kernel forgets as many lookups as it was given. Numbers
//! are never reused, so the generation is always 0. A path maps to at most one live number; when
//! a lookup finds a different host file at a known path (replaced behind our back), the path gets
//! a new number and the old entry is detached. Unlink detaches an entry (open handles keep
//! working on their descriptors), and renames move every entry at or beneath the old path.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use fuser::FileType;

pub(crate) const ROOT: u64 = 1;

#[derive(Debug)]
pub(crate) struct Node {
    /// The path relative to the source; `None` once unlinked or replaced.
    pub path: Option<OsString>,
    pub kind: FileType,
    /// The host file it was looked up as: (st_dev, st_ino).
    pub host: (u64, u64),
    lookups: u64,
}

#[derive(Debug)]
pub(crate) struct Inodes {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<OsString, u64>,
    next: u64,
}

impl Inodes {
    pub(crate) fn new(root_host: (u64, u64)) -> Inodes {
        let root = Node { path: Some(OsString::new()), kind: FileType::Directory, host: root_host, lookups: 1 };
        Inodes { nodes: HashMap::from([(ROOT, root)]), by_path: HashMap::from([(OsString::new(), ROOT)]), next: 2 }
    }

    pub(crate) fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// Counts one lookup of `path`, a `kind` file that is `host` on the host, and returns its number.
    pub(crate) fn remember(&mut self, path: &OsStr, kind: FileType, host: (u64, u64)) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            let node = self.nodes.get_mut(&ino).expect("by_path names live nodes");
            if node.host == host && node.kind == kind {
                node.lookups += 1;
                return ino;
            }
            if ino == ROOT {
                // The source directory itself cannot be replaced under its open descriptor.
                node.lookups += 1;
                return ino;
            }
            node.path = None;
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, Node { path: Some(path.to_owned()), kind, host, lookups: 1 });
        self.by_path.insert(path.to_owned(), ino);
        ino
    }

    /// The number `path` has now, if the kernel knows it.
    pub(crate) fn ino_of(&self, path: &OsStr) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Drops `n` of the kernel's references to `ino`, and the entry with the last one.
    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else { return };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            let node = self.nodes.remove(&ino).expect("present");
            if let Some(path) = node.path
                && self.by_path.get(&path) == Some(&ino)
            {
                self.by_path.remove(&path);
            }
        }
    }

    /// `path` is gone (unlinked, or replaced by a rename onto it).
    pub(crate) fn detach(&mut self, path: &OsStr) {
        if let Some(ino) = self.by_path.remove(path)
            && let Some(node) = self.nodes.get_mut(&ino)
        {
            node.path = None;
        }
    }

    /// `old` (and all beneath it) is now `new`; whatever was at `new` is detached.
    pub(crate) fn rename(&mut self, old: &OsStr, new: &OsStr) {
        self.detach(new);
        let moved: Vec<(OsString, u64)> =
            self.by_path.iter().filter(|(p, _)| beneath_or_at(p, old)).map(|(p, ino)| (p.clone(), *ino)).collect();
        for (path, ino) in moved {
            self.by_path.remove(&path);
            let renamed = rebase(&path, old, new);
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = Some(renamed.clone());
            }
            self.by_path.insert(renamed, ino);
        }
    }

    /// `a` and `b` (and all beneath them) swapped places.
    pub(crate) fn exchange(&mut self, a: &OsStr, b: &OsStr) {
        let moved: Vec<(OsString, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| beneath_or_at(p, a) || beneath_or_at(p, b))
            .map(|(p, ino)| (p.clone(), *ino))
            .collect();
        for (path, _) in &moved {
            self.by_path.remove(path);
        }
        for (path, ino) in moved {
            let renamed = if beneath_or_at(&path, a) { rebase(&path, a, b) } else { rebase(&path, b, a) };
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = Some(renamed.clone());
            }
            self.by_path.insert(renamed, ino);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// Whether `path` is `dir` or beneath it.
fn beneath_or_at(path: &OsStr, dir: &OsStr) -> bool {
    let (p, d) = (path.as_bytes(), dir.as_bytes());
    p.starts_with(d) && (p.len() == d.len() || p[d.len()] == b'/')
}

/// `path` (at or beneath `old`) moved under `new`.
fn rebase(path: &OsStr, old: &OsStr, new: &OsStr) -> OsString {
    let mut out = new.as_bytes().to_vec();
    out.extend_from_slice(&path.as_bytes()[old.len()..]);
    OsString::from(OsStr::from_bytes(&out))
}

/// `parent/name` (just `name` under the root).
pub(crate) fn join(parent: &OsStr, name: &OsStr) -> OsString {
    if parent.is_empty() {
        return name.to_owned();
    }
    let mut out = parent.to_owned();
    out.push("/");
    out.push(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(t: &Inodes, ino: u64) -> Option<&str> {
        t.get(ino).and_then(|n| n.path.as_deref()).and_then(OsStr::to_str)
    }

    #[test]
    fn lookups_and_forgets_balance() {
        let mut t = Inodes::new((1, 1));
        let a = t.remember(OsStr::new("a"), FileType::Directory, (1, 2));
        assert_eq!(t.remember(OsStr::new("a"), FileType::Directory, (1, 2)), a);
        t.forget(a, 1);
        assert_eq!(path(&t, a), Some("a"));
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.ino_of(OsStr::new("a")), None);
        t.forget(ROOT, 100);
        assert!(t.get(ROOT).is_some());
        // A new number after the old one is gone; numbers are not reused.
        assert!(t.remember(OsStr::new("a"), FileType::Directory, (1, 2)) > a);
    }

    #[test]
    fn a_replaced_file_gets_a_new_number() {
        let mut t = Inodes::new((1, 1));
        let old = t.remember(OsStr::new("f"), FileType::RegularFile, (1, 5));
        let new = t.remember(OsStr::new("f"), FileType::Directory, (1, 6));
        assert_ne!(old, new);
        assert_eq!(path(&t, old), None);
        t.forget(old, 1);
        assert_eq!(t.ino_of(OsStr::new("f")), Some(new));
    }

    #[test]
    fn renames_move_subtrees() {
        let mut t = Inodes::new((1, 1));
        let d = t.remember(OsStr::new("d"), FileType::Directory, (1, 2));
        let f = t.remember(OsStr::new("d/f"), FileType::RegularFile, (1, 3));
        let other = t.remember(OsStr::new("dx"), FileType::RegularFile, (1, 4));
        let target = t.remember(OsStr::new("e"), FileType::Directory, (1, 5));
        t.rename(OsStr::new("d"), OsStr::new("e"));
        assert_eq!((path(&t, d), path(&t, f), path(&t, other)), (Some("e"), Some("e/f"), Some("dx")));
        assert_eq!(path(&t, target), None);
        t.exchange(OsStr::new("e"), OsStr::new("dx"));
        assert_eq!((path(&t, d), path(&t, f), path(&t, other)), (Some("dx"), Some("dx/f"), Some("e")));
        t.detach(OsStr::new("dx/f"));
        assert_eq!(path(&t, f), None);
        for ino in [d, f, other, target] {
            t.forget(ino, 1);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(join(OsStr::new(""), OsStr::new("a")), "a");
        assert_eq!(join(OsStr::new("a"), OsStr::new("b")), "a/b");
    }
}
