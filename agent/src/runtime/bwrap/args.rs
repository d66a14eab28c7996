//! The bubblewrap command line of a sandbox.

use std::ffi::OsString;
use std::io;
use std::path::Path;

use corral_core::model::SandboxSpec;

use super::BwrapConfig;

/// PATH inside the sandbox (the system one: host-user tool managers such as pyenv are not mounted).
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const SANDBOX_HOME: &str = "/workspace";
pub const SANDBOX_LANG: &str = "C.UTF-8";
/// Where the init binary is mounted inside the sandbox.
pub const INIT_IN_SANDBOX: &str = "/.corral/init";

/// Host directories mounted read-only (or recreated as symlinks where the host has a symlink).
const SYSTEM_DIRS: [&str; 6] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];

/// Host `/etc` entries copied into the sandbox's `/etc` (symlinks stay symlinks; they point into
/// the mounted `/usr`). Never `shadow`, `gshadow`, `sudoers` or `ssl/private`: the sandbox user is
/// the host's root outside, so whatever is mounted is readable. `passwd`, `group` and `hosts` are
/// generated ([`generated_etc`]); `resolv.conf` is bound live only when the network is on.
const ETC_COPIED: [&str; 14] = [
    "nsswitch.conf",
    "host.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "localtime",
    "os-release",
    "mime.types",
    "protocols",
];

/// Generated `/etc` files: `(name, contents)`.
fn generated_etc(uid: u32, gid: u32) -> [(&'static str, String); 4] {
    [
        ("passwd", format!("root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{gid}:sandbox:/workspace:/bin/sh\n")),
        ("group", format!("root:x:0:\nsandbox:x:{gid}:\n")),
        ("hosts", "127.0.0.1\tlocalhost corral\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_owned()),
        // Mount point for the host's resolv.conf when the network is on.
        ("resolv.conf", String::new()),
    ]
}

/// Builds `{state_dir}/etc`, mounted read-only as every sandbox's `/etc` (one mount instead of a
/// dozen: each bind costs bwrap ~0.2 ms). Host changes are picked up when the runtime restarts.
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

/// Arguments for `bwrap` (without the program name) that start the init in a new sandbox.
pub fn bwrap_args(config: &BwrapConfig, spec: &SandboxSpec, sandbox_dir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::with_capacity(96);
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| a.extend(items.iter().map(|i| i.as_ref().to_owned()));
    let (uid, gid) = (config.sandbox_uid.to_string(), config.sandbox_gid.to_string());
    push(&[&"--unshare-user", &"--uid", &uid, &"--gid", &gid, &"--disable-userns"]);
    push(&[&"--unshare-pid", &"--unshare-ipc", &"--unshare-uts", &"--unshare-cgroup-try"]);
    if !spec.internet_access {
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
    if spec.internet_access && Path::new("/etc/resolv.conf").exists() {
        push(&[&"--ro-bind", &"/etc/resolv.conf", &"/etc/resolv.conf"]);
    }
    push(&[&"--proc", &"/proc", &"--dev", &"/dev"]);
    push(&[&"--bind", &sandbox_dir.join("workspace"), &"/workspace"]);
    push(&[&"--bind", &sandbox_dir.join("tmp"), &"/tmp"]);
    push(&[&"--ro-bind", &config.init_path, &INIT_IN_SANDBOX]);
    // The root tmpfs (and so `/etc`) becomes read-only once every mount point exists.
    push(&[&"--remount-ro", &"/", &"--chdir", &"/workspace"]);
    push(&[&"--setenv", &"PATH", &SANDBOX_PATH, &"--setenv", &"HOME", &SANDBOX_HOME]);
    push(&[&"--setenv", &"LANG", &SANDBOX_LANG, &INIT_IN_SANDBOX]);
    a
}
