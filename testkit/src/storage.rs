//! Sandbox storage a stopped agent left on the host: an agent killed, or stopped while keeping
//! its Docker containers for re-adoption, leaves each sandbox's disk (a loop-mounted image) and
//! `/dev/shm` mounted under its state directory. Harnesses reap them when they stop the agent for
//! good, so test runs leave no mounts or loop devices behind on the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Mount points under `root` (deepest first), from this process's mount table.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(field.replace("\\040", " ")))
        .filter(|p| p.starts_with(root) && p != root)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Loop devices whose backing file lies under `root`.
pub fn loop_devices_under(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            let backing = backing.trim_end().trim_end_matches(" (deleted)");
            !backing.is_empty() && Path::new(backing).starts_with(root)
        })
        .map(|e| PathBuf::from("/dev").join(e.file_name()))
        .collect()
}

/// Unmounts (lazily) everything under `root` and detaches the loop devices backed there.
pub fn reap(root: &Path) {
    for target in mounts_under(root) {
        let _ = Command::new("umount").arg("-l").arg(&target).stderr(Stdio::null()).status();
    }
    for device in loop_devices_under(root) {
        let _ = Command::new("losetup").arg("-d").arg(&device).stderr(Stdio::null()).status();
    }
}
