//! The raw baseline: a bare `bwrap` spawn with the same isolation a Corral sandbox gets
//! (`agent/src/runtime/bwrap/args.rs`), without anything of Corral around it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use crate::stats::Samples;

/// The interpreter used inside sandboxes: the real binary, never a pyenv shim on `PATH`.
pub const PYTHON: &str = "/usr/bin/python3";
const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SYSTEM_DIRS: [&str; 6] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];
/// Like `agent/src/runtime/bwrap/args.rs`: small host `/etc` entries copied once into a
/// directory mounted as `/etc`, plus `/etc/alternatives` bound live over it.
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
const ETC_BOUND: &str = "alternatives";
/// The unprivileged host identity an agent running as root starts bwrap with (`BwrapConfig`'s
/// default `host_uid`/`host_gid`).
const HOST_ID: u32 = 1_000_000;

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// `bwrap` on `PATH` or in `/usr/bin`; a clear error when it is missing.
pub fn bwrap_binary() -> anyhow::Result<PathBuf> {
    corral_testkit::find_binary("bwrap", &["/usr/bin"], "install it with `apt-get install bubblewrap`")
}

/// Checks that the real interpreter exists (it is what `/usr` exposes inside a sandbox).
pub fn check_python() -> anyhow::Result<()> {
    let real =
        Path::new(PYTHON).canonicalize().with_context(|| format!("{PYTHON} is missing (apt-get install python3)"))?;
    ensure!(!real.to_string_lossy().contains("shims"), "{PYTHON} resolves to a shim ({})", real.display());
    Ok(())
}

/// A prepared bare-bwrap sandbox root: a workspace, a /tmp and generated passwd/group/hosts.
pub struct RawBwrap {
    bwrap: PathBuf,
    dir: tempfile::TempDir,
}

impl RawBwrap {
    pub fn new() -> anyhow::Result<Self> {
        let bwrap = bwrap_binary()?;
        let dir = tempfile::Builder::new().prefix("corral-bench-raw-").tempdir()?;
        let owner = as_root().then_some(HOST_ID);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        for sub in ["workspace", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
            std::os::unix::fs::chown(dir.path().join(sub), owner, owner)?;
        }
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(etc.join("ssl"))?;
        let generated = [
            ("passwd", "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/workspace:/bin/sh\n"),
            ("group", "root:x:0:\nsandbox:x:1000:\n"),
            ("hosts", "127.0.0.1\tlocalhost corral\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ];
        for (name, contents) in generated {
            std::fs::write(etc.join(name), contents)?;
        }
        for name in ETC_COPIED {
            let src = Path::new("/etc").join(name);
            if std::fs::symlink_metadata(&src).is_ok() {
                copy_tree(&src, &etc.join(name)).with_context(|| format!("copying {}", src.display()))?;
            }
        }
        if Path::new("/etc").join(ETC_BOUND).is_dir() {
            std::fs::create_dir_all(etc.join(ETC_BOUND))?;
        }
        Ok(Self { bwrap, dir })
    }

    /// `bwrap <isolation flags> argv…`, with an empty inherited environment, as the unprivileged
    /// host identity when run as root: what the agent runs, minus the init and the cgroups.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new(&self.bwrap);
        if as_root() {
            c.uid(HOST_ID).gid(HOST_ID);
        }
        c.args(["--unshare-user", "--uid", "1000", "--gid", "1000", "--disable-userns"]);
        c.args(["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--unshare-net"]);
        c.args(["--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "corral"]);
        for dir in SYSTEM_DIRS {
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(dir) {
                        c.arg("--symlink").arg(target).arg(dir);
                    }
                }
                Ok(m) if m.is_dir() => _ = c.args(["--ro-bind", dir, dir]),
                _ => {}
            }
        }
        let root = self.dir.path();
        c.arg("--ro-bind").arg(root.join("etc")).arg("/etc");
        if root.join("etc").join(ETC_BOUND).is_dir() {
            let bound = format!("/etc/{ETC_BOUND}");
            c.args(["--ro-bind", &bound, &bound]);
        }
        c.args(["--proc", "/proc", "--dev", "/dev"]);
        c.arg("--bind").arg(root.join("workspace")).arg("/workspace");
        c.arg("--bind").arg(root.join("tmp")).arg("/tmp");
        c.args(["--remount-ro", "/", "--chdir", "/workspace", "--clearenv"]);
        c.args(["--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", "/workspace", "--setenv", "LANG", "C.UTF-8"]);
        c.args(argv).env_clear().current_dir("/").stdin(Stdio::null());
        c
    }

    /// Spawns `argv` in a fresh sandbox and waits for it; fails unless it exits 0 printing `expect`.
    fn run_once(&self, argv: &[&str], expect: &[u8]) -> anyhow::Result<()> {
        let out = self.command(argv).stdout(Stdio::piped()).stderr(Stdio::piped()).output()?;
        if !out.status.success() || out.stdout != expect {
            bail!(
                "bare bwrap {argv:?} failed ({}): stdout {:?}, stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Latency of `n` sequential spawns (after `warmup` untimed ones).
    pub fn bench(&self, argv: &[&str], expect: &[u8], warmup: usize, n: usize) -> anyhow::Result<Samples> {
        for _ in 0..warmup {
            self.run_once(argv, expect)?;
        }
        let mut samples = Samples::default();
        for _ in 0..n {
            let start = Instant::now();
            self.run_once(argv, expect)?;
            samples.push(start.elapsed());
        }
        Ok(samples)
    }
}

/// Copies files and directories, recreating symlinks as symlinks and skipping special files.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
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
