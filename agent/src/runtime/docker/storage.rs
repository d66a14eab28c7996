//! Sandboxes' storage with disk quotas: each container's `/workspace`, `/tmp` and `/dev/shm`
//! live in `{state_dir}/docker/{id}`, prepared before the container starts and released after
//! it is removed; storage no container owns is swept.

use std::io;
use std::path::PathBuf;

use corral_core::ids::SandboxId;
use corral_core::model::SandboxSpec;

use super::{DockerRuntime, is_not_found};
use crate::runtime::disk;
use crate::runtime::{RuntimeError, RuntimeResult};

impl DockerRuntime {
    /// The host directory of a sandbox's storage (with quotas).
    pub fn storage_dir(&self, id: &SandboxId) -> PathBuf {
        self.config.state_dir.join("docker").join(id.as_str())
    }

    /// Prepares the sandbox's disk when quotas are on; `None` when they are off.
    pub(super) async fn prepare_storage(&self, spec: &SandboxSpec) -> RuntimeResult<Option<PathBuf>> {
        if !self.config.disk.enforced() {
            return Ok(None);
        }
        let quota = self.config.disk.quota(spec.disk_mb, spec.memory_mb).map_err(|e| match e {
            disk::DiskError::TooLarge { .. } | disk::DiskError::TooSmall { .. } => {
                RuntimeError::Invalid { what: "disk_mb", why: e.to_string() }
            }
            other => RuntimeError::StartFailed { sandbox: spec.id.clone(), why: other.to_string() },
        })?;
        let (disks, dir) = (self.config.disk.clone(), self.storage_dir(&spec.id));
        let owner = (self.config.sandbox_uid, self.config.sandbox_gid);
        let task_dir = dir.clone();
        let prepared = tokio::task::spawn_blocking(move || disks.prepare(&task_dir, &quota, Some(owner)))
            .await
            .map_err(|e| RuntimeError::io("preparing the sandbox's disk", io::Error::other(e)))?;
        match prepared {
            Ok(()) => Ok(Some(dir)),
            Err(e) => {
                self.release_storage(&spec.id).await;
                Err(RuntimeError::StartFailed { sandbox: spec.id.clone(), why: e.to_string() })
            }
        }
    }

    /// Mounts the codebase view of a sandbox created on one, in its storage directory (its
    /// writes on its quota disk when quotas are on); returns the binds for its container.
    pub(super) async fn mount_layer(&self, spec: &SandboxSpec) -> RuntimeResult<Vec<(PathBuf, String)>> {
        let Some(cb) = &spec.codebase else { return Ok(Vec::new()) };
        let failed = |why: String| RuntimeError::StartFailed { sandbox: spec.id.clone(), why };
        let layers = self.config.layers.as_ref().ok_or_else(|| failed("this node offers no codebases".into()))?;
        let dir = self.storage_dir(&spec.id);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("creating the sandbox's storage", e))?;
        let layer = layers.mount(cb, &dir, &dir.join("disk").join("layer")).await;
        let layer = layer.map_err(|e| failed(format!("codebase {}: {e}", cb.id)))?;
        let binds = vec![(layer.view.clone(), cb.path.clone())];
        self.layer_map().insert(spec.id.clone(), layer);
        Ok(binds)
    }

    /// Whether the sandbox's codebase view failed.
    pub(super) fn layer_failed(&self, id: &SandboxId) -> bool {
        self.layer_map().get(id).is_some_and(|l| l.failed())
    }

    /// What a sandbox changed in its codebase.
    pub(super) async fn layer_diff(&self, id: &SandboxId) -> RuntimeResult<(Vec<corral_core::codebase::Change>, bool)> {
        let result = {
            let layers = self.layer_map();
            let layer =
                layers.get(id).ok_or_else(|| RuntimeError::Conflict(format!("sandbox {id} has no codebase")))?;
            if layer.failed() {
                return Err(RuntimeError::Conflict(format!(
                    "the permission file system of sandbox {id} failed; its codebase answers EIO"
                )));
            }
            layer.diff()
        };
        result.map_err(|e| RuntimeError::io("reading the sandbox's layer", e))
    }

    fn layer_map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<SandboxId, crate::codebases::LayerMount>> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unmounts and removes a sandbox's storage and codebase view (nothing to do without either).
    pub(super) async fn release_storage(&self, id: &SandboxId) {
        let layer = self.layer_map().remove(id);
        if let Some(layer) = layer {
            let _ = tokio::task::spawn_blocking(move || drop(layer)).await;
        }
        let dir = self.storage_dir(id);
        let released = tokio::task::spawn_blocking(move || {
            if !dir.exists() {
                return Ok(());
            }
            disk::release(&dir).map_err(|e| e.to_string())?;
            std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))
        })
        .await;
        match released {
            Ok(Ok(())) => {}
            Ok(Err(why)) => tracing::warn!(sandbox_id = %id, %why, "sandbox storage not released"),
            Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "sandbox storage not released"),
        }
    }

    /// Removes the storage of sandboxes that have no container (left by a crash, or by a container
    /// removed behind the agent's back) and are not being created.
    pub(super) async fn sweep_storage(&self) {
        let Ok(entries) = std::fs::read_dir(self.config.state_dir.join("docker")) else { return };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(|n| SandboxId::parse(n).ok()) else { continue };
            if self.map().contains_key(&id) {
                continue;
            }
            match self.docker.inspect_container(&Self::container_name(&id), None).await {
                Err(e) if is_not_found(&e) => {
                    tracing::info!(sandbox_id = %id, "removing the storage of a sandbox without a container");
                    self.release_storage(&id).await;
                }
                _ => {}
            }
        }
    }
}
