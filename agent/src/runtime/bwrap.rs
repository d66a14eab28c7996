//! The bubblewrap runtime: one long-lived `bwrap` per sandbox running `corral-init` as pid 1, which
//! starts every exec of that sandbox in its shared namespaces (so a server started by one exec is
//! reachable from the next).
//!
//! - [`args`]: the bwrap command line (namespaces, read-only system dirs, private `/workspace`
//!   and `/tmp`, no inherited environment).
//! - [`conn`](crate::runtime::conn): the framed control pipe to the init (shared with Docker).
//! - [`sandbox`]: start (cgroups joined before bwrap runs), exec, kill, and teardown of one sandbox.
//! - [`spawn`]: the fork-to-exec hook: join cgroups, drop inherited descriptors, become the
//!   unprivileged host user that sandboxes run as.
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
mod oneshot;
mod sandbox;
mod spawn;
mod sweep;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use corral_core::ids::{ExecId, SandboxId};
use corral_core::model::{DiskUsage, ExecSpec, FileEntry, RuntimeKind, SandboxSpec};
use std::time::Duration;

use corral_core::task::OwnedTask;
use tokio::sync::{Notify, OnceCell};

use self::sandbox::{Sandbox, Warm};
use super::cgroup::{CgroupMode, Cgroups};
pub use super::client::DEFAULT_MAX_OUTPUT;
use super::disk::{DiskSettings, Disks};
use super::{ExecHandle, FileChunk, Runtime, RuntimeError, RuntimeResult};

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
    const NAME: &str = "corral-init";
    let exe = std::env::current_exe().map_err(|e| RuntimeError::io("locating the current executable", e))?;
    let near: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|d| d.join(NAME)).collect();
    if let Some(found) = near.iter().find(|p| p.is_file()).cloned().or_else(|| find_on_path(NAME)) {
        return Ok(found);
    }
    let searched: Vec<String> = near.iter().map(|p| p.display().to_string()).collect();
    let context = format!(
        "corral-init not found at {} or on PATH; build it with `cargo build -p corral-init`",
        searched.join(", ")
    );
    Err(RuntimeError::io(context, io::ErrorKind::NotFound.into()))
}

/// Sandboxes by id; a cell is filled once its sandbox started, so concurrent creates of one id
/// start it once.
type SandboxMap = HashMap<SandboxId, Arc<OnceCell<Arc<Sandbox>>>>;

/// Started sandboxes waiting to be bound to a spec, shared with the refill task.
struct Pool {
    size: usize,
    config: BwrapConfig,
    owner: Option<(u32, u32)>,
    cgroups: Cgroups,
    state: Mutex<PoolState>,
    /// Wakes the refill task after a take.
    wake: Notify,
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<Warm>,
    /// Set at shutdown/drop: nothing is added any more.
    closed: bool,
    next_slot: u64,
}

impl Pool {
    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a live pooled sandbox, if any, and wakes the refill.
    fn take(&self) -> Option<Warm> {
        let mut st = self.state();
        let mut taken = None;
        while let Some(mut w) = st.ready.pop_front() {
            if w.is_alive() {
                taken = Some(w);
                break;
            }
            tracing::warn!("a pooled sandbox died while waiting; discarding it");
            // Dropping tears it down; it is dead already, so this is quick.
            drop(w);
        }
        drop(st);
        self.wake.notify_one();
        taken
    }

    /// Stops adding sandboxes and hands back those waiting (to be torn down by the caller).
    fn close(&self) -> Vec<Warm> {
        let mut st = self.state();
        st.closed = true;
        st.ready.drain(..).collect()
    }

    /// Keeps `size` sandboxes ready, starting one at a time; backs off after failures.
    async fn refill(self: Arc<Self>) -> Result<(), std::convert::Infallible> {
        let mut failures = 0u32;
        loop {
            let name = {
                let mut st = self.state();
                if st.closed {
                    return Ok(());
                }
                (st.ready.len() < self.size).then(|| {
                    st.next_slot += 1;
                    format!("{POOL_PREFIX}{}", st.next_slot)
                })
            };
            let Some(name) = name else {
                self.wake.notified().await;
                continue;
            };
            let limits = super::cgroup::Limits::default();
            let quota = match self.config.disk.quota(0, 0) {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(error = %e, "warm pool: the default disk is refused; no pool");
                    return Ok(());
                }
            };
            match Warm::start(&self.config, self.owner, &self.cgroups, &name, &limits, &quota, false).await {
                Ok(warm) => {
                    failures = 0;
                    let mut st = self.state();
                    if st.closed {
                        drop(st);
                        drop(warm);
                        return Ok(());
                    }
                    st.ready.push_back(warm);
                }
                Err(why) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(slot = %name, %why, "warm pool: a sandbox failed to start");
                    let backoff = Duration::from_millis(100u64 << failures.min(8));
                    tokio::time::sleep(backoff.min(Duration::from_secs(30))).await;
                }
            }
        }
    }
}

/// Directory and cgroup names of pool slots (sandbox ids start with `sb-`, so never collide).
const POOL_PREFIX: &str = "pool-";

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
                let pool = Arc::new(Pool {
                    size,
                    config: config.clone(),
                    owner,
                    cgroups: cgroups.clone(),
                    state: Mutex::new(PoolState::default()),
                    wake: Notify::new(),
                });
                let task = OwnedTask::spawn("bwrap.warm_pool", pool.clone().refill());
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
    /// normal path (internet access, a disk of another size), the pool is empty, or the limits
    /// could not be applied.
    async fn take_pooled(&self, spec: &SandboxSpec) -> Option<Sandbox> {
        let default_mb = self.config.disk.settings().default_mb;
        if spec.internet_access || (spec.disk_mb != 0 && spec.disk_mb != default_mb) {
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

/// Lets bwrap, running as the unprivileged sandbox owner, reach the state directory: it and
/// `sandboxes/` become traversable (not listable) by others; every ancestor must already be.
fn open_to_sandbox_owner(state_dir: &Path) -> io::Result<()> {
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
fn install_init(config: &BwrapConfig) -> io::Result<PathBuf> {
    let bin = config.state_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let (tmp, dest) = (bin.join(".corral-init.tmp"), bin.join("corral-init"));
    std::fs::copy(&config.init_path, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// A stable name for this agent's cgroup subtree, derived from its state directory (FNV-1a).
fn instance_name(state_dir: &Path) -> String {
    let hash = state_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
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
