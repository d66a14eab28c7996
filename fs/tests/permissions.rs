//! Each permission, for files and directories, through a real mount.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{View, errno, mount};
use libc::{EACCES, ENOENT, EPERM};

const TREE: &[&str] = &[
    "hidden.txt",
    "hidden/",
    "hidden/x",
    "view.txt",
    "view/",
    "view/inner.txt",
    "read.txt",
    "read/",
    "read/r.txt",
    "write.txt",
    "write/",
    "write/w.txt",
];

const RULES: &[&str] = &[
    "/view.txt=view:file",
    "/view=view:directory",
    "/read.txt=read:file",
    "/read=read:directory",
    "/write.txt=write:file",
    "/write=write:directory",
];

fn view() -> View {
    mount(TREE, RULES)
}

#[test]
fn none_is_absent() {
    let v = view();
    assert_eq!(v.list(""), ["read", "read.txt", "view", "view.txt", "write", "write.txt"]);
    for path in ["hidden.txt", "hidden", "hidden/x"] {
        assert_eq!(errno(fs::symlink_metadata(v.at(path))), ENOENT, "stat {path}");
        assert_eq!(errno(common::open_raw(&v.at(path), libc::O_RDONLY)), ENOENT, "open {path}");
        assert_eq!(errno(common::access(&v.at(path), libc::F_OK)), ENOENT, "access {path}");
    }
    assert_eq!(errno(fs::read_dir(v.at("hidden"))), ENOENT);
    // Creating over a hidden path is refused without saying whether it exists.
    assert_eq!(errno(common::open_raw(&v.at("hidden.txt"), libc::O_CREAT | libc::O_WRONLY)), EACCES);
    assert_eq!(errno(fs::create_dir(v.at("hidden"))), EACCES);
    assert_eq!(errno(fs::write(v.at("new.txt"), "x")), EACCES);
    assert_eq!(fs::read_to_string(v.src("hidden.txt")).unwrap(), "hidden.txt");
    assert!(!v.src("new.txt").exists());
}

#[test]
fn view_lists_and_stats_but_does_not_open() {
    let v = view();
    let meta = fs::metadata(v.at("view.txt")).unwrap();
    assert_eq!(meta.len(), "view.txt".len() as u64);
    assert_eq!(meta.mode() & 0o777, 0, "a View file shows no permission bits");
    assert_eq!(v.list("view"), ["inner.txt"]);
    assert!(fs::metadata(v.at("view/inner.txt")).unwrap().is_file());
    for path in ["view.txt", "view/inner.txt"] {
        assert_eq!(errno(fs::read(v.at(path))), EACCES, "read {path}");
        assert_eq!(errno(common::open_raw(&v.at(path), libc::O_WRONLY)), EACCES, "open for writing {path}");
        assert_eq!(errno(common::access(&v.at(path), libc::R_OK)), EACCES, "access R_OK {path}");
        common::access(&v.at(path), libc::F_OK).unwrap();
    }
    common::access(&v.at("view"), libc::R_OK | libc::X_OK).unwrap();
    assert_eq!(errno(common::access(&v.at("view"), libc::W_OK)), EACCES);
    assert_eq!(errno(fs::write(v.at("view/new"), "x")), EACCES);
    // The root is View here (it leads to visible paths): listable, nothing creatable.
    assert_eq!(errno(fs::create_dir(v.at("d"))), EACCES);
}

#[test]
fn read_is_read_only() {
    let v = view();
    assert_eq!(fs::read_to_string(v.at("read.txt")).unwrap(), "read.txt");
    assert_eq!(fs::read_to_string(v.at("read/r.txt")).unwrap(), "read/r.txt");
    assert_eq!(fs::metadata(v.at("read.txt")).unwrap().mode() & 0o222, 0, "no write bits shown");
    assert_eq!(v.list("read"), ["r.txt"]);
    for path in ["read.txt", "read/r.txt"] {
        let p = v.at(path);
        assert_eq!(errno(common::open_raw(&p, libc::O_WRONLY)), EACCES, "O_WRONLY {path}");
        assert_eq!(errno(common::open_raw(&p, libc::O_RDWR)), EACCES, "O_RDWR {path}");
        assert_eq!(errno(common::open_raw(&p, libc::O_WRONLY | libc::O_TRUNC)), EACCES, "O_TRUNC {path}");
        assert_eq!(errno(common::truncate(&p, 0)), EACCES, "truncate {path}");
        assert_eq!(errno(fs::set_permissions(&p, fs::Permissions::from_mode(0o777))), EACCES, "chmod {path}");
        assert_eq!(errno(std::os::unix::fs::chown(&p, Some(1), Some(1))), EACCES, "chown {path}");
        assert_eq!(errno(common::touch_times(&p)), EACCES, "utimens {path}");
        assert_eq!(errno(common::set_xattr(&p)), EACCES, "setxattr {path}");
        assert_eq!(errno(fs::remove_file(&p)), EACCES, "unlink {path}");
        assert_eq!(errno(fs::rename(&p, v.at("read/renamed"))), EACCES, "rename {path}");
        assert_eq!(errno(common::access(&p, libc::W_OK)), EACCES, "access W_OK {path}");
        common::access(&p, libc::R_OK).unwrap();
    }
    assert_eq!(errno(fs::write(v.at("read/new.txt"), "x")), EACCES);
    assert_eq!(errno(fs::create_dir(v.at("read/newdir"))), EACCES);
    assert_eq!(errno(std::os::unix::fs::symlink("r.txt", v.at("read/link"))), EACCES);
    assert_eq!(errno(fs::remove_dir(v.at("read"))), EACCES);
    // Nothing changed underneath.
    assert_eq!(fs::read_to_string(v.src("read/r.txt")).unwrap(), "read/r.txt");
    assert_eq!(fs::read_dir(v.src("read")).unwrap().count(), 1);
}

