//! The rules applied to filesystem operations: which errno a refusal answers, how a path's
//! permission shows in its mode bits, and what a directory rename must be allowed to move.
//!
//! - A hidden (`None`) path answers ENOENT, as if it did not exist; a visible one without enough
//!   permission answers EACCES.
//! - A new path (create, mkdir, mknod, symlink, a rename's destination) needs `Write` for itself
//!   and answers EACCES otherwise, whether or not something hidden is already there.
//! - A rename moves every path beneath a directory too, so it needs `Write` at the old and the
//!   new place of each of them; more than [`MAX_MOVE_ENTRIES`] answers EXDEV (`mv` then copies
//!   and deletes file by file, each checked on its own).

use std::ffi::OsStr;

use corral_core::permissions::{PatternType, Permission, Rules};
use fuser::{Errno, FileType};

use crate::host::Host;
use crate::inodes::join;

/// The most entries a directory rename checks before answering EXDEV.
pub(crate) const MAX_MOVE_ENTRIES: usize = 10_000;

pub(crate) struct Access {
    rules: Rules,
    /// Every path is `Write` (all rules grant it and one is `**`), as under `full-access`:
    /// renames need no walk.
    all_writable: bool,
}

impl Access {
    pub(crate) fn new(rules: Rules) -> Access {
        let list = rules.rules();
        let all_writable = list.iter().all(|r| r.permission == Permission::Write)
            && list.iter().any(|r| r.kind == PatternType::Glob && matches!(r.pattern.as_str(), "**" | "/**"));
        Access { rules, all_writable }
    }

    /// The permission of `path`. Names that are not UTF-8 are judged by their lossy form.
    pub(crate) fn perm(&self, path: &OsStr, is_dir: bool) -> Permission {
        self.rules.eval(&path.to_string_lossy(), is_dir)
    }

    /// Whether `path` could be visible as a file or as a directory (checked before touching the
    /// host, so a hidden path costs no system call).
    pub(crate) fn maybe_visible(&self, path: &OsStr) -> bool {
        self.perm(path, false) > Permission::None || self.perm(path, true) > Permission::None
    }

    /// `path`'s permission if it is at least `need`; ENOENT when hidden, EACCES when too low.
    pub(crate) fn require(&self, path: &OsStr, is_dir: bool, need: Permission) -> Result<Permission, Errno> {
        match self.perm(path, is_dir) {
            Permission::None => Err(Errno::ENOENT),
            p if p < need => Err(Errno::EACCES),
            p => Ok(p),
        }
    }

    /// A path about to be created (or replaced) needs `Write`; EACCES otherwise.
    pub(crate) fn require_new(&self, path: &OsStr, is_dir: bool) -> Result<(), Errno> {
        if self.perm(path, is_dir) == Permission::Write { Ok(()) } else { Err(Errno::EACCES) }
    }

    /// Checks that renaming the directory `old` to `new` may move everything beneath it: each
    /// entry needs `Write` at its old and its new path.
    pub(crate) fn check_move(&self, host: &Host, old: &OsStr, new: &OsStr) -> Result<(), Errno> {
        if self.all_writable {
            return Ok(());
        }
        let mut pending = vec![OsStr::new("").to_owned()];
        let mut seen = 0;
        while let Some(rel) = pending.pop() {
            let dir = join_rel(old, &rel);
            for entry in host.read_dir(&dir).map_err(Errno::from)? {
                seen += 1;
                if seen > MAX_MOVE_ENTRIES {
                    return Err(Errno::EXDEV);
                }
                let rel = join_rel(&rel, &entry.name);
                let is_dir = match entry.d_type {
                    libc::DT_DIR => true,
                    libc::DT_UNKNOWN => {
                        let st = host.lstat(&join(old, &rel)).map_err(Errno::from)?;
                        st.st_mode & libc::S_IFMT == libc::S_IFDIR
                    }
                    _ => false,
                };
                for path in [join(old, &rel), join(new, &rel)] {
                    if self.perm(&path, is_dir) != Permission::Write {
                        return Err(Errno::EACCES);
                    }
                }
                if is_dir {
                    pending.push(rel);
                }
            }
        }
        Ok(())
    }
}

/// `base/rel`, or `base` when `rel` is empty.
fn join_rel(base: &OsStr, rel: &OsStr) -> std::ffi::OsString {
    if rel.is_empty() { base.to_owned() } else { join(base, rel) }
}

/// The mode bits shown for a file of `kind` with permission `perm`: no write bits below `Write`,
/// and none at all for a `View` file (whose contents cannot be opened). Set-id bits are dropped
/// unless the path is writable.
pub(crate) fn shown_mode(mode: u32, kind: FileType, perm: Permission) -> u16 {
    let mut bits = mode & 0o7777;
    if perm < Permission::Write {
        bits &= !0o6222;
    }
    if perm == Permission::View && kind != FileType::Directory {
        bits = 0;
    }
    bits as u16
}

#[cfg(test)]
mod tests {
    use corral_core::permissions::Preset;

    use super::*;

    #[test]
    fn modes_follow_permissions() {
        assert_eq!(shown_mode(0o100755, FileType::RegularFile, Permission::Write), 0o755);
        assert_eq!(shown_mode(0o104755, FileType::RegularFile, Permission::Read), 0o555);
        assert_eq!(shown_mode(0o100644, FileType::RegularFile, Permission::View), 0);
        assert_eq!(shown_mode(0o40755, FileType::Directory, Permission::View), 0o555);
    }

    #[test]
    fn refusals_choose_their_errno() {
        let rules = Rules::compile(&[
            corral_core::permissions::PermissionRule::parse_cli("r/**=read").unwrap(),
            corral_core::permissions::PermissionRule::parse_cli("w/**=write").unwrap(),
        ])
        .unwrap();
        let a = Access::new(rules);
        assert_eq!(a.require(OsStr::new("h"), false, Permission::View), Err(Errno::ENOENT));
        assert_eq!(a.require(OsStr::new("r/x"), false, Permission::Write), Err(Errno::EACCES));
        assert_eq!(a.require(OsStr::new("r/x"), false, Permission::Read), Ok(Permission::Read));
        assert_eq!(a.require_new(OsStr::new("h"), false), Err(Errno::EACCES));
        assert_eq!(a.require_new(OsStr::new("w/x"), false), Ok(()));
        assert!(a.maybe_visible(OsStr::new("r")));
        assert!(!a.maybe_visible(OsStr::new("h")));
        assert!(!a.all_writable);
    }

    #[test]
    fn full_access_skips_the_rename_walk() {
        let compile = |p: Preset| Access::new(Rules::compile(&p.rules()).unwrap());
        assert!(compile(Preset::FullAccess).all_writable);
        assert!(!compile(Preset::Development).all_writable);
    }
}
