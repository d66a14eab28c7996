//! Per-sandbox disk quotas, enforced by the kernel, the same way for both runtimes.
//!
//! A sandbox's directory `{dir}` holds:
//! - `disk.img`: a sparse ext4 image of the sandbox's `disk_mb` with its inode quota, copied from
//!   a template ([`image`]), attached to a loop device (autoclear) and mounted at `{dir}/disk`;
//!   `/workspace` and `/tmp` are its `workspace` and `tmp` directories, so they share the quota.
//!   A write past it fails with ENOSPC (bytes or inodes) in that sandbox only.
//! - `shm`: a tmpfs for `/dev/shm` with `size` = half the sandbox's memory limit (it is memory:
//!   its pages are charged to the sandbox's memory cgroup) and `nr_inodes` = the inode quota.
//!
//! Both stay on the host, so the files API (bubblewrap) and `statfs` (disk use in sandbox info)
//! reach them, and Docker bind-mounts the same directories. When quotas are off, `{dir}/disk`
//! is a plain directory and `/dev/shm` is the runtime's own.
//!
//! Leftovers of a crashed agent (mounts, loop devices) are found by path: [`reap`] unmounts
//! everything under a directory and detaches loop devices whose backing file lies there.

mod image;
mod loopdev;
pub mod mounts;

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::model::DiskUsage;

pub use loopdev::backed_under as loop_devices_under;
pub use mounts::{is_mount_point, under as mounts_under};

/// `/dev/shm`'s size when the sandbox has no memory limit.
const SHM_DEFAULT_BYTES: u64 = 256 << 20;
/// Fewest inodes a disk gets, whatever its size.
const MIN_INODES: u64 = 1024;
/// Smallest disk (MiB): ext4 needs room for its own metadata.
pub const MIN_DISK_MB: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk quotas need loop devices and mkfs.ext4: {0}")]
    Unavailable(String),
    #[error("disk_mb {asked} exceeds this node's largest sandbox disk, agent.max_sandbox_disk_mb = {max}")]
    TooLarge { asked: u64, max: u64 },
    #[error("disk_mb {asked} is below the smallest sandbox disk, {MIN_DISK_MB} MiB")]
    TooSmall { asked: u64 },
    #[error("formatting a {bytes}-byte ext4 template with {inodes} inodes failed: {why}")]
    Format { bytes: u64, inodes: u64, why: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> DiskError {
    let context = context.into();
    move |source| DiskError::Io { context, source }
}

/// What a node's sandboxes get (the `agent.sandbox_disk_mb`, `agent.sandbox_inodes` and
/// `agent.max_sandbox_disk_mb` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSettings {
    /// Disk of a sandbox whose spec asks for none (and of warm-pool sandboxes).
    pub default_mb: u64,
    /// Inodes of a disk of `default_mb`; other sizes get the same ratio.
    pub default_inodes: u64,
    pub max_mb: u64,
}

impl Default for DiskSettings {
    fn default() -> Self {
        Self { default_mb: 1024, default_inodes: 100_000, max_mb: 16 * 1024 }
    }
}

/// The limits of one sandbox's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    pub inodes: u64,
    pub shm_bytes: u64,
}

/// Prepares sandboxes' storage; cheap to clone.
#[derive(Debug, Clone)]
pub struct Disks {
    settings: DiskSettings,
    /// `None` when quotas are off.
    templates: Option<Arc<image::Templates>>,
}

impl Disks {
    /// Quotas off: plain directories.
    pub fn off(settings: DiskSettings) -> Self {
        Self { settings, templates: None }
    }

    /// Quotas on: checks loop devices and `mkfs.ext4`; templates go to `{state_dir}/disk-templates`.
    pub fn on(settings: DiskSettings, state_dir: &Path) -> Result<Self, DiskError> {
        loopdev::available().map_err(|e| DiskError::Unavailable(format!("/dev/loop-control: {e}")))?;
        let mkfs = image::find_mkfs().ok_or_else(|| DiskError::Unavailable("mkfs.ext4 not found".into()))?;
        let dir = state_dir.join("disk-templates");
        let templates =
            image::Templates::new(dir.clone(), mkfs).map_err(io_err(format!("preparing {}", dir.display())))?;
        Ok(Self { settings, templates: Some(Arc::new(templates)) })
    }

    /// Whether quotas are enforced.
    pub fn enforced(&self) -> bool {
        self.templates.is_some()
    }

    pub fn settings(&self) -> DiskSettings {
        self.settings
    }

    /// The quota of a sandbox asking for `disk_mb` (0 = the default) with `memory_mb` memory.
    pub fn quota(&self, disk_mb: u64, memory_mb: u64) -> Result<Quota, DiskError> {
        let s = self.settings;
        let mb = if disk_mb == 0 { s.default_mb } else { disk_mb };
        if mb > s.max_mb {
            return Err(DiskError::TooLarge { asked: mb, max: s.max_mb });
        }
        if mb < MIN_DISK_MB {
            return Err(DiskError::TooSmall { asked: mb });
        }
        let inodes = (u128::from(s.default_inodes) * u128::from(mb) / u128::from(s.default_mb.max(1))) as u64;
        let shm_bytes = if memory_mb == 0 { SHM_DEFAULT_BYTES } else { memory_mb * (1 << 20) / 2 };
        Ok(Quota { bytes: mb << 20, inodes: inodes.max(MIN_INODES), shm_bytes })
    }

