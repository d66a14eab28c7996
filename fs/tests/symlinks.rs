//! Symlinks: shown and read as links, never followed by the server on the host.
//!
//! The source sits at `tmp/source`, the mountpoint at `tmp/mnt/view` and `tmp/outside.txt` holds
//! "OUTSIDE": a relative link `../outside.txt` means that file on the host but nothing through
//! the mount, where the kernel resolves links in the caller's own tree.

mod common;

#[allow(unsafe_code)]
mod raw {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    pub fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn openat(dir: &OwnedFd, name: &str, flags: i32) -> io::Result<OwnedFd> {
        let c = CString::new(name).unwrap();
        // SAFETY: a valid descriptor and C string.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use common::{View, errno, mount};
use libc::{EACCES, ELOOP, ENOENT};

fn with_outside(rules: &[&str]) -> (View, PathBuf) {
    let v = mount(&["d/", "d/inner.txt", "f.txt"], rules);
    let outside = v.source.parent().unwrap().join("outside.txt");
    fs::write(&outside, "OUTSIDE").unwrap();
    (v, outside)
}

#[test]
fn links_are_shown_as_links() {
    let (v, outside) = with_outside(&["**=write"]);
    symlink("/etc/passwd", v.src("abs")).unwrap();
    symlink("../outside.txt", v.src("rel")).unwrap();
    assert!(fs::read_to_string(v.src("rel")).unwrap() == "OUTSIDE", "the host link does lead outside");
    assert!(fs::symlink_metadata(v.at("abs")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(v.at("abs")).unwrap(), PathBuf::from("/etc/passwd"));
    assert_eq!(fs::read_link(v.at("rel")).unwrap(), PathBuf::from("../outside.txt"));
    assert_eq!(errno(fs::read(v.at("rel"))), ENOENT, "resolved by the caller, beside the mountpoint");
    // A link made through the mount is stored as given and means the same.
    symlink("../outside.txt", v.at("made")).unwrap();
    assert_eq!(fs::read_link(v.src("made")).unwrap(), PathBuf::from("../outside.txt"));
    assert_eq!(errno(fs::read(v.at("made"))), ENOENT);
    symlink(&outside, v.at("made-abs")).unwrap();
    assert_eq!(fs::read_link(v.src("made-abs")).unwrap(), outside);
}

#[test]
fn link_permissions() {
    let (v, _) = with_outside(&["/view-link=view:file", "/read-link=read:file"]);
    for name in ["view-link", "read-link", "hidden-link"] {
        symlink("/etc/passwd", v.src(name)).unwrap();
    }
    assert_eq!(errno(fs::read_link(v.at("view-link"))), EACCES);
    assert_eq!(fs::read_link(v.at("read-link")).unwrap(), PathBuf::from("/etc/passwd"));
    assert_eq!(errno(fs::read_link(v.at("hidden-link"))), ENOENT);
    assert_eq!(errno(fs::symlink_metadata(v.at("hidden-link"))), ENOENT);
}

#[test]
fn a_directory_swapped_for_a_link_is_not_followed() {
    let (v, outside) = with_outside(&["**=write"]);
    // The kernel holds `d` as a directory of ours...
    let dir = raw::open(&v.at("d"), libc::O_PATH | libc::O_DIRECTORY).unwrap();
    // ...while on the host it becomes a link to the directory holding outside.txt.
    fs::rename(v.src("d"), v.src("d.old")).unwrap();
    symlink(outside.parent().unwrap(), v.src("d")).unwrap();
    let looked_up = raw::openat(&dir, "outside.txt", libc::O_RDONLY);
    assert_eq!(errno(looked_up), ELOOP, "the server refused to resolve through the link");
    assert_eq!(errno(raw::openat(&dir, "new.txt", libc::O_CREAT | libc::O_WRONLY)), ELOOP);
    assert_eq!(fs::read_dir(outside.parent().unwrap()).unwrap().count(), 3, "nothing created outside");
}

#[test]
fn a_file_swapped_for_a_link_is_not_opened() {
    let (v, outside) = with_outside(&["**=write"]);
    let file = raw::open(&v.at("f.txt"), libc::O_PATH).unwrap();
    fs::remove_file(v.src("f.txt")).unwrap();
    symlink(&outside, v.src("f.txt")).unwrap();
    // Re-opening our inode makes the server open "f.txt", now a link on the host.
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    assert_eq!(errno(raw::open(&proc_path, libc::O_RDONLY)), ELOOP);
    assert_eq!(errno(raw::open(&proc_path, libc::O_WRONLY)), ELOOP);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "OUTSIDE");
}
