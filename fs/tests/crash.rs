//! A dead server: the mount answers EIO and never shows what lies beneath; stopping unmounts.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{View, errno, is_mounted, mount, mount_over, within};
use corral_core::permissions::{PermissionRule, Rules};
use corral_fs::ViewMount;
use libc::EIO;

const LIMIT: Duration = Duration::from_secs(10);

fn signal(view: &ViewMount, signal: libc::c_int) {
    // SAFETY: kill takes plain integers.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(view.server_pid() as libc::pid_t, signal) };
    assert_eq!(r, 0, "signal {signal} to the server");
}

fn kill_server(v: &View) {
    signal(v.view(), libc::SIGKILL);
    let deadline = Instant::now() + LIMIT;
    while !v.view().failed() {
        assert!(Instant::now() < deadline, "failed() never turned true");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_killed_server_leaves_a_mount_that_answers_eio() {
    let rules = [PermissionRule::parse_cli("**=write").unwrap()];
    let v = mount_over(&["a.txt", "d/", "d/b.txt", "never.txt"], &rules, &["base.txt"]);
    assert_eq!(fs::read_to_string(v.at("a.txt")).unwrap(), "a.txt");
    assert_eq!(errno(fs::read(v.at("base.txt"))), libc::ENOENT);
    assert!(!v.view().failed());
    kill_server(&v);
    let mnt = v.mnt.clone();
    within(LIMIT, move || {
        let at = |p: &str| mnt.join(p);
        assert_eq!(errno(fs::symlink_metadata(at("never.txt"))), EIO, "stat of a new name");
        assert_eq!(errno(fs::read(at("base.txt"))), EIO, "what lies beneath the mount");
        assert_eq!(errno(fs::read_dir(&mnt)), EIO, "read_dir");
        assert_eq!(errno(fs::read(at("a.txt"))), EIO, "open of a cached name");
        assert_eq!(errno(fs::write(at("new.txt"), "x")), EIO, "create");
        assert_eq!(errno(fs::read_dir(at("d"))), EIO, "read_dir of a subdirectory");
        // Once the kernel's 1 s caches expire, cached names answer EIO too.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(errno(fs::metadata(at("a.txt"))), EIO, "stat of a cached name");
        assert_eq!(errno(fs::metadata(&mnt)), EIO, "stat of the root");
    });
    assert!(is_mounted(&v.mnt), "still mounted: the base is not exposed");
    assert!(v.view().failed());
    let mut v = v;
    v.view.take().unwrap().stop();
    assert!(!is_mounted(&v.mnt));
    assert_eq!(fs::read_to_string(v.mnt.join("base.txt")).unwrap(), "BASE", "uncovered again after stop");
}

/// Waits until every thread of process `pid` is stopped (SIGSTOP takes effect asynchronously).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let states: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|t| fs::read_to_string(t.unwrap().path().join("stat")).unwrap())
            .map(|stat| stat.rsplit(") ").next().unwrap_or("").chars().take(1).collect())
            .collect();
        if states.iter().all(|s| s == "T") {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} did not stop: {states:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_request_in_flight_when_the_server_dies_fails_at_once() {
    // The outer view's source is an inner view whose server we stop: a lookup through the outer
    // view then sits inside the outer server, which is killed while it waits.
    let inner = mount(&["a.txt"], &["**=read"]);
    let outer_mnt = tempfile::tempdir().unwrap();
    let rules = Rules::compile(&[PermissionRule::parse_cli("**=read").unwrap()]).unwrap();
    let outer =
        ViewMount::start(Path::new(env!("CARGO_BIN_EXE_corral-fs")), &inner.mnt, outer_mnt.path(), &rules).unwrap();
    // Only looked at, not opened: closing a file of the inner view would also wait on its server.
    assert!(fs::metadata(outer_mnt.path().join("a.txt")).unwrap().is_file());
    signal(inner.view(), libc::SIGSTOP);
    wait_stopped(inner.view().server_pid());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = outer_mnt.path().join("new-name");
    std::thread::spawn(move || tx.send(fs::metadata(path).map(drop)));
    let early = rx.recv_timeout(Duration::from_millis(300));
    assert!(early.is_err(), "the lookup is held up: {early:?}");
    signal(&outer, libc::SIGKILL);
    let answer = rx.recv_timeout(LIMIT).expect("the held request ends when its server dies");
    assert_eq!(errno(answer), libc::ECONNABORTED);
    signal(inner.view(), libc::SIGCONT);
    within(LIMIT, move || outer.stop());
}

#[test]
fn stop_unmounts_and_returns_promptly() {
    let v = mount(&["a.txt"], &["**=read"]);
    assert!(is_mounted(&v.mnt));
    // An open file inside does not keep stop() waiting (the unmount is lazy).
    let open = fs::File::open(v.at("a.txt")).unwrap();
    let mut v = v;
    let view = v.view.take().unwrap();
    within(LIMIT, move || view.stop());
    assert!(!is_mounted(&v.mnt));
    drop(open);
    assert!(fs::read_dir(&v.mnt).unwrap().next().is_none(), "the empty mountpoint again");
}

#[test]
fn a_server_that_cannot_start_leaves_no_mount() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Rules::compile(&[]).unwrap();
    let err = ViewMount::start(Path::new("/bin/false"), dir.path(), dir.path(), &rules);
    assert!(err.is_err());
    assert!(!is_mounted(dir.path()));
    let missing = ViewMount::start(Path::new("/nonexistent/corral-fs"), dir.path(), dir.path(), &rules);
    assert!(missing.is_err());
    assert!(!is_mounted(dir.path()));
}
