//! The Docker runtime's configuration, and the init installed where the engine can mount it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_core::ids::NodeId;

use crate::runtime::RuntimeResult;
use crate::runtime::disk::{DiskSettings, Disks};

/// The engine socket used when none is configured.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How the Docker runtime runs.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Containers are labelled with it; `list` returns only this node's.
    pub node_id: NodeId,
    /// The init is copied to `{state_dir}/bin` (the engine bind-mounts it from there).
    pub state_dir: PathBuf,
    /// The `corral-init` binary (the images are Debian bookworm like the host, so it runs there).
    pub init_path: PathBuf,
    /// The engine's unix socket; `None` = [`DEFAULT_SOCKET`].
    pub socket: Option<PathBuf>,
    /// Image used when a spec names none.
    pub default_image: String,
    /// Identity of sandbox processes (the images' `sandbox` user).
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    /// Sandboxes' storage: with quotas, each container's `/workspace`, `/tmp` and `/dev/shm` are
    /// bind mounts of `{state_dir}/docker/{id}` (see [`crate::runtime::disk`]).
    pub disk: Disks,
    /// The cgroup parent of this node's containers (`/corral-docker/{node}`), so the node watchdog
    /// can kill them all; set by [`super::DockerRuntime::connect`] when the engine uses the cgroupfs
    /// driver (with the systemd driver the containers stay where the engine puts them).
    pub cgroup_parent: Option<String>,
    /// Codebases (cache and permission views); `None` when this node offers none.
    pub layers: Option<std::sync::Arc<crate::codebases::Layers>>,
}

impl DockerConfig {
    /// Defaults: the init from [`crate::runtime::bwrap::corral_init_path`], the default socket,
    /// `corral/base:latest`, uid/gid 1000, no disk quotas.
    pub fn new(node_id: NodeId, state_dir: impl Into<PathBuf>) -> RuntimeResult<Self> {
        Ok(Self {
            node_id,
            state_dir: state_dir.into(),
            init_path: crate::runtime::bwrap::corral_init_path()?,
            socket: None,
            default_image: "corral/base:latest".into(),
            sandbox_uid: 1000,
            sandbox_gid: 1000,
            disk: Disks::off(DiskSettings::default()),
            cgroup_parent: None,
            layers: None,
        })
    }
}

/// Copies the init into `{state_dir}/bin` (readable by the engine, immune to rebuilds).
pub(super) fn install_init(state_dir: &Path, init: &Path) -> io::Result<PathBuf> {
    let bin = state_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let (tmp, dest) = (bin.join(format!(".corral-init.docker.{}", std::process::id())), bin.join("corral-init"));
    std::fs::copy(init, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}
