//! The Docker runtime: one container per sandbox, driven through the engine API (bollard). The
//! container's command is `corral-init` (bind-mounted read-only from the host at `/.corral/init`),
//! and the agent talks to it over the container's attached stdin/stdout with the same framed
//! protocol and the same connection code as bubblewrap ([`super::conn`], [`super::client`]), so
//! execs, streaming, timeouts, output caps and background processes behave identically.
//!
//! - [`config`]: [`DockerConfig`], and the init installed for the engine to mount.
//! - [`storage`]: each sandbox's disk when quotas are on (prepare, release, sweep).
//! - [`spec`]: the container's settings (image, limits, security options, mounts, labels).
//! - [`attach`]: starting a container attached, and re-attaching to a running one with a resync.
//! - [`fs`]: the files API, run by the init inside the container (never on the host's overlay).
//!
//! Containers survive an agent restart (the attach connection closing leaves their stdin open):
//! [`Runtime::list`] finds them by the `corral.node_id` label and [`Runtime::adopt`] re-attaches.

mod attach;
mod config;
mod fs;
mod spec;
mod storage;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use corral_core::ids::{ExecId, SandboxId};
use corral_core::model::{DiskUsage, ExecSpec, FileEntry, RuntimeKind, SandboxSpec};
use tokio::sync::OnceCell;

use self::attach::Container;
use self::config::install_init;
pub use self::config::{DEFAULT_SOCKET, DockerConfig};
use super::disk;
use super::{ExecHandle, FileChunk, Runtime, RuntimeError, RuntimeResult};

/// How long a destroy waits for a removal already under way.
const REMOVAL_WAIT: Duration = Duration::from_secs(10);
/// How long connecting to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type ContainerMap = HashMap<SandboxId, Arc<OnceCell<Arc<Container>>>>;

pub struct DockerRuntime {
    docker: Docker,
    /// With `init_path` pointing at the runtime's own copy of the init.
    config: DockerConfig,
    containers: Mutex<ContainerMap>,
    /// The codebase views of sandboxes created on one (bind-mounted into their containers).
    layers: Mutex<HashMap<SandboxId, crate::codebases::LayerMount>>,
}

/// Maps an engine error; `what` says what was being done.
fn engine_error(what: impl Into<String>, e: bollard::errors::Error) -> RuntimeError {
    RuntimeError::io(what, io::Error::other(e))
}

