//! The runtime's configuration and the host-side setup it needs before the first sandbox: the
//! `corral-init` binary found and installed, the state directory opened to the sandbox owner, and
//! a stable name for this agent's cgroup subtree.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::runtime::cgroup::CgroupMode;
use crate::runtime::disk::{DiskSettings, Disks};
use crate::runtime::{RuntimeError, RuntimeResult};

/// How the bubblewrap runtime runs.
#[derive(Debug, Clone)]
pub struct BwrapConfig {
    /// Sandboxes live in `{state_dir}/sandboxes/{id}/{workspace,tmp}`.
    pub state_dir: PathBuf,
    pub bwrap_path: PathBuf,
    /// The `corral-init` binary, mounted read-only at `/.corral/init` in every sandbox.
    pub init_path: PathBuf,
    /// Identity of sandbox processes inside the sandbox (`host_uid`/`host_gid` outside).
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    /// Unprivileged host identity that sandbox processes (and the files they own) have when the
    /// agent runs as root; otherwise they have the agent's own. Never root: a sandbox user that is
    /// the host's root could, for one, write the kernel's sysctls.
    pub host_uid: u32,
    pub host_gid: u32,
    pub cgroup: CgroupMode,
    /// Started, never-used sandboxes (no network) kept ready for creates; 0 disables the pool.
    pub warm_pool: usize,
    /// Sandboxes' storage and its quotas.
    pub disk: Disks,
    /// Codebases (cache and permission views); `None` when this node offers none.
    pub layers: Option<std::sync::Arc<crate::codebases::Layers>>,
}

impl BwrapConfig {
    /// Defaults: `bwrap` from `PATH` (or `/usr/bin/bwrap`), the init from [`corral_init_path`],
    /// uid/gid 1000 inside, 1000000 on the host, cgroup version detected, no warm pool, no disk
    /// quotas.
    pub fn with_state_dir(state_dir: impl Into<PathBuf>) -> RuntimeResult<Self> {
        let bwrap_path = find_on_path("bwrap").unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap"));
        Ok(Self {
            state_dir: state_dir.into(),
            bwrap_path,
            init_path: corral_init_path()?,
            sandbox_uid: 1000,
            sandbox_gid: 1000,
            host_uid: 1_000_000,
            host_gid: 1_000_000,
            cgroup: CgroupMode::Auto,
            warm_pool: 0,
            disk: Disks::off(DiskSettings::default()),
            layers: None,
        })
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Finds the `corral-init` binary: next to the current executable, in its parent directory (test
/// binaries live in `target/debug/deps`, the init in `target/debug`), then on `PATH`.
pub fn corral_init_path() -> RuntimeResult<PathBuf> {
    sibling_binary("corral-init")
}

/// Finds the `corral-fs` binary (the permission file system of codebases) the same way.
pub fn corral_fs_path() -> RuntimeResult<PathBuf> {
    sibling_binary("corral-fs")
}

fn sibling_binary(name: &'static str) -> RuntimeResult<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| RuntimeError::io("locating the current executable", e))?;
    let near: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|d| d.join(name)).collect();
    if let Some(found) = near.iter().find(|p| p.is_file()).cloned().or_else(|| find_on_path(name)) {
        return Ok(found);
    }
    let searched: Vec<String> = near.iter().map(|p| p.display().to_string()).collect();
    let context =
        format!("{name} not found at {} or on PATH; build it with `cargo build -p {name}`", searched.join(", "));
    Err(RuntimeError::io(context, io::ErrorKind::NotFound.into()))
}

/// Lets bwrap, running as the unprivileged sandbox owner, reach the state directory: it and
/// `sandboxes/` become traversable (not listable) by others; every ancestor must already be.
pub(super) fn open_to_sandbox_owner(state_dir: &Path) -> io::Result<()> {
    for dir in [state_dir.to_path_buf(), state_dir.join("sandboxes")] {
        let mode = std::fs::metadata(&dir)?.permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o711))?;
    }
    for ancestor in state_dir.ancestors().skip(1) {
        if std::fs::metadata(ancestor)?.permissions().mode() & 0o001 == 0 {
            let why = format!("{} is not traversable by others; sandboxes run unprivileged", ancestor.display());
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        }
    }
    Ok(())
}

/// Copies the init into `{state_dir}/bin` (readable by the sandbox owner, and immune to the build
/// replacing the original while sandboxes run).
pub(super) fn install_init(config: &BwrapConfig) -> io::Result<PathBuf> {
    let bin = config.state_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let (tmp, dest) = (bin.join(".corral-init.tmp"), bin.join("corral-init"));
    std::fs::copy(&config.init_path, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// A stable name for this agent's cgroup subtree, derived from its state directory (FNV-1a).
pub(super) fn instance_name(state_dir: &Path) -> String {
    let hash = state_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}
