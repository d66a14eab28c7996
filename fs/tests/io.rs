//! Plain filesystem behaviour through the view: long listings, large files, open-unlinked files,
//! a second uid.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use common::mount;

#[test]
fn long_listings_are_complete_and_filtered() {
    let names: Vec<String> = (0..700).map(|i| format!("dir/file-{i:04}.txt")).collect();
    let mut tree: Vec<&str> = names.iter().map(String::as_str).collect();
    tree.extend(["dir/", "dir/a.key", "dir/b.key"]);
    let v = mount(&tree, &["**=read", "*.key=none:glob:1"]);
    let listed = v.list("dir");
    assert_eq!(listed.len(), 700);
    assert!(listed.iter().all(|n| n.starts_with("file-")));
    // Inode numbers are ours and stable across lookups.
    let a = fs::metadata(v.at("dir/file-0001.txt")).unwrap().ino();
    assert_eq!(fs::metadata(v.at("dir/file-0001.txt")).unwrap().ino(), a);
    assert_ne!(fs::metadata(v.at("dir/file-0002.txt")).unwrap().ino(), a);
}

#[test]
fn large_files_round_trip() {
    let v = mount(&["w/"], &["/w=write:directory"]);
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let started = Instant::now();
    fs::write(v.at("w/big.bin"), &data).unwrap();
    let back = fs::read(v.at("w/big.bin")).unwrap();
    eprintln!("8 MiB written and read back through the view in {:?}", started.elapsed());
    assert!(back == data, "read back what was written");
    assert!(fs::read(v.src("w/big.bin")).unwrap() == data, "and the source has it");
    // Positioned writes and appends.
    let mut f = fs::OpenOptions::new().read(true).write(true).open(v.at("w/big.bin")).unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"XYZ").unwrap();
    drop(f);
    let mut f = fs::OpenOptions::new().append(true).open(v.at("w/big.bin")).unwrap();
    f.write_all(b"END").unwrap();
    drop(f);
    let src = fs::read(v.src("w/big.bin")).unwrap();
    assert_eq!(&src[10..13], b"XYZ");
    assert_eq!(&src[src.len() - 3..], b"END");
    assert_eq!(src.len(), data.len() + 3);
}

#[test]
fn an_unlinked_open_file_keeps_working() {
    let v = mount(&["w/", "w/f.txt"], &["/w=write:directory"]);
    let mut f = fs::OpenOptions::new().read(true).write(true).open(v.at("w/f.txt")).unwrap();
    fs::remove_file(v.at("w/f.txt")).unwrap();
    assert!(!v.src("w/f.txt").exists());
    f.write_all(b"more").unwrap();
    f.set_len(3).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 3);
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "mor");
    // The name is free again.
    fs::write(v.at("w/f.txt"), "new").unwrap();
    assert_eq!(fs::read_to_string(v.src("w/f.txt")).unwrap(), "new");
}

#[test]
fn files_created_by_another_uid_belong_to_it() {
    let v = mount(&["w/"], &["/w=write:directory"]);
    let path = v.at("w/mine.txt");
    // A child process as uid/gid 4242 (the permission rules, not the uid, decide access).
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo hi > '{}' && mkdir '{}'", path.display(), v.at("w/dir").display()))
        .uid(4242)
        .gid(4242)
        .status()
        .unwrap();
    assert!(status.success());
    for created in ["w/mine.txt", "w/dir"] {
        let meta = fs::metadata(v.src(created)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4242), "{created}");
    }
    assert_eq!(fs::read_to_string(v.src("w/mine.txt")).unwrap(), "hi\n");
}

use std::os::unix::process::CommandExt;
