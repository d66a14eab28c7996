//! The bubblewrap command line of a sandbox.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use super::BwrapConfig;
use crate::runtime::client::{INIT_IN_SANDBOX, SANDBOX_HOME, SANDBOX_LANG, SANDBOX_PATH};
use crate::runtime::disk;
use crate::runtime::seccomp;

/// Host directories mounted read-only (or recreated as symlinks where the host has a symlink).
const SYSTEM_DIRS: [&str; 6] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];

/// Small host `/etc` entries copied into the sandbox's `/etc` (symlinks stay symlinks; they point
/// into the mounted `/usr`). Never `shadow`, `gshadow`, `sudoers` or `ssl/private`: the sandbox
/// user is the host's root outside, so whatever is mounted is readable. `passwd`, `group` and
/// `hosts` are generated ([`generated_etc`]).
const ETC_COPIED: [&str; 10] = [
    "nsswitch.conf",
    "host.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/openssl.cnf",
    "localtime",
    "os-release",
    "mime.types",
    "protocols",
];

/// Host `/etc` directories bound live over empty mount points (hundreds of symlinks: copying them
/// is slow on some filesystems), and those bound only when the network is on.
const ETC_BOUND: [&str; 1] = ["alternatives"];
const ETC_NETWORK: [&str; 2] = ["resolv.conf", "ssl/certs"];

