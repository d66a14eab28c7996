//! A temporary source tree mounted through a real `ViewMount` (needs root and /dev/fuse).
#![allow(dead_code, unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use corral_core::permissions::{PermissionRule, Rules};
use corral_fs::ViewMount;

pub struct View {
    pub source: PathBuf,
    pub mnt: PathBuf,
    pub view: Option<ViewMount>,
    _dir: tempfile::TempDir,
}

/// Creates `tree` (paths ending in `/` are directories, others files holding their own path)
/// and mounts it through `rules` (CLI form).
pub fn mount(tree: &[&str], rules: &[&str]) -> View {
    let rules: Vec<PermissionRule> = rules.iter().map(|r| PermissionRule::parse_cli(r).unwrap()).collect();
    mount_rules(tree, &rules)
}

pub fn mount_rules(tree: &[&str], rules: &[PermissionRule]) -> View {
    mount_over(tree, rules, &[])
}

/// As [`mount_rules`], with files `base` (holding "BASE") in the mountpoint directory beneath
/// the mount.
pub fn mount_over(tree: &[&str], rules: &[PermissionRule], base: &[&str]) -> View {
    assert!(Path::new("/dev/fuse").exists(), "these tests need /dev/fuse (and root): it is missing");
    let dir = tempfile::tempdir().unwrap();
    // The mountpoint one level deeper than the source, so `../x` means different files in each.
    let source = dir.path().join("source");
    let mnt = dir.path().join("mnt").join("view");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    for entry in tree {
        let path = source.join(entry.trim_end_matches('/'));
        if entry.ends_with('/') {
            std::fs::create_dir_all(&path).unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, entry.as_bytes()).unwrap();
        }
    }
    for name in base {
        std::fs::write(mnt.join(name), "BASE").unwrap();
    }
    let rules = Rules::compile(rules).unwrap();
    let server = Path::new(env!("CARGO_BIN_EXE_corral-fs"));
    let view = ViewMount::start(server, &source, &mnt, &rules).expect("mount the view");
    View { source, mnt, view: Some(view), _dir: dir }
}

impl View {
    pub fn at(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn src(&self, rel: &str) -> PathBuf {
        self.source.join(rel)
    }

    pub fn view(&self) -> &ViewMount {
        self.view.as_ref().unwrap()
    }

    /// The names `read_dir` lists at `rel`, sorted.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.at(rel))
            .unwrap_or_else(|e| panic!("read_dir {rel}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(view) = self.view.take() {
            view.stop();
        }
    }
}

/// The errno of a failed result (panics on success).
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

/// `open(2)` with raw flags; the descriptor is closed again.
pub fn open_raw(path: &Path, flags: i32) -> io::Result<()> {
    let c = cpath(path);
    // SAFETY: a valid C string.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) })?;
    // SAFETY: our own fresh descriptor.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `access(2)`.
pub fn access(path: &Path, mode: i32) -> io::Result<()> {
    // SAFETY: a valid C string.
    check(unsafe { libc::access(cpath(path).as_ptr(), mode) }).map(drop)
}

/// `truncate(2)`.
pub fn truncate(path: &Path, size: i64) -> io::Result<()> {
    // SAFETY: a valid C string.
    check(unsafe { libc::truncate(cpath(path).as_ptr(), size) }).map(drop)
}

/// `utimensat(2)` to now.
pub fn touch_times(path: &Path) -> io::Result<()> {
    // SAFETY: a valid C string; null times mean now.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, cpath(path).as_ptr(), std::ptr::null(), 0) }).map(drop)
}

/// `setxattr(2)` of `user.test`.
pub fn set_xattr(path: &Path) -> io::Result<()> {
    // SAFETY: valid C strings and a value of the length passed.
    check(unsafe { libc::setxattr(cpath(path).as_ptr(), c"user.test".as_ptr(), b"1".as_ptr().cast(), 1, 0) }).map(drop)
}

/// `mknod(2)` of a character device (0:0, the "null" major/minor would do the same).
pub fn mknod_char(path: &Path) -> io::Result<()> {
    // SAFETY: a valid C string.
    check(unsafe { libc::mknod(cpath(path).as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) }).map(drop)
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hung FUSE request
/// would otherwise hang the test).
pub fn within<T: Send + 'static>(limit: std::time::Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("within".into()).spawn(move || tx.send(f())).unwrap();
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("blocked for more than {limit:?}"))
}

/// Whether `path` is a mount point in this process's mount table.
pub fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_str().unwrap();
    table.lines().any(|line| line.split(' ').nth(4) == Some(wanted))
}