    /// Creates `{dir}/disk/{workspace,tmp}` owned by `owner` (and, with quotas, the image, its
    /// mount and the `/dev/shm` tmpfs). On failure the caller removes `dir` with [`release`].
    pub fn prepare(&self, dir: &Path, quota: &Quota, owner: Option<(u32, u32)>) -> Result<(), DiskError> {
        let disk = dir.join("disk");
        std::fs::create_dir_all(&disk).map_err(io_err(format!("creating {}", disk.display())))?;
        if let Some(templates) = &self.templates {
            let image = dir.join("disk.img");
            templates.create(&image, quota.bytes, quota.inodes)?;
            let device =
                loopdev::attach(&image).map_err(io_err(format!("attaching {} to a loop device", image.display())))?;
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
            mounts::mount(&device.path, &disk, "ext4", flags, "noinit_itable").map_err(io_err(format!(
                "mounting {} at {}",
                device.path.display(),
                disk.display()
            )))?;
            drop(device);
            let shm = dir.join("shm");
            std::fs::create_dir_all(&shm).map_err(io_err(format!("creating {}", shm.display())))?;
            let (uid, gid) = owner.unwrap_or((0, 0));
            let opts = format!("size={},nr_inodes={},mode=1777,uid={uid},gid={gid}", quota.shm_bytes, quota.inodes);
            mounts::mount(Path::new("tmpfs"), &shm, "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, &opts)
                .map_err(io_err(format!("mounting the /dev/shm tmpfs at {}", shm.display())))?;
        }
        for (area, mode) in [("workspace", 0o755), ("tmp", 0o1777)] {
            let path = disk.join(area);
            let made = std::fs::create_dir_all(&path)
                .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)))
                .and_then(|()| owner.map_or(Ok(()), |(u, g)| std::os::unix::fs::chown(&path, Some(u), Some(g))));
            made.map_err(io_err(format!("preparing {}", path.display())))?;
        }
        Ok(())
    }

    /// Gives a prepared sandbox's `/dev/shm` the size of `quota` (a warm-pool sandbox bound to a
    /// spec with another memory limit). The disk itself cannot change size.
    pub fn resize_shm(&self, dir: &Path, quota: &Quota) -> Result<(), DiskError> {
        if !self.enforced() {
            return Ok(());
        }
        let shm = dir.join("shm");
        let flags = libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
        let opts = format!("size={},nr_inodes={}", quota.shm_bytes, quota.inodes);
        mounts::mount(Path::new("tmpfs"), &shm, "tmpfs", flags, &opts)
            .map_err(io_err(format!("resizing the /dev/shm tmpfs at {}", shm.display())))
    }
}

/// The host directory of a sandbox's `/workspace`.
pub fn workspace(dir: &Path) -> PathBuf {
    dir.join("disk").join("workspace")
}

/// The host directory of a sandbox's `/tmp`.
pub fn tmp(dir: &Path) -> PathBuf {
    dir.join("disk").join("tmp")
}

/// The host directory of a sandbox's `/dev/shm` (a tmpfs mount when quotas are on).
pub fn shm(dir: &Path) -> PathBuf {
    dir.join("shm")
}

/// How long [`release`] waits for a busy loop device to let go.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Unmounts a sandbox's `/dev/shm` and disk and detaches its loop device; the image goes with
/// the directory. Safe on a directory never prepared, or half prepared. Blocking.
///
/// The unmount is lazy: whatever still uses the file system (a mount namespace copied from the
/// host's at that moment, a sandbox process not yet fully gone) keeps it, and so the device,
/// busy a little longer. The detach marks the device to go with its last user; this waits
/// (bounded) until it has gone, so a destroyed sandbox leaves nothing behind.
pub fn release(dir: &Path) -> Result<(), DiskError> {
    for target in [dir.join("shm"), dir.join("disk")] {
        mounts::unmount(&target).map_err(io_err(format!("unmounting {}", target.display())))?;
    }
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        let devices = loopdev::backed_under(dir);
        let Some(device) = devices.first() else { return Ok(()) };
        loopdev::detach(device).map_err(io_err(format!("detaching {}", device.display())))?;
        if Instant::now() >= deadline {
            return Err(DiskError::Io {
                context: format!("{} still busy {} s after its unmount", device.display(), RELEASE_WAIT.as_secs()),
                source: io::Error::from(io::ErrorKind::ResourceBusy),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Unmounts everything under `root` and detaches loop devices backed by files there (what a
/// crashed agent left). Returns how many mounts and devices it found.
pub fn reap(root: &Path) -> usize {
    let found = mounts::under(root);
    for target in &found {
        if let Err(e) = mounts::unmount(target) {
            tracing::warn!(path = %target.display(), error = %e, "leftover mount not unmounted");
        }
    }
    let devices = loopdev::backed_under(root);
    for device in &devices {
        if let Err(e) = loopdev::detach(device) {
            tracing::warn!(device = %device.display(), error = %e, "leftover loop device not detached");
        }
    }
    found.len() + devices.len()
}

/// Space and inodes used on a sandbox's disk, when it has its own file system (quotas on).
#[allow(unsafe_code)] // statvfs(2)
pub fn usage(dir: &Path) -> Option<DiskUsage> {
    let disk = dir.join("disk");
    let (outer, inner) = (std::fs::metadata(dir).ok()?, std::fs::metadata(&disk).ok()?);
    if outer.dev() == inner.dev() {
        return None;
    }
    let path = std::ffi::CString::new(disk.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize;
    Some(DiskUsage {
        used_bytes: (st.f_blocks - st.f_bfree) * block,
        total_bytes: st.f_blocks * block,
        used_inodes: st.f_files - st.f_ffree,
        total_inodes: st.f_files,
    })
}
