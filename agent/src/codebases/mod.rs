//! Codebases on a node: the shared read-only copy of each codebase ([`cache`]) and each
//! sandbox's view of it ([`Layers::mount`]):
//!
//! ```text
//! {cache}/trees/{digest}            lower: the codebase, shared by every sandbox on it
//! {sandbox}/disk/layer/{upper,work} the sandbox's own writes, on its quota disk
//! {sandbox}/merged                  overlayfs of the two (host side only)
//! {sandbox}/view                    FUSE (corral-fs): `merged` through the sandbox's path rules
//! ```
//!
//! The runtime bind-mounts `view` at the codebase's path inside the sandbox, so every file
//! operation from inside — libc or raw syscalls, bubblewrap or Docker — meets the same rules in
//! the kernel's FUSE layer, and writes land in the sandbox's layer, never in the shared tree.
//! [`diff`] reads the layer back as the sandbox's changes.

pub mod cache;
pub mod diff;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_core::codebase::{Change, CodebaseMount};
use corral_core::permissions::Rules;
use corral_fs::ViewMount;

use crate::runtime::disk::mounts;

pub use cache::Cache;

/// The node's codebase support: its cache and the FUSE server binary.
pub struct Layers {
    cache: Arc<Cache>,
    fs_exe: PathBuf,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers").field("fs_exe", &self.fs_exe).finish_non_exhaustive()
    }
}

impl Layers {
    pub fn new(cache: Arc<Cache>, fs_exe: PathBuf) -> Self {
        Self { cache, fs_exe }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Prepares `codebase` for the sandbox in `sandbox_dir`, whose writes go under `layer_dir`
    /// (on its quota disk). Returns the view to bind at `codebase.path`.
    pub async fn mount(
        &self,
        codebase: &CodebaseMount,
        sandbox_dir: &Path,
        layer_dir: &Path,
    ) -> io::Result<LayerMount> {
        let rules =
            Rules::compile(&codebase.rules).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let lease = self.cache.acquire(&codebase.manifest).await?;
        let (sandbox_dir, layer_dir, exe) = (sandbox_dir.to_path_buf(), layer_dir.to_path_buf(), self.fs_exe.clone());
        tokio::task::spawn_blocking(move || LayerMount::start(lease, &sandbox_dir, &layer_dir, &exe, &rules))
            .await
            .map_err(io::Error::other)?
    }
}

/// One sandbox's layered, rule-checked view of its codebase. Dropping it stops the FUSE server
/// and unmounts both mounts (lazily: a sandbox still holding files open lets go later).
pub struct LayerMount {
    pub view: PathBuf,
    merged: PathBuf,
    upper: PathBuf,
    fuse: Option<ViewMount>,
    lease: cache::Lease,
}

impl LayerMount {
    fn start(lease: cache::Lease, sandbox_dir: &Path, layer_dir: &Path, exe: &Path, rules: &Rules) -> io::Result<Self> {
        let (upper, work) = (layer_dir.join("upper"), layer_dir.join("work"));
        let (merged, view) = (sandbox_dir.join("merged"), sandbox_dir.join("view"));
        for d in [&upper, &work, &merged, &view] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::set_permissions(&view, std::fs::Permissions::from_mode(0o755))?;
        for p in [&lease.path, &upper, &work] {
            let s = p.to_string_lossy();
            if s.contains([',', ':', '\\']) {
                return Err(io::Error::other(format!("{s}: overlay paths may not contain ',', ':' or '\\'")));
            }
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=on",
            lease.path.display(),
            upper.display(),
            work.display()
        );
        mounts::mount(Path::new("overlay"), &merged, "overlay", 0, &options)
            .map_err(|e| io::Error::new(e.kind(), format!("mounting the sandbox's overlay: {e}")))?;
        let mut this = Self { view: view.clone(), merged: merged.clone(), upper, fuse: None, lease };
        this.fuse =
            Some(ViewMount::start(exe, &merged, &view, rules).map_err(|e| {
                io::Error::new(e.kind(), format!("starting the permission file system (corral-fs): {e}"))
            })?);
        Ok(this)
    }

    /// Whether the FUSE server died (the view then fails every operation with EIO).
    pub fn failed(&self) -> bool {
        self.fuse.as_ref().is_some_and(ViewMount::failed)
    }

    /// What the sandbox changed: added, modified and deleted paths.
    pub fn diff(&self) -> io::Result<(Vec<Change>, bool)> {
        diff::diff(&diff::Trees { upper: &self.upper, lower: &self.lease.path, merged: &self.merged })
    }
}

impl Drop for LayerMount {
    fn drop(&mut self) {
        if let Some(fuse) = self.fuse.take() {
            fuse.stop();
        }
        if let Err(e) = mounts::unmount(&self.merged) {
            tracing::warn!(path = %self.merged.display(), error = %e, "could not unmount a sandbox overlay");
        }
    }
}