/// Generated `/etc` files: `(name, contents)`.
fn generated_etc(uid: u32, gid: u32) -> [(&'static str, String); 3] {
    [
        ("passwd", format!("root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{gid}:sandbox:/workspace:/bin/sh\n")),
        ("group", format!("root:x:0:\nsandbox:x:{gid}:\n")),
        ("hosts", "127.0.0.1\tlocalhost corral\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_owned()),
    ]
}

/// Builds `{state_dir}/etc`, mounted read-only as every sandbox's `/etc` (a few mounts instead of
/// a dozen: each bind costs bwrap ~0.2 ms). Copied files are refreshed when the runtime restarts.
pub fn prepare_etc(config: &BwrapConfig) -> io::Result<()> {
    let etc = config.state_dir.join("etc");
    if etc.exists() {
        std::fs::remove_dir_all(&etc)?;
    }
    std::fs::create_dir_all(etc.join("ssl"))?;
    for (name, contents) in generated_etc(config.sandbox_uid, config.sandbox_gid) {
        std::fs::write(etc.join(name), contents)?;
    }
    for name in ETC_COPIED {
        let src = Path::new("/etc").join(name);
        if std::fs::symlink_metadata(&src).is_ok() {
            copy_tree(&src, &etc.join(name))?;
        }
    }
    for name in ETC_BOUND.iter().chain(&ETC_NETWORK) {
        match std::fs::metadata(Path::new("/etc").join(name)) {
            Ok(m) if m.is_dir() => std::fs::create_dir_all(etc.join(name))?,
            Ok(_) => std::fs::write(etc.join(name), "")?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// Copies files and directories, recreating symlinks as symlinks and skipping special files.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)
    } else if meta.is_dir() {
        std::fs::create_dir(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        Ok(())
    } else if meta.is_file() {
        std::fs::copy(src, dst).map(|_| ())
    } else {
        Ok(())
    }
}

/// Arguments for `bwrap` (without the program name) that start the init in a new sandbox. Only
/// `internet_access` comes from the spec: every other sandbox setting is applied after the spawn
/// (limits through cgroups, env and workdir per exec), which lets the warm pool start sandboxes
/// before their spec is known.
/// `binds` are host directories mounted read-write at sandbox paths over the scratch areas (a
/// codebase's view).
pub fn bwrap_args(
    config: &BwrapConfig,
    internet_access: bool,
    sandbox_dir: &Path,
    binds: &[(PathBuf, String)],
) -> Vec<OsString> {
    let mut a = base_args(config, internet_access, &Scratch::Dir(sandbox_dir), binds, true, "/workspace");
    a.push(INIT_IN_SANDBOX.into());
    a
}

/// Where a sandbox's `/workspace` and `/tmp` live.
pub enum Scratch<'a> {
    /// `/workspace` and `/tmp` on this sandbox directory's disk, and with quotas `/dev/shm` its
    /// tmpfs (long-lived sandboxes: the files API, snapshots and the agent's restarts need them
    /// on the host; see [`crate::runtime::disk`]).
    Dir(&'a Path),
    /// A tmpfs each, of at most `bytes`, made by bwrap inside the sandbox's mount namespace, so
    /// they vanish with it and the host's filesystem is never touched (one-shot jobs). Their
    /// pages are charged to the sandbox's memory cgroup. `files` are copied in by bwrap from the
    /// descriptors it is handed as 3, 4, … in this order: `(absolute path in the sandbox,
    /// parent directories to create first)`; the syscall filters follow them.
    Tmpfs { bytes: u64, files: &'a [(String, Vec<String>)] },
}

/// Arguments for `bwrap` that run one command as the sandbox's only program (one-shot jobs):
/// the same isolation as [`bwrap_args`], without the init, on `scratch`, in `cwd`, with `env`
/// added to PATH/HOME/LANG (and nothing else).
pub fn oneshot_args(
    config: &BwrapConfig,
    internet_access: bool,
    scratch: &Scratch<'_>,
    cwd: &str,
    env: &std::collections::BTreeMap<String, String>,
    argv: &[String],
) -> Vec<OsString> {
    let mut a = base_args(config, internet_access, scratch, &[], false, cwd);
    for (k, v) in env {
        a.extend([OsString::from("--setenv"), k.into(), v.into()]);
    }
    a.push("--".into());
    a.extend(argv.iter().map(OsString::from));
    a
}

/// Everything but the program: namespaces, mounts and the base environment.
fn base_args(
    config: &BwrapConfig,
    internet_access: bool,
    scratch: &Scratch<'_>,
    binds: &[(PathBuf, String)],
    init: bool,
    cwd: &str,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::with_capacity(96);
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| a.extend(items.iter().map(|i| i.as_ref().to_owned()));
    let (uid, gid) = (config.sandbox_uid.to_string(), config.sandbox_gid.to_string());
    push(&[&"--unshare-user", &"--uid", &uid, &"--gid", &gid, &"--disable-userns"]);
    push(&[&"--unshare-pid", &"--unshare-ipc", &"--unshare-uts", &"--unshare-cgroup-try"]);
    if !internet_access {
        push(&[&"--unshare-net"]);
    }
    push(&[&"--die-with-parent", &"--new-session", &"--as-pid-1", &"--hostname", &"corral"]);
    for dir in SYSTEM_DIRS {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(dir) {
                    push(&[&"--symlink", &target, &dir]);
                }
            }
            Ok(m) if m.is_dir() => push(&[&"--ro-bind", &dir, &dir]),
            _ => {}
        }
    }
    push(&[&"--ro-bind", &config.state_dir.join("etc"), &"/etc"]);
    let network: &[&str] = if internet_access { &ETC_NETWORK } else { &[] };
    for name in ETC_BOUND.iter().chain(network) {
        let path = Path::new("/etc").join(name);
        if config.state_dir.join("etc").join(name).exists() {
            push(&[&"--ro-bind", &path, &path]);
        }
    }
    push(&[&"--proc", &"/proc", &"--dev", &"/dev"]);
    match scratch {
        Scratch::Dir(dir) => {
            push(&[&"--bind", &disk::workspace(dir), &"/workspace"]);
            push(&[&"--bind", &disk::tmp(dir), &"/tmp"]);
            if config.disk.enforced() {
                push(&[&"--bind", &disk::shm(dir), &"/dev/shm"]);
            }
        }
        Scratch::Tmpfs { bytes, files } => {
            let size = bytes.to_string();
            push(&[&"--size", &size, &"--perms", &"0755", &"--tmpfs", &"/workspace"]);
            push(&[&"--size", &size, &"--perms", &"1777", &"--tmpfs", &"/tmp"]);
            for (i, (path, parents)) in files.iter().enumerate() {
                for dir in parents {
                    push(&[&"--perms", &"0755", &"--dir", dir]);
                }
                let fd = (3 + i).to_string();
                push(&[&"--perms", &"0644", &"--file", &fd, path]);
            }
        }
    }
    for (host, inside) in binds {
        push(&[&"--bind", host, inside]);
    }
    if init {
        push(&[&"--ro-bind", &config.init_path, &INIT_IN_SANDBOX]);
    }
    // The syscall filters come right after the files among the descriptors bwrap is handed.
    let files = match scratch {
        Scratch::Dir(_) => 0,
        Scratch::Tmpfs { files, .. } => files.len(),
    };
    for k in 0..seccomp::program_count() {
        let fd = (3 + files + k).to_string();
        push(&[&"--add-seccomp-fd", &fd]);
    }
    // The root tmpfs (and so `/etc`) becomes read-only once every mount point exists.
    push(&[&"--remount-ro", &"/", &"--chdir", &cwd]);
    push(&[&"--setenv", &"PATH", &SANDBOX_PATH, &"--setenv", &"HOME", &SANDBOX_HOME]);
    push(&[&"--setenv", &"LANG", &SANDBOX_LANG]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cgroup::CgroupMode;

    fn args(internet_access: bool) -> Vec<String> {
        bwrap_args(&config(), internet_access, Path::new("/state/sandboxes/s"), &[])
            .iter()
            .map(|a| a.to_string_lossy().into())
            .collect()
    }

    fn config() -> BwrapConfig {
        BwrapConfig {
            state_dir: "/state".into(),
            bwrap_path: "/usr/bin/bwrap".into(),
            init_path: "/state/bin/corral-init".into(),
            sandbox_uid: 1000,
            sandbox_gid: 1000,
            host_uid: 1_000_000,
            host_gid: 1_000_000,
            cgroup: CgroupMode::Off,
            warm_pool: 0,
            disk: crate::runtime::disk::Disks::off(Default::default()),
            layers: None,
        }
    }

    #[test]
    fn network_is_unshared_unless_asked() {
        let off = args(false);
        let on = args(true);
        assert!(off.contains(&"--unshare-net".to_owned()) && !on.contains(&"--unshare-net".to_owned()));
        assert!(!off.iter().any(|a| a.contains("shadow")));
        assert_eq!(off.last().map(String::as_str), Some(INIT_IN_SANDBOX));
        let setenv: Vec<&String> = off.windows(2).filter(|w| w[0] == "--setenv").map(|w| &w[1]).collect();
        assert_eq!(setenv, ["PATH", "HOME", "LANG"]);
        let filters: Vec<&String> = off.windows(2).filter(|w| w[0] == "--add-seccomp-fd").map(|w| &w[1]).collect();
        assert_eq!(filters, ["3", "4"], "the syscall filters are the descriptors after the (no) files");
    }

    #[test]
    fn a_codebase_view_is_bound_over_the_workspace() {
        let config = config();
        let view = [(std::path::PathBuf::from("/state/sandboxes/s/view"), "/workspace".to_owned())];
        let a: Vec<String> = bwrap_args(&config, false, Path::new("/state/sandboxes/s"), &view)
            .iter()
            .map(|a| a.to_string_lossy().into())
            .collect();
        let binds: Vec<&[String]> = a.windows(3).filter(|w| w[0] == "--bind" && w[2] == "/workspace").collect();
        assert_eq!(binds.len(), 2, "the disk's workspace, then the view over it");
        assert_eq!(binds[1][1], "/state/sandboxes/s/view");
    }
}