#[test]
fn write_changes_land_in_the_source() {
    let v = view();
    fs::write(v.at("write.txt"), "changed").unwrap();
    assert_eq!(fs::read_to_string(v.src("write.txt")).unwrap(), "changed");
    fs::write(v.at("write/new.txt"), "new").unwrap();
    assert_eq!(fs::read_to_string(v.src("write/new.txt")).unwrap(), "new");
    fs::create_dir(v.at("write/d")).unwrap();
    fs::rename(v.at("write/new.txt"), v.at("write/d/moved.txt")).unwrap();
    assert_eq!(fs::read_to_string(v.src("write/d/moved.txt")).unwrap(), "new");
    assert_eq!(fs::read_to_string(v.at("write/d/moved.txt")).unwrap(), "new");
    common::truncate(&v.at("write/d/moved.txt"), 1).unwrap();
    assert_eq!(fs::read_to_string(v.src("write/d/moved.txt")).unwrap(), "n");
    fs::set_permissions(v.at("write/w.txt"), fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(v.src("write/w.txt")).unwrap().mode() & 0o7777, 0o751, "no set-id bits");
    std::os::unix::fs::chown(v.at("write/w.txt"), Some(1234), Some(5678)).unwrap();
    assert_eq!(fs::metadata(v.src("write/w.txt")).unwrap().uid(), 1234);
    common::touch_times(&v.at("write/w.txt")).unwrap();
    std::os::unix::fs::symlink("w.txt", v.at("write/link")).unwrap();
    assert_eq!(fs::read_link(v.src("write/link")).unwrap().to_str(), Some("w.txt"));
    assert_eq!(fs::read_link(v.at("write/link")).unwrap().to_str(), Some("w.txt"));
    fs::remove_file(v.at("write/link")).unwrap();
    fs::remove_file(v.at("write/d/moved.txt")).unwrap();
    fs::remove_dir(v.at("write/d")).unwrap();
    assert!(!v.src("write/d").exists());
    assert_eq!(v.list("write"), ["w.txt"]);
    // Renaming a writable directory moves it whole.
    fs::create_dir(v.at("write/a")).unwrap();
    fs::write(v.at("write/a/f"), "f").unwrap();
    fs::rename(v.at("write/a"), v.at("write/b")).unwrap();
    assert_eq!(fs::read_to_string(v.at("write/b/f")).unwrap(), "f");
    assert_eq!(fs::read_to_string(v.src("write/b/f")).unwrap(), "f");
}

#[test]
fn what_is_refused_even_with_write() {
    let v = view();
    assert_eq!(errno(fs::hard_link(v.at("write/w.txt"), v.at("write/hard"))), EPERM);
    assert_eq!(errno(common::mknod_char(&v.at("write/dev"))), EPERM);
    assert!(!v.src("write/hard").exists() && !v.src("write/dev").exists());
    // Renames need Write at both ends.
    assert_eq!(errno(fs::rename(v.at("write/w.txt"), v.at("read/w.txt"))), EACCES);
    assert_eq!(errno(fs::rename(v.at("write/w.txt"), v.at("hidden.txt"))), EACCES);
    assert_eq!(errno(fs::rename(v.at("read/r.txt"), v.at("write/r.txt"))), EACCES);
    assert_eq!(fs::read_to_string(v.src("hidden.txt")).unwrap(), "hidden.txt");
    assert!(v.src("write/w.txt").exists());
}