/// Whether an engine error is a 404 (no such container/image).
fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl DockerRuntime {
    /// Connects to the engine (negotiating the API version) and installs the init. Fails with a
    /// message naming the socket when the engine is unreachable.
    pub async fn connect(mut config: DockerConfig) -> RuntimeResult<Self> {
        let socket = config.socket.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let unreachable = |why: String| {
            let context = format!(
                "the Docker engine at {} is unreachable (is it running, and may we use its socket?)",
                socket.display()
            );
            RuntimeError::io(context, io::Error::other(why))
        };
        let connect = async {
            let docker = Docker::connect_with_socket(&socket.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)?;
            let docker = docker.negotiate_version().await?;
            docker.ping().await?;
            Ok::<_, bollard::errors::Error>(docker)
        };
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        if !config.init_path.is_file() {
            let e = io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", config.init_path.display()));
            return Err(RuntimeError::io("corral-init binary", e));
        }
        config.init_path = install_init(&config.state_dir, &config.init_path)
            .map_err(|e| RuntimeError::io("installing corral-init for Docker", e))?;
        match docker.info().await.ok().and_then(|i| i.cgroup_driver) {
            Some(bollard::models::SystemInfoCgroupDriverEnum::CGROUPFS) => {
                config.cgroup_parent = Some(format!("/corral-docker/{}", config.node_id));
            }
            driver => tracing::warn!(
                ?driver,
                "Docker does not use the cgroupfs driver: the node watchdog cannot reach this node's containers"
            ),
        }
        let rt = Self { docker, config, containers: Mutex::new(HashMap::new()), layers: Mutex::default() };
        rt.sweep_storage().await;
        Ok(rt)
    }

    /// Where every container of this node lives in each cgroup hierarchy (for the watchdog).
    fn container_cgroups(&self) -> Vec<PathBuf> {
        let Some(parent) = &self.config.cgroup_parent else { return Vec::new() };
        let rel = parent.trim_start_matches('/');
        let root = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![root.join(rel)];
        if let Ok(entries) = std::fs::read_dir(root) {
            dirs.extend(
                entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path().join(rel)),
            );
        }
        dirs
    }

    /// The engine client (for tests and diagnostics).
    pub fn engine(&self) -> &Docker {
        &self.docker
    }

    /// The name of a sandbox's container.
    pub fn container_name(id: &SandboxId) -> String {
        format!("corral-{id}")
    }

    fn map(&self) -> std::sync::MutexGuard<'_, ContainerMap> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &SandboxId) -> RuntimeResult<Arc<Container>> {
        let cell = self.map().get(id).cloned();
        cell.and_then(|c| c.get().cloned()).ok_or_else(|| RuntimeError::SandboxNotFound(id.clone()))
    }

    /// Runs `start` once per id (concurrent creates/adopts share it); forgets the id on failure.
    async fn register<F, Fut>(&self, id: &SandboxId, start: F) -> RuntimeResult<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = RuntimeResult<Container>>,
    {
        let cell = self.map().entry(id.clone()).or_default().clone();
        match cell.get_or_try_init(|| async { start().await.map(Arc::new) }).await {
            Ok(_) if self.map().get(id).is_some_and(|c| Arc::ptr_eq(c, &cell)) => Ok(()),
            Ok(_) => {
                // Destroyed while starting: remove what we just started.
                self.remove_container(id).await?;
                Err(RuntimeError::SandboxNotFound(id.clone()))
            }
            Err(e) => {
                let mut map = self.map();
                if map.get(id).is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized()) {
                    map.remove(id);
                }
                Err(e)
            }
        }
    }

    /// Force-removes the container and its anonymous volumes, then its storage; a missing
    /// container is fine.
    async fn remove_container(&self, id: &SandboxId) -> RuntimeResult<()> {
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match self.docker.remove_container(&Self::container_name(id), Some(opts)).await {
            // Another removal (a destroy interrupted at shutdown) is under way: wait for it, so
            // the storage is released only once the container no longer uses it.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. })
                if self.container_gone_within(id, REMOVAL_WAIT).await =>
            {
                self.release_storage(id).await;
                Ok(())
            }
            Err(e) if !is_not_found(&e) => Err(engine_error(format!("removing the container of {id}"), e)),
            _ => {
                self.release_storage(id).await;
                Ok(())
            }
        }
    }

    /// Whether the sandbox's container is gone (404) within `wait`.
    async fn container_gone_within(&self, id: &SandboxId, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.docker.inspect_container(&Self::container_name(id), None).await {
                Err(e) if is_not_found(&e) => return true,
                _ if tokio::time::Instant::now() >= deadline => return false,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn set_paused(&self, id: &SandboxId, paused: bool) -> RuntimeResult<()> {
        let c = self.get(id)?;
        let name = Self::container_name(id);
        let state = self.docker.inspect_container(&name, None).await.map_err(|e| engine_error("inspecting", e))?;
        let is_paused = state.state.and_then(|s| s.paused).unwrap_or(false);
        if paused {
            c.client.set_paused(true);
        }
        let result = match (paused, is_paused) {
            (true, false) => self.docker.pause_container(&name).await,
            (false, true) => self.docker.unpause_container(&name).await,
            _ => Ok(()),
        };
        let result = result.map_err(|e| engine_error(if paused { "pausing" } else { "resuming" }, e));
        c.client.set_paused(if result.is_ok() { paused } else { !paused });
        result
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    #[tracing::instrument(name = "runtime.create", skip_all, fields(sandbox_id = %spec.id))]
    async fn create(&self, spec: &SandboxSpec) -> RuntimeResult<()> {
        self.register(&spec.id, || async {
            let storage = self.prepare_storage(spec).await?;
            let binds = match self.mount_layer(spec).await {
                Ok(binds) => binds,
                Err(e) => {
                    self.release_storage(&spec.id).await;
                    return Err(e);
                }
            };
            let created = attach::create(&self.docker, &self.config, spec, storage.as_deref(), &binds).await;
            if created.is_err() {
                self.release_storage(&spec.id).await;
            }
            created
        })
        .await
    }

    fn disk_quotas(&self) -> bool {
        self.config.disk.enforced()
    }

    fn codebase_failed(&self, sandbox: &SandboxId) -> bool {
        self.layer_failed(sandbox)
    }

    async fn diff(&self, sandbox: &SandboxId) -> RuntimeResult<(Vec<corral_core::codebase::Change>, bool)> {
        self.get(sandbox)?;
        self.layer_diff(sandbox).await
    }

    async fn disk_usage(&self, sandbox: &SandboxId) -> RuntimeResult<Option<DiskUsage>> {
        self.get(sandbox)?;
        let dir = self.storage_dir(sandbox);
        tokio::task::spawn_blocking(move || disk::usage(&dir))
            .await
            .map_err(|e| RuntimeError::io("reading disk use", io::Error::other(e)))
    }

    async fn sweep(&self) {
        self.sweep_storage().await;
    }

    #[tracing::instrument(name = "runtime.exec", skip_all, fields(sandbox_id = %sandbox, exec_id = %exec))]
    async fn exec(&self, sandbox: &SandboxId, exec: ExecId, spec: ExecSpec) -> RuntimeResult<ExecHandle> {
        self.get(sandbox)?.client.exec(exec, spec).await
    }

    async fn kill_exec(&self, sandbox: &SandboxId, exec: ExecId) -> RuntimeResult<()> {
        self.get(sandbox)?.client.kill_exec(exec).await
    }

    async fn signal_exec(&self, sandbox: &SandboxId, exec: ExecId, signal: i32) -> RuntimeResult<()> {
        self.get(sandbox)?.client.signal_exec(exec, signal).await
    }

    async fn read_file(&self, sandbox: &SandboxId, path: &str, offset: u64, len: u32) -> RuntimeResult<FileChunk> {
        fs::read(&*self.get(sandbox)?, path, offset, len).await
    }

    async fn write_file(&self, sandbox: &SandboxId, path: &str, data: &[u8], mode: u32) -> RuntimeResult<u64> {
        fs::write(&*self.get(sandbox)?, path, data, mode).await
    }

    async fn list_files(&self, sandbox: &SandboxId, path: &str) -> RuntimeResult<Vec<FileEntry>> {
        fs::list(&*self.get(sandbox)?, path).await
    }

    async fn remove_file(&self, sandbox: &SandboxId, path: &str, recursive: bool) -> RuntimeResult<()> {
        fs::remove(&*self.get(sandbox)?, path, recursive).await
    }

    #[tracing::instrument(name = "runtime.destroy", skip_all, fields(sandbox_id = %sandbox))]
    async fn destroy(&self, sandbox: &SandboxId) -> RuntimeResult<()> {
        let cell = self.map().remove(sandbox);
        if let Some(c) = cell.and_then(|c| c.get().cloned()) {
            c.client.conn.close();
        }
        self.remove_container(sandbox).await
    }

    async fn list(&self) -> Vec<SandboxId> {
        let label = format!("{}={}", spec::LABEL_NODE, self.config.node_id);
        let opts =
            ListContainersOptionsBuilder::new().all(true).filters(&HashMap::from([("label", vec![label])])).build();
        match self.docker.list_containers(Some(opts)).await {
            Ok(found) => found
                .into_iter()
                .filter_map(|c| c.labels?.get(spec::LABEL_SANDBOX).and_then(|id| SandboxId::parse(id).ok()))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing containers failed");
                Vec::new()
            }
        }
    }

    #[tracing::instrument(name = "runtime.pause", skip_all, fields(sandbox_id = %sandbox))]
    async fn pause(&self, sandbox: &SandboxId) -> RuntimeResult<()> {
        self.set_paused(sandbox, true).await
    }

    #[tracing::instrument(name = "runtime.resume", skip_all, fields(sandbox_id = %sandbox))]
    async fn resume(&self, sandbox: &SandboxId) -> RuntimeResult<()> {
        self.set_paused(sandbox, false).await
    }

    fn process_cgroups(&self) -> Vec<PathBuf> {
        self.container_cgroups()
    }

    async fn images(&self) -> Vec<String> {
        match self.docker.list_images(Some(ListImagesOptionsBuilder::new().build())).await {
            Ok(images) => {
                let mut tags: Vec<String> =
                    images.into_iter().flat_map(|i| i.repo_tags).filter(|t| !t.contains("<none>")).collect();
                tags.sort();
                tags
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing images failed");
                Vec::new()
            }
        }
    }

    #[tracing::instrument(name = "runtime.adopt", skip_all, fields(sandbox_id = %spec.id))]
    async fn adopt(&self, spec: &SandboxSpec) -> RuntimeResult<()> {
        self.register(&spec.id, || attach::adopt(&self.docker, &self.config, spec)).await
    }
}
