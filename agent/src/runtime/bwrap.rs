//! The bubblewrap runtime: one long-lived `bwrap` per sandbox running `corral-init` as pid 1, which
//! starts every exec of that sandbox in its shared namespaces (so a server started by one exec is
//! reachable from the next).
//!
//! - [`config`]: [`BwrapConfig`] and the host-side setup (the init installed, the state
//!   directory opened to the sandbox owner).
//! - [`pool`]: the warm pool and its refill task.
//! - [`args`]: the bwrap command line (namespaces, read-only system dirs, private `/workspace`
//!   and `/tmp`, no inherited environment).
//! - [`conn`](crate::runtime::conn): the framed control pipe to the init (shared with Docker).
//! - [`sandbox`]: start (cgroups joined before bwrap runs), exec, kill, and teardown of one sandbox.
//! - [`spawn`]: the fork-to-exec hook: join cgroups, drop inherited descriptors, become the
//!   unprivileged host user that sandboxes run as.
//! - [`oneshot`]: one-shot sandboxes for jobs (no init); [`sweep`]: directories no sandbox owns.
//!
//! Sandboxes live in `{state_dir}/sandboxes/{id}`, their `/workspace` and `/tmp` in its `disk`
//! (with quotas, a loop-mounted ext4 image; see [`super::disk`]); a new runtime removes whatever
//! a previous run left there (mounts, loop devices, directories and cgroups), since the agent
//! re-registers fresh.
//!
//! Warm pool: the runtime keeps `warm_pool` started, never-used sandboxes of the default shape
//! (no network), each in `{state_dir}/sandboxes/pool-{n}` with cgroups named `pool-{n}`. A create
//! without internet access takes one, binds it to the spec's id and writes the spec's limits
//! into its cgroups; a background task (one spawn at a time) refills the pool. Pool slots are
//! invisible to `list` and to the coordinator.

mod args;
mod config;
mod oneshot;
mod pool;
mod sandbox;
mod spawn;
mod sweep;

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use corral_core::ids::{ExecId, SandboxId};
use corral_core::model::{DiskUsage, ExecSpec, FileEntry, RuntimeKind, SandboxSpec};
use corral_core::task::OwnedTask;
use tokio::sync::{Notify, OnceCell};

pub use self::config::{BwrapConfig, corral_fs_path, corral_init_path};
use self::config::{install_init, instance_name, open_to_sandbox_owner};
use self::pool::Pool;
use self::sandbox::{Sandbox, Warm};
use super::cgroup::Cgroups;
pub use super::client::DEFAULT_MAX_OUTPUT;
use super::{ExecHandle, FileChunk, Runtime, RuntimeError, RuntimeResult};

/// Sandboxes by id; a cell is filled once its sandbox started, so concurrent creates of one id
/// start it once.
type SandboxMap = HashMap<SandboxId, Arc<OnceCell<Arc<Sandbox>>>>;

pub struct BwrapRuntime {
    /// With `init_path` pointing at the runtime's own copy of the init.
    config: BwrapConfig,
    /// Host `(uid, gid)` sandboxes run as, when the agent is root.
    owner: Option<(u32, u32)>,
    cgroups: Cgroups,
    sandboxes: Mutex<SandboxMap>,
    pool: Option<Arc<Pool>>,
    /// The pool's refill task (taken at shutdown).
    refill: Mutex<Option<OwnedTask>>,
}

impl BwrapRuntime {
    /// Checks bwrap, the init and the state directory, prepares cgroups, and removes sandboxes a
    /// previous run of the agent left behind.
    pub fn new(mut config: BwrapConfig) -> RuntimeResult<Self> {
        for (what, path) in [("bwrap", &config.bwrap_path), ("corral-init", &config.init_path)] {
            if !path.is_file() {
                let e = io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()));
                return Err(RuntimeError::io(format!("{what} binary"), e));
            }
        }
        let sandboxes_dir = config.state_dir.join("sandboxes");
        let state_err = |e| RuntimeError::io(format!("state directory {}", config.state_dir.display()), e);
        std::fs::create_dir_all(&sandboxes_dir).map_err(state_err)?;
        let canonical = config.state_dir.canonicalize().map_err(state_err)?;
        let as_root = std::fs::metadata("/proc/self").map_err(state_err)?.uid() == 0;
        let owner = as_root.then_some((config.host_uid, config.host_gid));
        if owner.is_some() {
            open_to_sandbox_owner(&canonical).map_err(state_err)?;
        }
        config.init_path = install_init(&config).map_err(|e| RuntimeError::io("installing corral-init", e))?;
        args::prepare_etc(&config).map_err(|e| RuntimeError::io("preparing the sandbox /etc", e))?;
        let cgroups = Cgroups::setup(config.cgroup, &instance_name(&canonical));
        cgroups.reap_leftovers();
        let reaped = super::disk::reap(&sandboxes_dir);
        if reaped > 0 {
            tracing::info!(count = reaped, "unmounted storage (mounts, loop devices) left by a previous run");
        }
        for entry in std::fs::read_dir(&sandboxes_dir).map_err(state_err)?.flatten() {
            tracing::info!(path = %entry.path().display(), "removing a sandbox left by a previous run");
            sandbox::cleanup(&entry.path(), None);
        }
        // The refill task needs a tokio runtime; without one (or with a size of 0) there is no pool.
        let (pool, refill) = match (config.warm_pool, tokio::runtime::Handle::try_current()) {
            (0, _) => (None, None),
            (_, Err(_)) => {
                tracing::warn!("no tokio runtime at start-up: the bubblewrap warm pool is disabled");
                (None, None)
            }
            (size, Ok(_)) => {
                let (pool, task) = Pool::start(size, config.clone(), owner, cgroups.clone());
                (Some(pool), Some(task))
            }
        };
        Ok(Self { config, owner, cgroups, sandboxes: Mutex::new(HashMap::new()), pool, refill: Mutex::new(refill) })
    }

    /// Destroys every sandbox (for a graceful agent stop; dropping the runtime only kills them).
    pub async fn shutdown(&self) {
        let waiting = self.close_pool();
        if !waiting.is_empty() {
            let _ = tokio::task::spawn_blocking(move || drop(waiting)).await;
        }
        for id in self.list().await {
            if let Err(e) = self.destroy(&id).await {
                tracing::warn!(sandbox_id = %id, error = %e, "sandbox not destroyed at shutdown");
            }
        }
    }

    /// Whether memory, cpu and pids limits are enforced.
    pub fn cgroups_enabled(&self) -> bool {
        self.cgroups.enforces_limits()
    }

    /// Memory currently charged to the sandbox's cgroup (processes, page cache, kernel memory).
    pub async fn memory_usage_bytes(&self, id: &SandboxId) -> Option<u64> {
        self.get(id).ok()?.cgroup.as_ref()?.memory_usage_bytes()
    }

    /// Where a sandbox's files live on the host: its own directory while it exists (a pooled
    /// sandbox keeps its slot's), else `{state_dir}/sandboxes/{id}`.
    pub fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        match self.get(id) {
            Ok(s) => s.dir.clone(),
            Err(_) => self.config.state_dir.join("sandboxes").join(id.as_str()),
        }
    }

    /// The cgroup directories a sandbox has while it runs (named by its slot when pooled).
    pub fn cgroup_dirs(&self, id: &SandboxId) -> Vec<PathBuf> {
        match self.get(id) {
            Ok(s) => self.cgroups.paths_for(&s.slot_name()),
            Err(_) => self.cgroups.paths_for(id.as_str()),
        }
    }

    /// How many started sandboxes wait in the warm pool.
    pub fn pooled(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.state().ready.len())
    }

    /// Stops the refill and hands back the waiting pool sandboxes.
    fn close_pool(&self) -> Vec<Warm> {
        drop(self.refill.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.pool.as_ref().map(|p| p.close()).unwrap_or_default()
    }

    /// Binds a pooled sandbox to `spec` and writes its limits; `None` when the spec needs the
    /// normal path (internet access, a disk of another size, a codebase, whose view is mounted
    /// before bwrap starts), the pool is empty, or the limits could not be applied.
    async fn take_pooled(&self, spec: &SandboxSpec) -> Option<Sandbox> {
        let default_mb = self.config.disk.settings().default_mb;
        if spec.internet_access || spec.codebase.is_some() || (spec.disk_mb != 0 && spec.disk_mb != default_mb) {
            return None;
        }
        let quota = self.config.disk.quota(spec.disk_mb, spec.memory_mb).ok()?;
        let warm = self.pool.as_ref()?.take()?;
        let limits = sandbox::limits_of(spec);
        let applied =
            warm.cgroup().map_or(Ok(()), |cg| cg.set_limits(&limits)).map_err(|e| e.to_string()).and_then(|()| {
                match warm.dir() {
                    Some(dir) => self.config.disk.resize_shm(dir, &quota).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            });
        let sandbox = warm.bind(spec, self.owner);
        match applied {
            Ok(()) => Some(sandbox),
            Err(e) => {
                tracing::warn!(sandbox_id = %spec.id, error = %e, "limits not applicable to a pooled sandbox; starting a new one");
                let _ = Arc::new(sandbox).shutdown().await;
                None
            }
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, SandboxMap> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Freezes or thaws every process of the sandbox through its cgroup's freezer.
    async fn freeze(&self, id: &SandboxId, frozen: bool) -> RuntimeResult<()> {
        let sandbox = self.get(id)?;
        let Some(cg) = sandbox.cgroup.as_ref() else {
            let why = "needs cgroups (a freezer), which this node does not offer".to_owned();
            return Err(RuntimeError::Invalid { what: "pause", why });
        };
        // Mark first when pausing, so no new exec races the freeze; unmark once thawed.
        if frozen {
            sandbox.client.set_paused(true);
        }
        let what = if frozen { "freezing the sandbox" } else { "thawing the sandbox" };
        let result = cg.freeze(frozen).await.map_err(|e| RuntimeError::io(what, e));
        sandbox.client.set_paused(if result.is_ok() { frozen } else { !frozen && sandbox.client.is_paused() });
        result
    }

    fn get(&self, id: &SandboxId) -> RuntimeResult<Arc<Sandbox>> {
        let cell = self.map().get(id).cloned();
        cell.and_then(|c| c.get().cloned()).ok_or_else(|| RuntimeError::SandboxNotFound(id.clone()))
    }
}

impl Drop for BwrapRuntime {
    /// Kills and removes sandboxes that were not destroyed (blocking briefly), and this runtime's
    /// cgroup subtree once empty.
    fn drop(&mut self) {
        drop(self.close_pool());
        let cells: Vec<_> = self.map().drain().map(|(_, c)| c).collect();
        for sandbox in cells.iter().filter_map(|c| c.get()) {
            sandbox.teardown_blocking();
        }
        self.cgroups.remove_bases();
    }
}

#[async_trait]
impl Runtime for BwrapRuntime {
    #[tracing::instrument(name = "runtime.pause", skip_all, fields(sandbox_id = %sandbox))]
    async fn pause(&self, sandbox: &SandboxId) -> RuntimeResult<()> {
        self.freeze(sandbox, true).await
    }

    #[tracing::instrument(name = "runtime.resume", skip_all, fields(sandbox_id = %sandbox))]
    async fn resume(&self, sandbox: &SandboxId) -> RuntimeResult<()> {
        self.freeze(sandbox, false).await
    }

    async fn images(&self) -> Vec<String> {
        Vec::new()
    }

    fn process_cgroups(&self) -> Vec<PathBuf> {
        self.cgroups.bases()
    }

    async fn run_once(
        &self,
        spec: &SandboxSpec,
        files: &[(String, Vec<u8>)],
        exec: ExecSpec,
        kill: Arc<Notify>,
    ) -> RuntimeResult<super::OneShot> {
        oneshot::run(&self.config, self.owner, &self.cgroups, spec, files, exec, kill).await
    }

    async fn adopt(&self, spec: &SandboxSpec) -> RuntimeResult<()> {
        // A bubblewrap sandbox dies with its agent (--die-with-parent), so none survive a restart.
        Err(RuntimeError::SandboxNotFound(spec.id.clone()))
    }

    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Bwrap
    }

    fn disk_quotas(&self) -> bool {
        self.config.disk.enforced()
    }

    async fn sweep(&self) {
        for dir in self.stray_dirs() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            tracing::info!(path = %dir.display(), "removing a sandbox directory no sandbox owns");
            let cgroups = self.cgroups.clone();
            let removed = tokio::task::spawn_blocking(move || {
                cgroups.remove_named(&name);
                sandbox::cleanup(&dir, None);
            })
            .await;
            if let Err(e) = removed {
                tracing::warn!(error = %e, "sweeping a sandbox directory failed");
            }
        }
    }

    fn codebase_failed(&self, sandbox: &SandboxId) -> bool {
        let Ok(sb) = self.get(sandbox) else { return false };
        sb.layer.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|l| l.failed())
    }

    async fn diff(&self, sandbox: &SandboxId) -> RuntimeResult<(Vec<corral_core::codebase::Change>, bool)> {
        let sb = self.get(sandbox)?;
        let id = sandbox.clone();
        tokio::task::spawn_blocking(move || {
            let layer = sb.layer.lock().unwrap_or_else(|p| p.into_inner());
            let Some(layer) = layer.as_ref() else {
                return Err(RuntimeError::Conflict(format!("sandbox {id} has no codebase")));
            };
            if layer.failed() {
                return Err(RuntimeError::Conflict(format!(
                    "the permission file system of sandbox {id} failed; its codebase answers EIO"
                )));
            }
            layer.diff().map_err(|e| RuntimeError::io("reading the sandbox's layer", e))
        })
        .await
        .map_err(|e| RuntimeError::io("reading the sandbox's layer", io::Error::other(e)))?
    }

    async fn disk_usage(&self, sandbox: &SandboxId) -> RuntimeResult<Option<DiskUsage>> {
        let dir = self.get(sandbox)?.dir.clone();
        tokio::task::spawn_blocking(move || super::disk::usage(&dir))
            .await
            .map_err(|e| RuntimeError::io("reading disk use", io::Error::other(e)))
    }

    #[tracing::instrument(name = "runtime.create", skip_all, fields(sandbox_id = %spec.id))]
    async fn create(&self, spec: &SandboxSpec) -> RuntimeResult<()> {
        let cell = self.map().entry(spec.id.clone()).or_default().clone();
        let start = || async {
            if let Some(sandbox) = self.take_pooled(spec).await {
                return Ok(Arc::new(sandbox));
            }
            Sandbox::start(&self.config, self.owner, &self.cgroups, spec).await.map(Arc::new)
        };
        let started = cell.get_or_try_init(start);
        match started.await {
            Ok(sandbox) => {
                // Destroyed while starting: tear down what we just started.
                let current = self.map().get(&spec.id).is_some_and(|c| Arc::ptr_eq(c, &cell));
                if !current {
                    sandbox.clone().shutdown().await?;
                    return Err(RuntimeError::SandboxNotFound(spec.id.clone()));
                }
                Ok(())
            }
            Err(e) => {
                let mut map = self.map();
                if map.get(&spec.id).is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized()) {
                    map.remove(&spec.id);
                }
                Err(e)
            }
        }
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
        self.get(sandbox)?.fs.read(path, offset, len).await
    }

    async fn write_file(&self, sandbox: &SandboxId, path: &str, data: &[u8], mode: u32) -> RuntimeResult<u64> {
        self.get(sandbox)?.fs.write(path, data.to_vec(), mode).await
    }

    async fn list_files(&self, sandbox: &SandboxId, path: &str) -> RuntimeResult<Vec<FileEntry>> {
        self.get(sandbox)?.fs.list(path).await
    }

    async fn remove_file(&self, sandbox: &SandboxId, path: &str, recursive: bool) -> RuntimeResult<()> {
        self.get(sandbox)?.fs.remove(path, recursive).await
    }

    #[tracing::instrument(name = "runtime.destroy", skip_all, fields(sandbox_id = %sandbox))]
    async fn destroy(&self, sandbox: &SandboxId) -> RuntimeResult<()> {
        let cell = self.map().remove(sandbox);
        match cell.and_then(|c| c.get().cloned()) {
            Some(s) => s.shutdown().await,
            None => Ok(()),
        }
    }

    async fn list(&self) -> Vec<SandboxId> {
        self.map().iter().filter(|(_, c)| c.initialized()).map(|(id, _)| id.clone()).collect()
    }
}
